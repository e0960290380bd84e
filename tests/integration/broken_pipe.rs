// A reader that goes away (`connhost ... | head -c 100`): every command that writes to stdout stops quietly, with the status it would have had, and never panics.

use std::io::Read as _;
use std::process::{Command, Stdio};

use crate::support::*;

/// The most a pipe holds before a writer waits (Linux's default is 64
/// KiB); an output longer than this cannot be written whole while no one
/// reads.
const PIPE_BUFFER: usize = 64 * 1024;

/// What `command` did when its reader read `first` bytes and went away.
struct Cut {
    /// The bytes read.
    read: Vec<u8>,
    code: Option<i32>,
    stderr: String,
}

/// Runs `command` with stdout a pipe that is read for `first` bytes, then
/// closed (`| head -c first`); with `first` 0, a pipe whose reader is
/// closed before the command starts, so that its first write fails.
fn cut(command: &mut Command, first: usize) -> Cut {
    let mut read = vec![0; first];
    let mut child = if first == 0 {
        let (reader, writer) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
        drop(reader);
        command.stdout(Stdio::from(writer))
    } else {
        command.stdout(Stdio::piped())
    }
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn connhost");
    if let Some(mut stdout) = child.stdout.take() {
        stdout.read_exact(&mut read).expect("the first bytes");
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    let status = child.wait().expect("wait for connhost");
    Cut {
        read,
        code: status.code(),
        stderr,
    }
}

/// Asserts that `command` ends quietly with `code` when its reader
/// closes the pipe after `first` bytes.
fn check(what: &str, command: &mut Command, first: usize, code: i32) {
    let cut = cut(command, first);
    assert_eq!(cut.code, Some(code), "{what}: {}", cut.stderr);
    assert!(
        !cut.stderr.contains("panicked") && !cut.stderr.contains("Broken pipe"),
        "{what}: {}",
        cut.stderr
    );
    assert!(cut.stderr.is_empty(), "{what} said: {}", cut.stderr);
    assert_eq!(cut.read.len(), first);
}

#[test]
fn a_long_output_cut_short_ends_quietly_and_successfully() {
    // Many files that are not libraries, with long names: `plugins` lists
    // each, with why.
    let dir = PluginDir::empty();
    let long = "x".repeat(180);
    for i in 0..400 {
        dir.add_file(&format!("not-a-plugin-{long}-{i:04}.so"), b"not a library");
    }
    for json in [false, true] {
        let mut whole = connhost(dir.path());
        whole.arg("plugins").args(json.then_some("--json"));
        let whole = run(&mut whole);
        assert_eq!(whole.code, 0, "{}", whole.stderr);
        // Longer than a pipe holds, so the reader's going away breaks it.
        assert!(
            whole.stdout.len() > 2 * PIPE_BUFFER,
            "only {} bytes",
            whole.stdout.len()
        );
        let mut command = connhost(dir.path());
        command.arg("plugins").args(json.then_some("--json"));
        let what = format!("plugins (json: {json}) | head -c 100");
        check(&what, &mut command, 100, 0);
    }
}

#[test]
fn every_command_ends_quietly_when_its_reader_is_gone() {
    let dir = PluginDir::with(&["fixture-terminal-escapes"]);
    let file = dir.file(&library_file_name("fixture-terminal-escapes"));
    let commands: [(&[&str], i32); 9] = [
        (&["providers"], 0),
        (&["providers", "--json"], 0),
        (&["schema", "terminal-escapes"], 0),
        (&["plugins"], 0),
        (&["plugins", "--json"], 0),
        // The verdict's status stands: a closed pipe does not make a
        // rejected credential valid.
        (&["validate", "terminal-escapes", "-f", "api_key=accept"], 0),
        (&["validate", "terminal-escapes", "-f", "api_key=wrong"], 1),
        (
            &[
                "validate",
                "terminal-escapes",
                "-f",
                "api_key=wrong",
                "--json",
            ],
            1,
        ),
        (&["lock"], 0),
    ];
    for (args, code) in commands {
        check(&args.join(" "), connhost(dir.path()).args(args), 0, code);
    }
    check(
        "inspect",
        connhost(dir.path()).arg("inspect").arg(&file),
        0,
        0,
    );
}
