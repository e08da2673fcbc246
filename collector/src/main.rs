use std::process::ExitCode;

use collector::{
    agent,
    config::{self, Invocation, StartError},
    logging,
};

fn main() -> ExitCode {
    // Malformed flags or config exit here with code 2, nothing loaded.
    let (cli, file) = match config::from_args(&std::env::args_os().collect::<Vec<_>>()) {
        Ok(Invocation::Run(cli, file)) => (cli, file),
        Ok(Invocation::Check(path)) => {
            return match config::check(&path) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(problems) => {
                    eprintln!("{problems}");
                    ExitCode::from(2)
                }
            };
        }
        Err(StartError::Flags(e)) => e.exit(),
        Err(StartError::Config(problems)) => {
            eprintln!("{problems}");
            eprintln!("error: the config file has errors; `collector check-config FILE` lists them without starting");
            return ExitCode::from(2);
        }
        Err(StartError::Usage(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = logging::init(&cli.log_level, cli.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    // The runtime starts inside, once the programs are loaded and the capabilities the agent
    // no longer needs are given up (agent/mod.rs).
    match agent::run(*cli, file) {
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
