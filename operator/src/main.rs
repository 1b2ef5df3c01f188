//! The `modelfleet-operator` binary: parse flags, set up logging, run; wiring only.

use std::process::ExitCode;

use clap::Parser;
use modelfleet_operator::args::{Args, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let Args {
        command: Command::Run(args),
    } = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    match modelfleet_operator::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %modelfleet_operator::error_chain(&e), "operator failed");
            ExitCode::FAILURE
        }
    }
}
