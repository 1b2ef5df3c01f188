//! The e2e harness: connects to the local control plane (`make cluster-up`, kubeconfig from
//! `KUBECONFIG` or `$MODELFLEET_CACHE/cluster/kubeconfig`), gives each test a fresh namespace
//! (waiting for its `default` ServiceAccount, as pods need it), dumps the objects, events and local
//! pod logs of that namespace when the test fails, and deletes the namespace afterwards
//! (the pattern of linkerd2's `policy-test` `with_temp_ns`).
//!
//! When no control plane answers, tests are skipped with a message, unless `CI=true` or
//! `MODELFLEET_E2E_REQUIRED=1`, in which case they fail.
#![forbid(unsafe_code)]

pub mod fixtures;

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use futures::FutureExt;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, ServiceAccount};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::wait::{Condition, await_condition},
};

/// The cache directory shared with the scripts (`MODELFLEET_CACHE`, default `~/.cache/modelfleet`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("MODELFLEET_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/modelfleet")
        })
}

/// The kubeconfig of the local control plane.
pub fn kubeconfig_path() -> PathBuf {
    std::env::var_os("KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("cluster/kubeconfig"))
}

/// The workspace root (the e2e crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where the locally built binaries (`modelfleet-runtime`, `modelfleet-operator`) are:
/// `$MODELFLEET_BIN_DIR`, else the `debug` directory of `$CARGO_TARGET_DIR` (relative to the
/// workspace root, as cargo reads it) or of `target/`.
pub fn bin_dir() -> PathBuf {
    std::env::var_os("MODELFLEET_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| repo_root().join("target"), |t| repo_root().join(t));
            target.join("debug")
        })
}

/// Whether a missing control plane is a failure (CI) rather than a skip.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
        || std::env::var("MODELFLEET_E2E_REQUIRED").is_ok_and(|v| v == "1" || v == "true")
}

async fn try_connect() -> Result<Client> {
    let path = kubeconfig_path();
    let kc = kube::config::Kubeconfig::read_from(&path)
        .with_context(|| format!("failed to read {}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    let client = Client::try_from(config)?;
    tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
        .await
        .context("apiserver did not answer within 5s")??;
    Ok(client)
}

/// A client for the local control plane; `None` (test skipped) when there is none and it is
/// not required. Panics when it is required and missing.
pub async fn client() -> Option<Client> {
    match try_connect().await {
        Ok(c) => Some(c),
        Err(e) if required() => panic!(
            "the local control plane is required (CI / MODELFLEET_E2E_REQUIRED) but unreachable: {e:#}; run `make cluster-up`"
        ),
        Err(e) => {
            eprintln!(
                "SKIPPED: no local control plane ({e:#}); run `make cluster-up`, or set MODELFLEET_E2E_REQUIRED=1 to fail instead"
            );
            None
        }
    }
}

static NS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Runs `test` in a fresh namespace named `e2e-<prefix>-<suffix>`; dumps that namespace when the
/// test fails (error or panic) and deletes it afterwards. Skips (returns) when there is no
/// control plane and it is not required.
pub async fn with_temp_ns<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let Some(client) = client().await else { return };
    let ns = format!(
        "e2e-{prefix}-{}-{}",
        std::process::id(),
        NS_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    if let Err(e) = create_namespace(&client, &ns).await {
        panic!("failed to create namespace {ns}: {e:#}");
    }
    let result = std::panic::AssertUnwindSafe(test(client.clone(), ns.clone()))
        .catch_unwind()
        .await;
    let failed = !matches!(result, Ok(Ok(())));
    if failed {
        dump_namespace(&client, &ns).await;
    }
    let _ = Api::<Namespace>::all(client)
        .delete(&ns, &DeleteParams::background())
        .await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("test failed in namespace {ns}: {e:#}"),
        Err(p) => std::panic::resume_unwind(p),
    }
}

async fn create_namespace(client: &Client, ns: &str) -> Result<()> {
    let obj: Namespace = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ns, "labels": {"modelfleet.dev/e2e": "true"}}
    }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &obj)
        .await?;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    tokio::time::timeout(Duration::from_secs(30), await_condition(sas, "default", |sa: Option<&ServiceAccount>| sa.is_some()))
        .await
        .context("the default ServiceAccount did not appear within 30s (is kube-controller-manager running?)")??;
    Ok(())
}

/// Prints what a failing test needs: pods with their status, events, custom resources of
/// ours (via kubectl), and the logs of local pod processes.
pub async fn dump_namespace(client: &Client, ns: &str) {
    eprintln!("===== dump of namespace {ns} =====");
    // Separate calls: a kind the cluster does not know (CRD not installed) fails only its own.
    for kinds in [
        "all,configmaps,serviceaccounts,roles,rolebindings",
        "modelservices.modelfleet.dev",
    ] {
        if let Ok(o) = kubectl(&["get", kinds, "-n", ns, "-o", "wide"]) {
            eprintln!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = pods.list(&ListParams::default()).await {
        for p in list {
            eprintln!(
                "--- pod {} status:\n{}",
                p.name_any(),
                serde_yaml::to_string(&p.status).unwrap_or_default()
            );
            let dir = cache_dir()
                .join("cluster/podrunner")
                .join(format!("{ns}_{}", p.name_any()));
            if let Ok(mut rd) = std::fs::read_dir(&dir) {
                while let Some(Ok(f)) = rd.next() {
                    if f.path().extension().is_some_and(|e| e == "log") {
                        let log = std::fs::read_to_string(f.path()).unwrap_or_default();
                        let tail: Vec<&str> = log.lines().rev().take(50).collect();
                        eprintln!(
                            "--- local process log {} (last 50 lines):",
                            f.path().display()
                        );
                        for l in tail.into_iter().rev() {
                            eprintln!("{l}");
                        }
                    }
                }
            }
        }
    }
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    if let Ok(list) = events.list(&ListParams::default()).await {
        eprintln!("--- events:");
        for e in list {
            eprintln!(
                "{} {}/{}: {} {}",
                e.type_.unwrap_or_default(),
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            );
        }
    }
    eprintln!("===== end of dump =====");
}

/// The kubectl built by `e2e/cluster/build.sh`, else the one on PATH.
pub fn kubectl_path() -> PathBuf {
    let built = cache_dir().join("bin/current/kubectl");
    if built.exists() {
        built
    } else {
        PathBuf::from("kubectl")
    }
}

/// Runs kubectl against the local control plane.
pub fn kubectl(args: &[&str]) -> Result<Output> {
    std::process::Command::new(kubectl_path())
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .output()
        .context("failed to run kubectl")
}

/// Runs kubectl and fails unless it succeeds; returns stdout.
pub fn kubectl_ok(args: &[&str]) -> Result<String> {
    let o = kubectl(args)?;
    if !o.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Waits up to `timeout` for `cond` on the named object.
pub async fn wait_for<K>(
    api: Api<K>,
    name: &str,
    timeout: Duration,
    cond: impl Condition<K>,
) -> Result<K>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let obj = tokio::time::timeout(timeout, await_condition(api, name, cond))
        .await
        .with_context(|| format!("timed out after {timeout:?} waiting for {name}"))??;
    obj.with_context(|| format!("{name} was deleted while waiting"))
}

/// A condition for [`wait_for`]: the pod's phase is one of `phases`.
pub fn pod_phase_in(phases: &'static [&'static str]) -> impl Condition<Pod> {
    move |p: Option<&Pod>| {
        p.and_then(|p| p.status.as_ref()?.phase.as_deref())
            .is_some_and(|ph| phases.contains(&ph))
    }
}

/// The status of the pod condition `type_` ("True"/"False"), if present.
pub fn pod_condition(pod: &Pod, type_: &str) -> Option<k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}
