//! A real Redis (Debian's `redis-server`) of the test's own, on a free
//! loopback port, without persistence (`--save '' --appendonly no`): it
//! can be stopped and started again on the same port (empty), and it is
//! killed when dropped. Its lifetime is bounded (`timeout`) in case the
//! test process dies without dropping it.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{exit_within, poll_until};

/// The longest a test's Redis may run.
const LIFETIME: &str = "600";

/// A running (or stopped) `redis-server`.
pub struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    /// Starts one on a free loopback port; returns once it answers PING.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut redis = Self { child: None, port };
        redis.start_again();
        redis
    }

    /// `redis://127.0.0.1:PORT/0`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again, empty) on its port; returns once it answers PING
    /// (within 10 s).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server already runs");
        let child = Command::new("timeout")
            .args(["--signal=KILL", LIFETIME, "redis-server"])
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run timeout (coreutils)");
        self.child = Some(child);
        let answered = poll_until(Duration::from_secs(10), || self.pings());
        if !answered {
            let exited = self
                .child
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            self.stop();
            panic!(
                "redis-server did not answer on port {} within 10 s (exited: {exited:?}): \
                 these tests need Debian's redis-server package (`apt-get install redis-server`; \
                 `cargo xtask test` installs it)",
                self.port
            );
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // `timeout` passes SIGTERM on to redis-server.
        let pid = i32::try_from(child.id()).expect("a pid");
        // SAFETY: kill(2) with our own child's pid and a signal number has
        // no memory effects.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        if exit_within(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether it answers `PING` with `+PONG`.
    fn pings(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut answer).is_ok()
            && &answer == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    /// Stops it: SIGTERM, which `timeout` passes on (a SIGKILL would
    /// leave redis-server running until its lifetime ends).
    fn drop(&mut self) {
        self.stop();
    }
}
