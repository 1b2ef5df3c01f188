//! Command-line flags of `modelfleet-runtime`; every flag can also come from the environment.
//!
//! The doc comment on each field is its `--help` text. Parsing of values that clap cannot check by
//! itself (durations, digests, quantization names) lives here too, so `main` only wires things.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::gguf::Quantization;

/// The Modelfleet inference server: serves a quantized GGUF model over an OpenAI-compatible API.
#[derive(Debug, Parser)]
#[command(name = "modelfleet-runtime", version, about)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Fetch, verify and load the weights, then serve the API until SIGTERM.
    Serve(ServeArgs),
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Where the GGUF weights are: `https://…`, `http://…`, `file:///path` or a local path.
    /// `hf://` and `s3://` are not supported yet.
    #[arg(long, env = "MODELFLEET_MODEL_URI")]
    pub model_uri: String,

    /// Expected SHA-256 of the weights (64 lowercase hex characters). Checked before loading.
    #[arg(long, env = "MODELFLEET_MODEL_SHA256", value_parser = parse_sha256)]
    pub sha256: Option<String>,

    /// Quantization the weights must have: `Auto` accepts what the file holds, otherwise a GGUF
    /// type such as `Q4_1` or `Q4_K_M`, checked against the file before loading.
    #[arg(long, env = "MODELFLEET_QUANTIZATION", default_value = "Auto", value_parser = parse_quantization)]
    pub quantization: Quantization,

    /// Model name clients pass as `model`; defaults to the file name without `.gguf`.
    #[arg(long, env = "MODELFLEET_SERVED_NAME")]
    pub served_name: Option<String>,

    /// Address to listen on.
    #[arg(long, env = "MODELFLEET_HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port to listen on.
    #[arg(long, env = "MODELFLEET_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Tokens of context per request (prompt plus completion); defaults to the model's trained
    /// context length, capped at 4096.
    #[arg(long, env = "MODELFLEET_CONTEXT_LENGTH", value_parser = clap::value_parser!(u32).range(16..))]
    pub context_length: Option<u32>,

    /// Requests decoded together in one batch (continuous batching).
    #[arg(long, env = "MODELFLEET_MAX_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub max_concurrency: u32,

    /// Requests that may wait for a free slot; beyond that the API answers 429 with Retry-After.
    #[arg(long, env = "MODELFLEET_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: u32,

    /// CPU threads for llama.cpp; defaults to the number of CPUs available to the process.
    #[arg(long, env = "MODELFLEET_THREADS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,

    /// Threads serving HTTP. One is plenty for the request rates a CPU engine sustains, and every
    /// extra runnable thread competes with the decode threads for cores.
    #[arg(long, env = "MODELFLEET_HTTP_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub http_threads: u32,

    /// File the reason for a fatal error is written to, for Kubernetes to show in the pod status.
    #[arg(
        long,
        env = "MODELFLEET_TERMINATION_MESSAGE_PATH",
        default_value = "/dev/termination-log"
    )]
    pub termination_message_path: PathBuf,

    /// Directory downloaded weights are stored in (reused across restarts when the digest matches).
    #[arg(
        long,
        env = "MODELFLEET_CACHE_DIR",
        default_value = "/var/cache/modelfleet"
    )]
    pub cache_dir: PathBuf,

    /// How long in-flight requests may run after SIGTERM before the process exits anyway
    /// (`30s`, `2m`, `500ms` or plain seconds).
    #[arg(long, env = "MODELFLEET_GRACE_PERIOD", default_value = "30s", value_parser = parse_duration)]
    pub grace_period: Duration,

    /// Log format.
    #[arg(long, env = "MODELFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Why a flag value was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    #[error("must be 64 lowercase hex characters, got {0} characters")]
    Sha256(usize),
    #[error("{0:?} is not a duration: use e.g. 30s, 2m, 500ms or a number of seconds")]
    Duration(String),
}

impl ArgError {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Sha256(_) => "sha256",
            Self::Duration(_) => "duration",
        }
    }
}

fn parse_sha256(s: &str) -> Result<String, ArgError> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s.to_string())
    } else {
        Err(ArgError::Sha256(s.len()))
    }
}

fn parse_quantization(s: &str) -> Result<Quantization, crate::gguf::GgufError> {
    s.parse()
}

/// Parses `500ms`, `30s`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ArgError> {
    let err = || ArgError::Duration(s.to_string());
    let t = s.trim();
    let (num, mult_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (t, 1000)
    };
    let n: u64 = num.trim().parse().map_err(|_| err())?;
    n.checked_mul(mult_ms)
        .map(Duration::from_millis)
        .ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn flags_parse_and_have_help() {
        use clap::CommandFactory;
        Args::command().debug_assert();
        let a = Args::try_parse_from([
            "x",
            "serve",
            "--model-uri",
            "/m.gguf",
            "--quantization",
            "q4_1",
        ])
        .unwrap();
        let Command::Serve(s) = a.command;
        assert_eq!(s.quantization, Quantization::Named("Q4_1".into()));
        assert!(
            Args::try_parse_from(["x", "serve", "--model-uri", "/m", "--sha256", "abc"]).is_err()
        );
    }
}
