//! The Modelfleet operator: reconciles each ModelService into a runtime Deployment, a Service and
//! a PodDisruptionBudget, and reports an honest status.
#![forbid(unsafe_code)]

pub mod admin;
pub mod args;
pub mod autoscale;
pub mod build;
pub mod controller;
pub mod lease;
pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Failures that stop the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the kubeconfig {0}")]
    Kubeconfig(String, #[source] kube::config::KubeconfigError),
    #[error("failed to find Kubernetes credentials (no kubeconfig, no in-cluster service account)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("failed to create the Kubernetes client")]
    Client(#[source] kube::Error),
    #[error("failed to create the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("failed to serve the admin endpoints")]
    Admin(#[source] std::io::Error),
    #[error("leader election failed")]
    Lease(#[source] lease::Error),
}

/// `error: cause: cause` on one line, for logs and termination messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Completes on SIGTERM (pending forever where signals cannot be installed).
async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Connects and runs the controller and the admin server until SIGTERM.
pub async fn run(args: args::RunArgs) -> Result<(), Error> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(path.display().to_string(), e))?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig(path.display().to_string(), e))?
        }
        None => kube::Config::infer().await.map_err(Error::Infer)?,
    };
    let client = Client::try_from(config).map_err(Error::Client)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let defaults = controller::validate::Defaults {
        runtime_image: args.runtime_image.clone(),
        port: args.default_port,
        max_concurrency: args.default_max_concurrency,
    };
    let ctx =
        Arc::new(controller::Context::new(client, defaults, metrics.clone()).map_err(Error::Http)?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let admin = tokio::spawn(admin::serve(
        args.admin_addr,
        ready.clone(),
        metrics,
        async {
            let _ = stop_rx.await;
        },
    ));
    tracing::info!(admin = %args.admin_addr, namespace = ?args.namespace, "operator starting");
    let elector = args.leader_election_namespace.as_deref().map(|ns| {
        lease::LeaderElector::new(
            ctx.client.clone(),
            ns,
            &args.leader_election_lease,
            &args.pod_name,
        )
    });
    if let Some(elector) = &elector {
        // A standby replica is healthy and ready: it is waiting, not failing.
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(lease = %args.leader_election_lease, "waiting to acquire the lease");
        tokio::select! {
            r = elector.acquire() => r.map_err(Error::Lease)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm() => return Ok(()),
        }
        ready.store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let controller = controller::run(ctx, args.namespace.clone(), ready);
    match &elector {
        Some(elector) => tokio::select! {
            () = controller => {}
            lost = elector.keep() => {
                let _ = stop_tx.send(());
                return Err(Error::Lease(lost));
            }
        },
        None => controller.await,
    }
    tracing::info!("controller stopped; shutting down");
    let _ = stop_tx.send(());
    match admin.await {
        Ok(r) => r.map_err(Error::Admin),
        Err(_) => Ok(()),
    }
}
