//! Starting worker processes: the process-wide runtime supervisors run on,
//! and the one long-lived thread that forks every worker (a worker's "die
//! with the host" signal is tied to the thread that started it).

use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::WORKER_ARG;

/// The process-wide runtime supervisors run on.
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("connhost-supervisor")
            .enable_all()
            .build()
            .expect("connhost: cannot start the worker supervisor runtime")
    })
}

/// An order to start a worker, carried out on the spawner thread.
struct SpawnOrder {
    program: PathBuf,
    socket: OwnedFd,
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
                    let _ = order.reply.send(spawn_now(&order.program, &order.socket));
                }
            })
            .expect("connhost: cannot start the worker spawner thread");
        Mutex::new(orders)
    })
}

fn spawn_now(program: &Path, socket: &OwnedFd) -> std::io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::new(program);
    command
        .arg(WORKER_ARG)
        .env(super::child::PARENT_ENV, std::process::id().to_string())
        // Fewer malloc arenas: less address space reserved per thread, so
        // the memory limit measures what the plugin uses.
        .env("MALLOC_ARENA_MAX", "2")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let fd = socket.as_raw_fd();
    let target = super::child::SOCKET_FD;
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and
    // exec.
    unsafe {
        command.pre_exec(move || {
            if fd == target {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, target) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Starts `program` in worker mode with `socket` as its descriptor
/// [`super::child::SOCKET_FD`], on the spawner thread.
pub(crate) async fn spawn(
    program: &Path,
    socket: OwnedFd,
) -> std::io::Result<tokio::process::Child> {
    let (reply, spawned) = std::sync::mpsc::channel();
    spawner()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send(SpawnOrder {
            program: program.to_owned(),
            socket,
            reply,
        })
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    tokio::task::spawn_blocking(move || spawned.recv())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_else(|| Err(std::io::Error::other("the spawner thread stopped")))
}
