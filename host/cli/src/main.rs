//! The `connhost` binary. Only this file prints errors and picks the exit
//! code; everything else returns values.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A worker process for an isolated plugin runs and exits here.
    connhost::worker::run_if_worker();
    match cli::run() {
        Ok(code) => code,
        Err(error) => {
            eprintln!("connhost: error: {error:#}");
            ExitCode::from(cli::USAGE)
        }
    }
}
