//! Starting worker processes: the one long-lived thread that forks every
//! worker (a worker's "die with the host" signal is tied to the thread
//! that started it), and the runtime it starts them in.

use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use crate::protocol::{LIBRARY_FD, SOCKET_FD, WORKER_ARG};

/// The runtime in whose context the spawner starts workers: process-wide,
/// as the spawner thread (a worker's child handle is reaped through it).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("connhost-spawner-rt")
            .enable_all()
            .build()
            .expect("connhost: cannot start the worker supervisor runtime")
    })
}

/// An order to start a worker, carried out on the spawner thread.
struct SpawnOrder {
    program: PathBuf,
    socket: OwnedFd,
    library: Arc<std::fs::File>,
    reply: std::sync::mpsc::Sender<std::io::Result<tokio::process::Child>>,
}

/// The one thread that starts workers. It never ends: a worker's
/// `PR_SET_PDEATHSIG` fires when the thread that forked it exits.
fn spawner() -> &'static Mutex<std::sync::mpsc::Sender<SpawnOrder>> {
    static SPAWNER: OnceLock<Mutex<std::sync::mpsc::Sender<SpawnOrder>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (orders, incoming) = std::sync::mpsc::channel::<SpawnOrder>();
        let handle = runtime().handle().clone();
        std::thread::Builder::new()
            .name("connhost-spawner".to_owned())
            .spawn(move || {
                let _entered = handle.enter();
                for order in incoming {
                    let spawned = spawn_now(&order.program, &order.socket, &order.library);
                    let _ = order.reply.send(spawned);
                }
            })
            .expect("connhost: cannot start the worker spawner thread");
        Mutex::new(orders)
    })
}

/// Starts the worker: nothing of the host reaches it but its socket (at
/// [`SOCKET_FD`]), its library (at [`LIBRARY_FD`]), a null standard input
/// and output and a piped standard error. Its environment is empty (its
/// plugin's settings travel over the socket) and every other descriptor
/// is closed, whether or not the host marked it close-on-exec.
fn spawn_now(
    program: &Path,
    socket: &OwnedFd,
    library: &std::fs::File,
) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(program);
    command
        .env_clear()
        .arg(WORKER_ARG)
        .arg(std::process::id().to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let (socket, library) = (socket.as_raw_fd(), library.as_raw_fd());
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close_range)
    // between fork and exec.
    unsafe {
        command.pre_exec(move || place_descriptors(socket, library));
    }
    command.spawn()
}

/// In the forked child: moves `socket` to [`SOCKET_FD`] and `library` to
/// [`LIBRARY_FD`] (open across exec), and closes every descriptor above.
fn place_descriptors(socket: RawFd, library: RawFd) -> std::io::Result<()> {
    let check = |result: libc::c_int| {
        if result < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(result)
        }
    };
    // SAFETY: fcntl, dup2 and close_range on this process's descriptors.
    unsafe {
        // Out of the way of the target numbers first.
        let socket = check(libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, LIBRARY_FD + 1))?;
        let library = check(libc::fcntl(library, libc::F_DUPFD_CLOEXEC, LIBRARY_FD + 1))?;
        check(libc::dup2(socket, SOCKET_FD))?;
        check(libc::dup2(library, LIBRARY_FD))?;
        if libc::syscall(libc::SYS_close_range, LIBRARY_FD + 1, u32::MAX, 0) != 0 {
            // Kernels before 5.9: one by one, up to the limit.
            let most = libc::sysconf(libc::_SC_OPEN_MAX).clamp(0, 1 << 20) as RawFd;
            for fd in LIBRARY_FD + 1..most {
                libc::close(fd);
            }
        }
    }
    Ok(())
}

/// Starts `program` in worker mode with `socket` as its descriptor
/// [`SOCKET_FD`] and `library` as [`LIBRARY_FD`], on the spawner thread.
pub(crate) async fn spawn(
    program: &Path,
    socket: OwnedFd,
    library: Arc<std::fs::File>,
) -> std::io::Result<tokio::process::Child> {
    let (reply, spawned) = std::sync::mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(SpawnOrder {
            program: program.to_owned(),
            socket,
            library,
            reply,
        })
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    tokio::task::spawn_blocking(move || spawned.recv())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| Err(std::io::Error::other("the spawner thread stopped")))
}
