//! The `modelfleet-runtime` binary: parse flags, set up logging, run; wiring only.

use std::process::ExitCode;

use clap::Parser;
use modelfleet_runtime::args::{Args, Command, LogFormat};
use modelfleet_runtime::server;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args = Args::parse();
    let Command::Serve(serve) = args.command;
    // llama.cpp logs every tensor at info; keep them at warn unless RUST_LOG says otherwise.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,llama-cpp-2=warn,llama_cpp_2=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match serve.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let termination_path = serve.termination_message_path.clone();
    match runtime.block_on(server::run(serve)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = server::error_chain(&e);
            tracing::error!(error = %message, category = e.category(), "runtime failed");
            server::write_termination_message(&termination_path, &message);
            ExitCode::FAILURE
        }
    }
}
