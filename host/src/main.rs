//! `kensa`: the engineer's command line. `main` parses, runs one command, and owns the
//! exit code; [`cli`] is the flags, [`settings`] turns them into ready values, [`cmd`]
//! holds one file per command over the `kensa-core` library.

use std::process::ExitCode;

/// `println!` that returns the I/O error instead of panicking, so that `kensa … | head`
/// ends quietly when the reader goes away (`main` treats a broken pipe as success).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod cli;
mod cmd;
mod draw;
mod fleet;
mod link;
mod output;
mod progress;
mod report;
mod settings;

fn main() -> ExitCode {
    let cli = match cli::Cli::parse_with_config() {
        Ok(cli) => cli,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_level())),
        )
        .with_writer(std::io::stderr)
        .init();
    match cmd::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// The reader of our stdout went away (`kensa eval … | head`): not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
