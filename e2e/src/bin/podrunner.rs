//! The pod runner: test infrastructure that makes pods of our images, bound to kwok's fake nodes,
//! run as real local processes (a tiny kubelet for one container per pod). It is started by
//! `e2e/cluster/up.sh` and is never part of the operator.
//!
//! Which pods: any pod with a `spec.nodeName` whose first container's image name (last path
//! segment, tag removed) starts with `modelfleet-`. kwok's stages (`e2e/cluster/kwok-stages.yaml`)
//! skip exactly those pods, so the two never fight over a status.
//!
//! What runs:
//! - image `…/modelfleet-exec[:tag]`: the container's `command` + `args` as given, from the host's
//!   `PATH` (used by the e2e tests for trivial processes and small HTTP servers);
//! - any other `…/modelfleet-<x>[:tag]`: the locally built binary `<bin-dir>/modelfleet-<x>`
//!   (default `target/debug`), with the container's `args`; when `command` is set its first element
//!   stands for the image's entrypoint and the rest is prepended to `args`.
//!
//! The process gets the pod's environment (`value`, `fieldRef`, `secretKeyRef`, `configMapKeyRef`,
//! `envFrom`), with `$(VAR)` expanded in args as the kubelet does, a pod IP from 127.0.20.0/24
//! (also in `POD_IP` if the pod does not set it), and, unless `automountServiceAccountToken` is
//! false, `KUBECONFIG` pointing at a kubeconfig built from a TokenRequest for the pod's
//! ServiceAccount, bound to the pod: the process has exactly that ServiceAccount's RBAC.
//! Occurrences of the container's `terminationMessagePath` in args and env are rewritten to a
//! per-pod file, read back when the process exits.
//!
//! Status follows the process: `Running`; `terminated` with exit code, reason and termination
//! message; restarts as `restartPolicy` says (with `restartCount`, `lastState` and a capped
//! back-off); `Ready` follows the `readinessProbe` (httpGet or tcpSocket; `exec` probes are not
//! supported and count as failing) or the process being up when there is none. Liveness and
//! startup probes and init containers are ignored. On deletion: SIGTERM to the process group,
//! SIGKILL after the grace period, then the pod is removed (delete with grace period 0).
//! Logs and per-pod files live in `--state-dir/<namespace>_<name>/`.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use chrono::Utc;
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{ConfigMap, Container, Pod, Probe, Secret, ServiceAccount},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::json;
use tokio::{process::Command, sync::watch};
use tracing::{info, warn};

/// Runs pods of Modelfleet images bound to fake nodes as local processes.
#[derive(Parser, Debug)]
struct Args {
    /// Kubeconfig of the admin user the runner acts as.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Directory holding the locally built binaries (`modelfleet-runtime`, `modelfleet-operator`).
    #[arg(long, env = "MODELFLEET_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Repository root; `bin-dir` defaults to `<repo>/target/debug`.
    #[arg(long, env = "MODELFLEET_REPO", default_value = ".")]
    repo: PathBuf,
    /// Where per-pod logs, kubeconfigs and termination messages are written.
    #[arg(
        long,
        env = "MODELFLEET_PODRUNNER_STATE",
        default_value = "/tmp/modelfleet-podrunner"
    )]
    state_dir: PathBuf,
    /// The first three octets of the pod IPs handed out (always inside 127.0.0.0/8).
    #[arg(long, default_value = "127.0.20")]
    ip_prefix: String,
}

/// The image-name prefix that marks our pods (kwok-stages.yaml uses the same test).
const IMAGE_PREFIX: &str = "modelfleet-";
/// The image whose command runs as is, from the host's PATH.
const EXEC_IMAGE: &str = "modelfleet-exec";

struct Shared {
    client: Client,
    bin_dir: PathBuf,
    state_dir: PathBuf,
    ip_prefix: String,
    apiserver: String,
    ca_file: Option<String>,
    used_ips: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("bin_dir", &self.bin_dir)
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)?;
    let cluster = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .context("kubeconfig has no cluster")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = Client::try_from(config)?;
    let repo = std::fs::canonicalize(&args.repo)?;
    let shared = Arc::new(Shared {
        client: client.clone(),
        bin_dir: args.bin_dir.unwrap_or_else(|| repo.join("target/debug")),
        state_dir: args.state_dir.clone(),
        ip_prefix: args.ip_prefix.clone(),
        apiserver: cluster.server.context("kubeconfig cluster has no server")?,
        ca_file: cluster.certificate_authority,
        used_ips: Mutex::new(HashSet::new()),
    });
    std::fs::create_dir_all(&shared.state_dir)?;
    info!(bin_dir = %shared.bin_dir.display(), state_dir = %shared.state_dir.display(), "pod runner started");

    let pods: Api<Pod> = Api::all(client);
    let mut supervisors: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    let mut tasks = Vec::new();
    let mut stream = watcher(pods, watcher::Config::default()).boxed();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let event = tokio::select! {
            e = stream.try_next() => e,
            _ = sigterm.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let event = match event {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "watch error");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let Some(uid) = pod.uid() else { continue };
                if !is_ours(&pod) {
                    continue;
                }
                supervisors.retain(|_, tx| !tx.is_closed());
                if let Some(tx) = supervisors.get(&uid) {
                    let _ = tx.send(Some(pod));
                } else if pod.metadata.deletion_timestamp.is_some() {
                    // Terminating and not (or no longer) supervised: its process, if any, is
                    // already stopped (the supervisor ended, or the runner restarted), so only
                    // the removal is left.
                    let pods: Api<Pod> = Api::namespaced(
                        shared.client.clone(),
                        &pod.namespace().unwrap_or_default(),
                    );
                    let name = pod.name_any();
                    tokio::spawn(async move {
                        let dp = DeleteParams {
                            grace_period_seconds: Some(0),
                            ..Default::default()
                        };
                        let _ = pods.delete(&name, &dp).await;
                    });
                } else {
                    let (tx, rx) = watch::channel(Some(pod.clone()));
                    supervisors.insert(uid, tx);
                    tasks.retain(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
                    tasks.push(tokio::spawn(supervise(shared.clone(), pod, rx)));
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some(tx) = pod.uid().and_then(|uid| supervisors.remove(&uid)) {
                    let _ = tx.send(None);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
    info!("stopping: killing local pod processes");
    for (_, tx) in supervisors.drain() {
        let _ = tx.send(None);
    }
    // Each supervisor kills its process group when its channel says the pod is gone.
    let all = futures::future::join_all(tasks);
    if tokio::time::timeout(Duration::from_secs(5), all)
        .await
        .is_err()
    {
        warn!("some pod processes did not stop within 5s");
    }
    Ok(())
}

/// The image's name without registry path and tag.
fn image_name(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    let last = last.split('@').next().unwrap_or(last);
    last.split(':').next().unwrap_or(last)
}

fn is_ours(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.node_name.is_some()
        && spec.containers.first().is_some_and(|c| {
            c.image
                .as_deref()
                .is_some_and(|i| image_name(i).starts_with(IMAGE_PREFIX))
        })
}

/// The running state of one supervised pod, turned into a status patch by `status_patch`.
#[derive(Debug, Default)]
struct State {
    ip: String,
    host_ip: String,
    start_time: String,
    restart_count: i32,
    /// `running.startedAt` when the process runs.
    running_since: Option<String>,
    /// `(reason, message)` of the waiting state when nothing runs.
    waiting: Option<(String, String)>,
    terminated: Option<serde_json::Value>,
    last_terminated: Option<serde_json::Value>,
    ready: bool,
    phase: &'static str,
}

impl State {
    fn status_patch(&self, pod: &Pod) -> serde_json::Value {
        let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let container = pod.spec.as_ref().and_then(|s| s.containers.first());
        let name = container.map(|c| c.name.clone()).unwrap_or_default();
        let image = container.and_then(|c| c.image.clone()).unwrap_or_default();
        let state = if let Some(since) = &self.running_since {
            json!({"running": {"startedAt": since}})
        } else if let Some(t) = &self.terminated {
            json!({"terminated": t})
        } else {
            let (reason, message) = self.waiting.clone().unwrap_or_default();
            json!({"waiting": {"reason": reason, "message": message}})
        };
        let old = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let cond = |type_: &str, ok: bool| {
            // Keep lastTransitionTime when the status did not change.
            let prev = old.iter().find(|c| c.type_ == type_);
            let status = if ok { "True" } else { "False" };
            let ltt = match prev {
                Some(p) if p.status == status => p
                    .last_transition_time
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .unwrap_or(now.clone()),
                _ => now.clone(),
            };
            json!({"type": type_, "status": status, "lastTransitionTime": ltt,
                   "reason": if ok { "" } else if self.phase == "Succeeded" || self.phase == "Failed" { "PodCompleted" } else { "ContainersNotReady" }})
        };
        let mut conditions: Vec<serde_json::Value> = old
            .iter()
            .filter(|c| {
                ![
                    "Initialized",
                    "Ready",
                    "ContainersReady",
                    "PodReadyToStartContainers",
                ]
                .contains(&c.type_.as_str())
            })
            .filter_map(|c| serde_json::to_value(c).ok())
            .collect();
        conditions.push(cond("PodReadyToStartContainers", true));
        conditions.push(cond("Initialized", true));
        conditions.push(cond("ContainersReady", self.ready));
        conditions.push(cond("Ready", self.ready));
        let mut cs = json!({
            "name": name, "image": image, "imageID": "", "containerID": format!("local://{}", self.ip),
            "ready": self.ready, "started": self.running_since.is_some(),
            "restartCount": self.restart_count, "state": state,
        });
        if let Some(last) = &self.last_terminated {
            cs["lastState"] = json!({"terminated": last});
        }
        json!({"status": {
            "phase": self.phase, "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}],
            "startTime": self.start_time, "conditions": conditions, "containerStatuses": [cs],
        }})
    }
}

/// Per-pod files: log, kubeconfig, termination message.
fn pod_dir(shared: &Shared, pod: &Pod) -> PathBuf {
    shared.state_dir.join(format!(
        "{}_{}",
        pod.namespace().unwrap_or_default(),
        pod.name_any()
    ))
}

fn allocate_ip(shared: &Shared, pod: &Pod) -> Result<String> {
    let mut used = shared
        .used_ips
        .lock()
        .map_err(|_| anyhow::anyhow!("ip pool poisoned"))?;
    let prefix = format!("{}.", shared.ip_prefix);
    if let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.clone())
        && ip.starts_with(&prefix)
        && used.insert(ip.clone())
    {
        return Ok(ip);
    }
    for i in 2..255 {
        let ip = format!("{prefix}{i}");
        if used.insert(ip.clone()) {
            return Ok(ip);
        }
    }
    bail!("no free pod IP in {prefix}0/24")
}

async fn supervise(shared: Arc<Shared>, pod: Pod, rx: watch::Receiver<Option<Pod>>) {
    let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let ip = match allocate_ip(&shared, &pod) {
        Ok(ip) => ip,
        Err(e) => {
            warn!(pod = %key, error = %e, "cannot run pod");
            return;
        }
    };
    info!(pod = %key, %ip, "supervising");
    if let Err(e) = run_pod(&shared, pod, rx, ip.clone()).await {
        warn!(pod = %key, error = format!("{e:#}"), "supervisor failed");
    }
    if let Ok(mut used) = shared.used_ips.lock() {
        used.remove(&ip);
    }
    info!(pod = %key, "done");
}

/// A spawned container process; its pid is also its process group id.
#[derive(Debug)]
struct Proc {
    child: tokio::process::Child,
    pgid: i32,
}

async fn signal_group(pgid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .arg(format!("-{pgid}"))
        .stderr(Stdio::null())
        .status()
        .await;
}

async fn run_pod(
    shared: &Shared,
    mut pod: Pod,
    mut rx: watch::Receiver<Option<Pod>>,
    ip: String,
) -> Result<()> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let pods: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let spec = pod.spec.clone().context("pod has no spec")?;
    let container = spec
        .containers
        .first()
        .cloned()
        .context("pod has no container")?;
    let dir = pod_dir(shared, &pod);
    tokio::fs::create_dir_all(&dir).await?;
    let restart_policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let mut st = State {
        ip: ip.clone(),
        host_ip: "127.0.0.1".into(),
        start_time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        phase: "Pending",
        waiting: Some(("ContainerCreating".into(), String::new())),
        ..Default::default()
    };
    // A pod the runner already ran before a restart of the runner keeps its count.
    if let Some(cs) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
    {
        st.restart_count = cs.restart_count;
    }
    let already_done = matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    );
    if !already_done {
        patch_status(&pods, &name, &st.status_patch(&pod)).await;
    }

    let mut proc: Option<Proc> = None;
    let mut backoff = Duration::from_secs(1);
    let mut next_start = if already_done {
        None
    } else {
        Some(tokio::time::Instant::now())
    };
    let probe = container.readiness_probe.clone();
    let period = Duration::from_secs(
        probe
            .as_ref()
            .and_then(|p| p.period_seconds)
            .unwrap_or(10)
            .max(1) as u64,
    )
    .min(Duration::from_secs(2)); // probe faster than asked so tests do not wait; thresholds still apply
    let mut probe_tick = tokio::time::interval(period);
    let (mut successes, mut failures) = (0i32, 0i32);
    let mut resync = 0u32;

    loop {
        // Deletion: pod gone from the API, or deletionTimestamp set.
        let gone = rx.borrow().is_none();
        let deleting = gone || pod.metadata.deletion_timestamp.is_some();
        if deleting {
            if let Some(p) = proc.take() {
                let grace = pod
                    .metadata
                    .deletion_grace_period_seconds
                    .or(spec.termination_grace_period_seconds)
                    .unwrap_or(30);
                let grace = if gone { 0 } else { grace.max(0) as u64 };
                info!(pod = %name, grace, "stopping process");
                stop_proc(p, Duration::from_secs(grace)).await;
            }
            if !gone {
                let dp = DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                };
                if let Err(e) = pods.delete(&name, &dp).await
                    && !matches!(&e, kube::Error::Api(s) if s.code == 404)
                {
                    warn!(pod = %name, error = %e, "force delete failed");
                }
            }
            return Ok(());
        }

        let start_at = next_start;
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    // The runner is going away: leave no process behind.
                    if let Some(p) = proc.take() { stop_proc(p, Duration::ZERO).await; }
                    return Ok(());
                }
                if let Some(p) = rx.borrow_and_update().clone() { pod = p; }
            }
            _ = async { tokio::time::sleep_until(start_at.unwrap_or_else(tokio::time::Instant::now)).await }, if start_at.is_some() && proc.is_none() => {
                next_start = None;
                match start_proc(shared, &pod, &container, &dir, &ip).await {
                    Ok(p) => {
                        st.running_since = Some(Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                        st.waiting = None;
                        st.terminated = None;
                        st.phase = "Running";
                        st.ready = probe.is_none();
                        successes = 0; failures = 0;
                        proc = Some(p);
                        patch_status(&pods, &name, &st.status_patch(&pod)).await;
                    }
                    Err(e) => {
                        warn!(pod = %name, error = format!("{e:#}"), "cannot start container");
                        st.waiting = Some(("CreateContainerError".into(), format!("{e:#}")));
                        st.running_since = None;
                        patch_status(&pods, &name, &st.status_patch(&pod)).await;
                        next_start = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    }
                }
            }
            status = async { match proc.as_mut() { Some(p) => p.child.wait().await, None => std::future::pending().await } } => {
                let code = status.ok().and_then(|s| s.code().or_else(|| std::os::unix::process::ExitStatusExt::signal(&s).map(|sig| 128 + sig))).unwrap_or(-1);
                proc = None;
                let message = termination_message(&container, &dir, code).await;
                let finished = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let reason = if code == 0 { "Completed" } else { "Error" };
                let term = json!({"exitCode": code, "reason": reason, "message": message,
                                  "startedAt": st.running_since.take(), "finishedAt": finished, "containerID": format!("local://{ip}")});
                info!(pod = %name, code, "container exited");
                st.ready = false;
                let restart = restart_policy == "Always" || (restart_policy == "OnFailure" && code != 0);
                if restart {
                    st.restart_count += 1;
                    st.last_terminated = Some(term);
                    st.terminated = None;
                    st.waiting = Some(("CrashLoopBackOff".into(), format!("back-off {}s restarting failed container", backoff.as_secs())));
                    next_start = Some(tokio::time::Instant::now() + backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                } else {
                    st.terminated = Some(term);
                    st.phase = if code == 0 { "Succeeded" } else { "Failed" };
                }
                patch_status(&pods, &name, &st.status_patch(&pod)).await;
            }
            _ = probe_tick.tick(), if proc.is_some() && probe.is_some() => {
                if let Some(p) = &probe {
                    let started = st.running_since.as_deref().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
                    let delay = p.initial_delay_seconds.unwrap_or(0) as i64;
                    if started.is_some_and(|s| (Utc::now() - s.with_timezone(&Utc)).num_seconds() < delay) { continue; }
                    let ok = run_probe(p, &container, &ip).await;
                    if ok { successes += 1; failures = 0; } else { failures += 1; successes = 0; }
                    let was = st.ready;
                    if ok && successes >= p.success_threshold.unwrap_or(1) { st.ready = true; }
                    if !ok && failures >= p.failure_threshold.unwrap_or(3) { st.ready = false; }
                    if st.ready != was {
                        info!(pod = %name, ready = st.ready, "readiness changed");
                        patch_status(&pods, &name, &st.status_patch(&pod)).await;
                    } else {
                        // As the kubelet's status manager does: put back a Ready condition someone
                        // else changed (the node lifecycle controller marks pods not ready while
                        // a fake node's heartbeat is late, and nobody marks them ready again).
                        resync += 1;
                        if resync.is_multiple_of(5) && api_ready(&pods, &name).await.is_some_and(|r| r != st.ready) {
                            info!(pod = %name, ready = st.ready, "restoring the Ready condition");
                            patch_status(&pods, &name, &st.status_patch(&pod)).await;
                        }
                    }
                }
            }
        }
    }
}

/// The pod's Ready condition as the apiserver has it.
async fn api_ready(pods: &Api<Pod>, name: &str) -> Option<bool> {
    let pod = pods.get_opt(name).await.ok()??;
    let ready = pod
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some(ready.status == "True")
}

async fn patch_status(pods: &Api<Pod>, name: &str, patch: &serde_json::Value) {
    if let Err(e) = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        // A pod removed meanwhile (namespace deletion, force delete) is not worth a warning.
        if matches!(&e, kube::Error::Api(s) if s.code == 404) {
            tracing::debug!(pod = %name, "pod gone before its status patch");
        } else {
            warn!(pod = %name, error = %e, "status patch failed");
        }
    }
}

async fn stop_proc(mut p: Proc, grace: Duration) {
    signal_group(p.pgid, "TERM").await;
    if tokio::time::timeout(grace, p.child.wait()).await.is_err() {
        signal_group(p.pgid, "KILL").await;
        let _ = p.child.wait().await;
    }
    // Children the process left in its group.
    signal_group(p.pgid, "KILL").await;
}

async fn run_probe(p: &Probe, c: &Container, ip: &str) -> bool {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    let port_of = |port: &IntOrString| -> Option<i32> {
        match port {
            IntOrString::Int(i) => Some(*i),
            IntOrString::String(n) => c
                .ports
                .as_ref()?
                .iter()
                .find(|cp| cp.name.as_deref() == Some(n.as_str()))
                .map(|cp| cp.container_port),
        }
    };
    if let Some(h) = &p.http_get {
        let Some(port) = port_of(&h.port) else {
            return false;
        };
        let host = h.host.clone().unwrap_or_else(|| ip.to_string());
        let scheme = h.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
        let url = format!(
            "{scheme}://{host}:{port}{}",
            h.path.as_deref().unwrap_or("/")
        );
        let Ok(client) = reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(true)
            .build()
        else {
            return false;
        };
        return client
            .get(url)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() >= 200 && r.status().as_u16() < 400);
    }
    if let Some(t) = &p.tcp_socket {
        let Some(port) = port_of(&t.port) else {
            return false;
        };
        let host = t.host.clone().unwrap_or_else(|| ip.to_string());
        return tokio::time::timeout(
            timeout,
            tokio::net::TcpStream::connect((host.as_str(), port as u16)),
        )
        .await
        .is_ok_and(|r| r.is_ok());
    }
    false
}

async fn termination_message(c: &Container, dir: &Path, code: i32) -> String {
    let mut msg = tokio::fs::read_to_string(dir.join("termination-log"))
        .await
        .unwrap_or_default();
    if msg.is_empty()
        && code != 0
        && c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError")
    {
        let log = tokio::fs::read_to_string(dir.join(format!("{}.log", c.name)))
            .await
            .unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        msg = lines[lines.len().saturating_sub(80)..].join("\n");
    }
    // The kubelet caps the message at 4096 bytes (2048 for the log fallback).
    let mut end = msg.len().min(4096);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    msg.truncate(end);
    msg
}

/// Resolves the container's environment like the kubelet (the parts the tests need).
async fn container_env(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    ip: &str,
) -> Result<BTreeMap<String, String>> {
    let ns = pod.namespace().unwrap_or_default();
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
    let cms: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &ns);
    let mut env = BTreeMap::new();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.secret_ref {
            if let Some(s) = secrets.get_opt(&r.name).await? {
                for (k, v) in s.data.unwrap_or_default() {
                    env.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v.0).into_owned(),
                    );
                }
            } else if r.optional != Some(true) {
                bail!("secret {} not found", r.name);
            }
        }
        if let Some(r) = &from.config_map_ref {
            if let Some(cm) = cms.get_opt(&r.name).await? {
                for (k, v) in cm.data.unwrap_or_default() {
                    env.insert(format!("{prefix}{k}"), v);
                }
            } else if r.optional != Some(true) {
                bail!("configmap {} not found", r.name);
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(vf) = &e.value_from {
            if let Some(f) = &vf.field_ref {
                let spec = pod.spec.as_ref();
                match f.field_path.as_str() {
                    "metadata.name" => pod.name_any(),
                    "metadata.namespace" => ns.clone(),
                    "metadata.uid" => pod.uid().unwrap_or_default(),
                    "status.podIP" => ip.to_string(),
                    "status.hostIP" => "127.0.0.1".into(),
                    "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
                    "spec.serviceAccountName" => spec
                        .and_then(|s| s.service_account_name.clone())
                        .unwrap_or_default(),
                    other => bail!("fieldRef {other} is not supported by the pod runner"),
                }
            } else if let Some(r) = &vf.secret_key_ref {
                let s = secrets.get_opt(&r.name).await?;
                match s.and_then(|s| s.data).and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => String::from_utf8_lossy(&v.0).into_owned(),
                    None if r.optional == Some(true) => continue,
                    None => bail!("secret key {}/{} not found", r.name, r.key),
                }
            } else if let Some(r) = &vf.config_map_key_ref {
                let cm = cms.get_opt(&r.name).await?;
                match cm.and_then(|c| c.data).and_then(|d| d.get(&r.key).cloned()) {
                    Some(v) => v,
                    None if r.optional == Some(true) => continue,
                    None => bail!("configmap key {}/{} not found", r.name, r.key),
                }
            } else {
                bail!(
                    "env {}: resourceFieldRef is not supported by the pod runner",
                    e.name
                )
            }
        } else {
            String::new()
        };
        env.insert(e.name.clone(), value);
    }
    env.entry("POD_IP".into()).or_insert_with(|| ip.to_string());
    Ok(env)
}

/// `$(VAR)` expansion as the kubelet does it; `$$` escapes, unknown references stay as they are.
fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let (Some(t), Some(end)) = (tail.strip_prefix("$("), tail.find(')')) {
            let var = &t[..end - 2];
            match env.get(var) {
                Some(v) => out.push_str(v),
                None => out.push_str(&tail[..=end]),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// Replaces each `from` path in `v` with its `to` where it appears as a whole path: at the start
/// or after a space, `=`, quote, `>` or `<`, and followed by the end, `/`, a space or a quote (so
/// `/data` is rewritten in `--dir=/data/x` or `sh -c 'ls /data'` but not in `http://host/data`).
fn rewrite_paths(v: &str, rewrites: &[(String, String)]) -> String {
    let mut out = String::with_capacity(v.len());
    let mut i = 0;
    'outer: while i < v.len() {
        let before_ok = i == 0 || v[..i].ends_with([' ', '=', '"', '\'', '>', '<']);
        if before_ok {
            for (from, to) in rewrites {
                if v[i..].starts_with(from.as_str()) {
                    let after = &v[i + from.len()..];
                    if after.is_empty() || after.starts_with(['/', ' ', '"', '\'', ';']) {
                        out.push_str(to);
                        i += from.len();
                        continue 'outer;
                    }
                }
            }
        }
        let Some(ch) = v[i..].chars().next() else {
            break;
        };
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// Gives each volume mount a directory under the pod's directory: emptyDir (and anything else)
/// starts empty, secret and configMap volumes hold one file per key. Returns the
/// (mountPath, local directory) pairs used to rewrite args and env values that start with a mount
/// path: a value `"/var/cache/modelfleet/x"` becomes `"<pod dir>/volumes/<name>/x"`.
async fn prepare_volumes(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    dir: &Path,
) -> Result<Vec<(String, String)>> {
    let ns = pod.namespace().unwrap_or_default();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    let mut out = vec![];
    for m in c.volume_mounts.iter().flatten() {
        let local = dir.join("volumes").join(&m.name);
        tokio::fs::create_dir_all(&local).await?;
        let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        if let Some(v) = volumes.iter().find(|v| v.name == m.name) {
            if let Some(sv) = &v.secret {
                let name = sv.secret_name.clone().unwrap_or_default();
                let api: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
                match api.get_opt(&name).await? {
                    Some(s) => files.extend(
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    ),
                    None if sv.optional == Some(true) => {}
                    None => bail!("secret {name} for volume {} not found", m.name),
                }
            }
            if let Some(cv) = &v.config_map {
                let api: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &ns);
                match api.get_opt(&cv.name).await? {
                    Some(cm) => files.extend(
                        cm.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    ),
                    None if cv.optional == Some(true) => {}
                    None => bail!("configmap {} for volume {} not found", cv.name, m.name),
                }
            }
        }
        for (k, v) in files {
            tokio::fs::write(local.join(k), v).await?;
        }
        let local = match &m.sub_path {
            Some(sp) if !sp.is_empty() => local.join(sp),
            _ => local,
        };
        out.push((m.mount_path.clone(), local.display().to_string()));
    }
    Ok(out)
}

/// Writes a kubeconfig holding a token of the pod's ServiceAccount, bound to the pod.
async fn service_account_kubeconfig(shared: &Shared, pod: &Pod, dir: &Path) -> Result<PathBuf> {
    let ns = pod.namespace().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(shared.client.clone(), &ns);
    let tr = TokenRequest {
        spec: Some(TokenRequestSpec {
            audiences: None,
            expiration_seconds: Some(24 * 3600),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        }),
        ..Default::default()
    };
    let token = api
        .create_token_request(&sa, &PostParams::default(), &tr)
        .await
        .with_context(|| format!("failed to request a token for serviceaccount {ns}/{sa}"))?
        .status
        .context("token request has no status")?
        .token;
    let ca = shared.ca_file.clone().unwrap_or_default();
    let kc = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": shared.apiserver, "certificate-authority": ca}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": sa, "namespace": ns}}],
        "current-context": "local",
    });
    let path = dir.join("kubeconfig");
    tokio::fs::write(&path, serde_json::to_vec_pretty(&kc)?).await?;
    Ok(path)
}

async fn start_proc(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    dir: &Path,
    ip: &str,
) -> Result<Proc> {
    let image = c.image.as_deref().unwrap_or_default();
    let iname = image_name(image);
    let mut env = container_env(shared, pod, c, ip).await?;
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    let (program, argv): (PathBuf, Vec<String>) = if iname == EXEC_IMAGE {
        let mut all = command.into_iter().chain(args);
        let program = all.next().context("modelfleet-exec pods need a command")?;
        (PathBuf::from(program), all.collect())
    } else {
        let bin = shared.bin_dir.join(iname);
        if !bin.exists() {
            bail!(
                "no local binary {} for image {image} (build it first)",
                bin.display()
            );
        }
        (bin, command.into_iter().skip(1).chain(args).collect())
    };
    // Paths the container sees that live elsewhere here: the termination message file and the
    // volume mounts (longest mount path first, so nested mounts win).
    let tm_file = dir.join("termination-log");
    let _ = tokio::fs::remove_file(&tm_file).await;
    let tm_path = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    let mut rewrites = vec![(tm_path, tm_file.display().to_string())];
    rewrites.extend(prepare_volumes(shared, pod, c, dir).await?);
    rewrites.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    let rewrite = |v: &str| rewrite_paths(v, &rewrites);
    for v in env.values_mut() {
        *v = rewrite(v);
    }
    let argv: Vec<String> = argv.iter().map(|a| rewrite(&expand(a, &env))).collect();
    if pod
        .spec
        .as_ref()
        .and_then(|s| s.automount_service_account_token)
        != Some(false)
    {
        let kc = service_account_kubeconfig(shared, pod, dir).await?;
        env.insert("KUBECONFIG".into(), kc.display().to_string());
    }
    env.insert(
        "MODELFLEET_TERMINATION_MESSAGE_PATH".into(),
        tm_file.display().to_string(),
    );
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.log", c.name)))?;
    let child = Command::new(&program)
        .args(&argv)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir)
        .envs(&env)
        .current_dir(
            c.working_dir
                .as_deref()
                .map(Path::new)
                .filter(|p| p.is_dir())
                .unwrap_or(dir),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("failed to start {}", program.display()))?;
    let pgid = child.id().context("child has no pid")? as i32;
    tokio::fs::write(dir.join("pid"), pgid.to_string()).await?;
    info!(pod = %pod.name_any(), program = %program.display(), ?argv, pgid, "started");
    Ok(Proc { child, pgid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rewritten_only_as_whole_paths() {
        let r = vec![
            ("/data/sub".to_string(), "/L/sub".to_string()),
            ("/data".to_string(), "/L".to_string()),
        ];
        assert_eq!(rewrite_paths("/data", &r), "/L");
        assert_eq!(rewrite_paths("--dir=/data/x", &r), "--dir=/L/x");
        assert_eq!(
            rewrite_paths("ls /data/sub/y; echo > /data", &r),
            "ls /L/sub/y; echo > /L"
        );
        assert_eq!(
            rewrite_paths("http://host/data/x", &r),
            "http://host/data/x"
        );
        assert_eq!(rewrite_paths("/database", &r), "/database");
    }

    #[test]
    fn expansion_follows_the_kubelet() {
        let env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        assert_eq!(expand("x$(A)y $(B) $$(A)", &env), "x1y $(B) $(A)");
    }

    #[test]
    fn image_names_drop_registry_and_tag() {
        assert_eq!(
            image_name("ghcr.io/modelfleet/modelfleet-runtime:0.1.0"),
            "modelfleet-runtime"
        );
        assert_eq!(
            image_name("localhost:5000/modelfleet-exec"),
            "modelfleet-exec"
        );
        assert_eq!(
            image_name("modelfleet-operator@sha256:abc"),
            "modelfleet-operator"
        );
    }
}
