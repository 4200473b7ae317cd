//! `routemaster`: the CLI. Parses the command line, runs the command on a
//! single-threaded runtime (one request at a time needs no more) and turns the outcome
//! into the exit code: 0 success, 1 error, 2 usage error (clap's, and ours), 3 `diff`
//! found differences.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use routemaster_control_plane::cli::{Cli, CliError, Io, run};

fn main() -> ExitCode {
    // Clap exits 2 on usage errors (and 0 for --help / --version).
    let cli = Cli::parse();
    // Log lines are diagnostics (`RUST_LOG=debug`); what the CLI has to say it prints.
    cli.log.init("warn");
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&CliError::Other(format!("cannot start the runtime: {e}"))),
    };
    let stdout = io::stdout();
    let stderr = io::stderr();
    let stdin = io::stdin();
    let (mut out, mut err, mut input) = (stdout.lock(), stderr.lock(), stdin.lock());
    let mut io = Io {
        out: &mut out,
        err: &mut err,
        stdin: &mut input,
    };
    match runtime.block_on(run(&cli, &mut io)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        // `routemaster get routes | head`: the reader left, which is not our error.
        Err(CliError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(err: &CliError) -> ExitCode {
    // If stderr itself is gone there is nowhere left to report to.
    let _ = writeln!(io::stderr(), "error: {err}");
    ExitCode::from(err.exit_code())
}
