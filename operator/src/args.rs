//! Command-line flags; each is also read from the environment. The doc comments are `--help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The Modelfleet operator: serves ModelServices as autoscaled runtime Deployments.
#[derive(Debug, Parser)]
#[command(name = "modelfleet-operator", version)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller.
    Run(RunArgs),
}

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Kubeconfig to use; without it, KUBECONFIG, ~/.kube/config, then the in-cluster
    /// service account.
    #[arg(long, env = "MODELFLEET_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Watch only this namespace (all namespaces when empty).
    #[arg(long, env = "MODELFLEET_WATCH_NAMESPACE")]
    pub namespace: Option<String>,

    /// Runtime image for ModelServices that do not set spec.runtime.image.
    #[arg(
        long,
        env = "MODELFLEET_RUNTIME_IMAGE",
        default_value = "localhost/modelfleet-runtime:0.1.0"
    )]
    pub runtime_image: String,

    /// API port for ModelServices that do not set spec.runtime.port.
    #[arg(long, env = "MODELFLEET_DEFAULT_PORT", default_value_t = 8080, value_parser = clap::value_parser!(i32).range(1024..=65535))]
    pub default_port: i32,

    /// In-flight requests per replica for ModelServices that do not set spec.runtime.maxConcurrency.
    #[arg(long, env = "MODELFLEET_DEFAULT_MAX_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..=256))]
    pub default_max_concurrency: i32,

    /// Address of the admin server: /livez, /readyz and /metrics.
    #[arg(long, env = "MODELFLEET_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,

    /// Namespace of the leader-election Lease. With it, only the replica holding the Lease
    /// reconciles; without it, leader election is off (run one replica).
    #[arg(long, env = "MODELFLEET_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,

    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "MODELFLEET_LEADER_ELECTION_LEASE",
        default_value = "modelfleet-operator"
    )]
    pub leader_election_lease: String,

    /// Identity in the Lease; the pod name.
    #[arg(long, env = "POD_NAME", default_value = "modelfleet-operator")]
    pub pod_name: String,

    /// Log format.
    #[arg(long, env = "MODELFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How logs are written (to stderr).
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event.
    Json,
}
