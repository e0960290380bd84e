//! How a worker's death is put in words: the signal by name, the exit
//! code, and what its last standard error lines say.

use std::collections::VecDeque;
use std::os::unix::process::ExitStatusExt as _;
use std::sync::Mutex;

use crate::model::config::WorkerConfig;

/// What Rust's runtime says on standard error before it aborts for a
/// reason worth naming (see [`describe_exit`]).
pub(super) const LAST_WORDS: [&str; 2] = ["memory allocation of", "has overflowed its stack"];

/// Says how a worker ended, in words: the signal by name, the exit code,
/// and what its last standard error lines tell (the memory limit, a stack
/// overflow).
pub(super) fn describe_exit(
    status: std::process::ExitStatus,
    tail: &Mutex<VecDeque<String>>,
    config: &WorkerConfig,
) -> String {
    let tail = tail.lock().unwrap_or_else(|e| e.into_inner());
    let said = |needle: &str| tail.iter().any(|line| line.contains(needle));
    let how = match (status.signal(), status.code()) {
        (Some(signal), _) => format!("was killed by signal {}", signal_name(signal)),
        (None, Some(code)) => format!("exited with code {code}"),
        (None, None) => "ended".to_owned(),
    };
    if said("memory allocation of") {
        let limit = config
            .memory_limit
            .map(|b| format!(" of {} MiB", b >> 20))
            .unwrap_or_default();
        format!("exceeded its memory limit{limit} ({how})")
    } else if said("has overflowed its stack") {
        format!("overflowed its stack ({how})")
    } else if status.signal() == Some(libc::SIGXCPU) {
        format!("exceeded its CPU time limit ({how})")
    } else {
        how
    }
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGSEGV => "SIGSEGV (segmentation fault)",
        libc::SIGABRT => "SIGABRT (abort)",
        libc::SIGKILL => "SIGKILL",
        libc::SIGBUS => "SIGBUS (bus error)",
        libc::SIGILL => "SIGILL (illegal instruction)",
        libc::SIGFPE => "SIGFPE (arithmetic error)",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU (CPU time limit)",
        libc::SIGSYS => "SIGSYS (forbidden system call)",
        libc::SIGPIPE => "SIGPIPE",
        other => return format!("{other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn died(raw: i32, stderr: &[&str]) -> String {
        let tail = Mutex::new(stderr.iter().map(|s| s.to_string()).collect());
        let config = WorkerConfig {
            memory_limit: Some(256 << 20),
            ..WorkerConfig::default()
        };
        describe_exit(std::process::ExitStatus::from_raw(raw), &tail, &config)
    }

    #[test]
    fn a_signal_is_named_and_an_exit_code_given() {
        assert_eq!(
            died(libc::SIGSEGV, &[]),
            "was killed by signal SIGSEGV (segmentation fault)"
        );
        assert_eq!(died(3 << 8, &[]), "exited with code 3");
        assert_eq!(died(0, &[]), "exited with code 0");
    }

    #[test]
    fn the_last_words_on_stderr_say_memory_or_stack() {
        assert_eq!(
            died(
                libc::SIGABRT,
                &["memory allocation of 67108864 bytes failed"]
            ),
            "exceeded its memory limit of 256 MiB (was killed by signal SIGABRT (abort))"
        );
        assert_eq!(
            died(
                libc::SIGABRT,
                &[
                    "",
                    "thread 'x' has overflowed its stack",
                    "fatal runtime error: stack overflow"
                ]
            ),
            "overflowed its stack (was killed by signal SIGABRT (abort))"
        );
        assert_eq!(
            died(libc::SIGXCPU, &[]),
            "exceeded its CPU time limit (was killed by signal SIGXCPU (CPU time limit))"
        );
    }
}
