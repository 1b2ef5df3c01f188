//! Fixtures of the tests that run the operator: the SmolLM2 weights on the local model store, an
//! operator process per test, the CRD, and waits on ModelServices with a message naming what did
//! not happen.

use std::net::TcpListener;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use modelfleet_crds::ModelService;
use tokio::process::{Child, Command};

use crate::{bin_dir, kubeconfig_path, kubectl_ok, repo_root};

/// The sha256 of the SmolLM2-135M-Instruct Q4_1 GGUF (`make model` checks it too).
pub const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
/// Its file name in `$MODELFLEET_CACHE/models/`, the directory the model store serves.
pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
/// Where the local model store (`make cluster-up`) serves it.
pub const MODEL_URI: &str = "http://127.0.0.1:18080/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Cold start of one runtime pod here: fetch 98 MB from loopback, digest, load, warm up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(240);

/// An operator process for one test; killed when dropped.
#[derive(Debug)]
pub struct Operator {
    child: Child,
    admin: String,
}

impl Operator {
    pub async fn start(ns: &str, extra: &[&str]) -> Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let admin = format!("127.0.0.1:{port}");
        let bin = bin_dir().join("modelfleet-operator");
        ensure!(
            bin.exists(),
            "{} is missing: run `make e2e`, which builds it",
            bin.display()
        );
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("operator-{ns}-{port}.log")))?;
        let child = Command::new(bin)
            .args([
                "run",
                "--namespace",
                ns,
                "--admin-addr",
                &admin,
                "--runtime-image",
                "localhost/modelfleet-runtime:0.1.0",
            ])
            .args(extra)
            .env("KUBECONFIG", kubeconfig_path())
            .env("RUST_LOG", "info,modelfleet_operator=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("failed to start the operator")?;
        let op = Self { child, admin };
        op.wait_ready().await?;
        Ok(op)
    }

    async fn wait_ready(&self) -> Result<()> {
        let url = format!("http://{}/readyz", self.admin);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if reqwest::get(&url)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("operator at {} not ready within 30s", self.admin)
    }

    /// Kills the process (SIGKILL: it releases nothing, as when its node dies) and reaps it.
    pub async fn kill(&mut self) -> Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// Write requests the operator made so far, by kind, from its own `/metrics`.
    pub async fn writes(&self) -> Result<Vec<(String, f64)>> {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("modelfleet_operator_kube_writes_total"))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse::<f64>().ok()?))
            })
            .collect())
    }
}

/// Installs (server-side apply, or updates) the generated CRD and waits until it is
/// Established. Idempotent, so every test can call it.
pub fn install_crd() -> Result<()> {
    let crd = repo_root().join("crds/modelservice.yaml");
    ensure!(
        crd.exists(),
        "{} does not exist (make generate)",
        crd.display()
    );
    kubectl_ok(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=modelfleet-e2e",
        "-f",
        crd.to_str().context("path")?,
    ])?;
    kubectl_ok(&[
        "wait",
        "--for=condition=Established",
        "crd/modelservices.modelfleet.dev",
        "--timeout=30s",
    ])?;
    Ok(())
}

/// Labels the namespace so the apiserver enforces the restricted Pod Security profile: a
/// runtime pod that breaks it is never created.
pub async fn enforce_restricted(client: &Client, ns: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let patch = serde_json::json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    api.patch(ns, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

/// A ModelService named `name` with `spec`.
pub fn model_service(name: &str, spec: serde_json::Value) -> Result<ModelService> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "modelfleet.dev/v1alpha1",
        "kind": "ModelService",
        "metadata": {"name": name},
        "spec": spec,
    }))?)
}

/// The condition `type_` of the ModelService as (status, reason, message).
pub fn condition(ms: &ModelService, type_: &str) -> Option<(String, String, String)> {
    let c = ms
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Polls the ModelService until `pred` holds; returns it. `what` names the wait in errors.
pub async fn wait_ms(
    api: &Api<ModelService>,
    name: &str,
    timeout: Duration,
    what: &str,
    pred: impl Fn(&ModelService) -> bool,
) -> Result<ModelService> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        if let Some(ms) = api.get_opt(name).await? {
            if pred(&ms) {
                return Ok(ms);
            }
            last = ms.status.clone();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("timed out after {timeout:?} waiting for {name}: {what}; last status: {last:?}")
}

/// Polls `f` every 500 ms until it returns true; fails naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, f: F) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    bail!("timed out after {timeout:?}: {what}")
}

/// Whether the ModelService has Ready=True.
pub fn is_ready(ms: &ModelService) -> bool {
    condition(ms, "Ready").is_some_and(|(s, _, _)| s == "True")
}
