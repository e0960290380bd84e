//! The `connhost` binary. Only this file prints errors and picks the exit
//! code; everything else returns values.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A worker process for an isolated plugin runs and exits here.
    connhost::worker::run_if_worker();
    let code = match cli::run() {
        Ok(code) => code,
        Err(error) => {
            // Escaped: the chain may hold a plugin's words (a load failure
            // reason, a provider's message).
            cli::eprint(&format!("connhost: error: {error:#}\n"));
            ExitCode::from(cli::USAGE)
        }
    };
    // The workers die with this process; their cgroups go with them now
    // rather than at the next start's sweep.
    connhost::worker::shutdown();
    code
}
