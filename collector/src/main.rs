use std::process::ExitCode;

use clap::Parser as _;
use collector::{agent, cli::Cli, logging};

fn main() -> ExitCode {
    // Malformed flags exit here with code 2 and clap's message.
    let cli = Cli::parse();
    if let Err(e) = logging::init(&cli.log_level, cli.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(agent::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(agent::Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
        Err(agent::Failure::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
