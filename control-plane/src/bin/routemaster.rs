//! `routemaster`: the CLI. Parses the command line, runs the command on a
//! single-threaded runtime (one request at a time needs no more) and turns the outcome
//! into the exit code: 0 success, 1 error, 2 `diff` found differences.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use routemaster_control_plane::cli::{Cli, CliError, Outcome, run};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Other(format!("cannot start the runtime: {e}"))),
    };
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match runtime.block_on(run(&cli, &mut out)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Differences) => ExitCode::from(2),
        // `routemaster get routes | head`: the reader left, which is not our error.
        Err(CliError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(err: &CliError) -> ExitCode {
    // If stderr itself is gone there is nowhere left to report to.
    let _ = writeln!(io::stderr(), "error: {err}");
    ExitCode::FAILURE
}
