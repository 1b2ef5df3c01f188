//! The ModelService controller: `observe → validate → build → apply → status`.
//!
//! Only `observe`, `apply` and the status patch talk to the apiserver; validation and the builders
//! are pure. Children are written with server-side apply under one field manager, so the
//! operator is the single writer of every field it sets (the Deployment's replica count
//! included) and never touches fields others own.

pub mod autoscaler;
pub mod observe;
pub mod status;
pub mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use modelfleet_crds::conditions::{self, reasons};
use modelfleet_crds::{FIELD_MANAGER, ModelService, ModelServiceStatus};
use serde_json::json;
use tracing::{Instrument, info, info_span, warn};

use crate::build::{self, INSTANCE_LABEL, NAME_LABEL, RUNTIME_NAME};
use crate::metrics::Metrics;
use validate::{Defaults, InvalidSpec, Replicas, Validated};

/// Failures of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Observe(#[from] observe::Error),
    #[error("failed to apply {kind} {name}")]
    Apply {
        kind: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to delete {kind} {name}")]
    Delete {
        kind: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("failed to patch the status of {0}")]
    Status(String, #[source] kube::Error),
    #[error("the ModelService has no namespace")]
    NoNamespace,
}

impl Error {
    /// A bounded label for metrics and the reason of the Warning event.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Observe(_) => "ObserveFailed",
            Self::Apply { .. } => "ApplyFailed",
            Self::Delete { .. } => "DeleteFailed",
            Self::Status(..) => "StatusPatchFailed",
            Self::NoNamespace => "NoNamespace",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub http: reqwest::Client,
    pub defaults: Defaults,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub sizes: observe::WeightSizes,
    /// Consecutive failures per object, for the backoff of `error_policy`.
    failures: Mutex<HashMap<ObjectRef<ModelService>, u32>>,
    /// The autoscaler's memory per ModelService (by uid).
    autoscalers: Mutex<HashMap<String, autoscaler::State>>,
    /// The autoscaler's clock starts here.
    started: Instant,
    /// What this process wrote about each ModelService (by uid), forgotten after an hour
    /// without a reconcile.
    written: Mutex<HashMap<String, Written>>,
}

/// What this process wrote about one ModelService. A reconcile right after a write may see a
/// cached object that does not show it yet.
#[derive(Debug)]
struct Written {
    /// When a reconcile last used this.
    touched: Instant,
    /// When status was last patched, to pace progress updates.
    patched: Option<Instant>,
    /// The `Ready` and `Stalled` (status, reason) last announced or seen: the same transition
    /// is not announced again.
    announced: Announced,
}

/// (status, reason) per condition type.
type Announced = HashMap<&'static str, (String, String)>;

impl Context {
    /// Runs `f` on what this process wrote about `uid`, forgetting ModelServices no reconcile
    /// touched for an hour; `None` when the lock is poisoned.
    fn written<T>(&self, uid: &str, f: impl FnOnce(&mut Written) -> T) -> Option<T> {
        let mut map = self.written.lock().ok()?;
        map.retain(|_, w| w.touched.elapsed() < Duration::from_secs(3600));
        let w = map.entry(uid.to_owned()).or_insert_with(|| Written {
            touched: Instant::now(),
            patched: None,
            announced: Announced::new(),
        });
        w.touched = Instant::now();
        Some(f(w))
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("defaults", &self.defaults)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for the controller.
    pub fn new(
        client: Client,
        defaults: Defaults,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Ok(Self {
            recorder: Recorder::new(client.clone(), reporter),
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(2))
                .build()?,
            client,
            defaults,
            metrics,
            sizes: observe::WeightSizes::default(),
            failures: Mutex::default(),
            autoscalers: Mutex::default(),
            started: Instant::now(),
            written: Mutex::default(),
        })
    }
}

/// Runs the controller until SIGTERM. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    ready: Arc<std::sync::atomic::AtomicBool>,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let services = scoped::<ModelService>(&client, ns);
    let deployments = scoped::<Deployment>(&client, ns);
    let svcs = scoped::<Service>(&client, ns);
    let pdbs = scoped::<PodDisruptionBudget>(&client, ns);
    let pods = scoped::<Pod>(&client, ns);
    let runtime_pods = watcher::Config::default().labels(&format!("{NAME_LABEL}={RUNTIME_NAME}"));
    let controller = Controller::new(services.clone(), watcher::Config::default().any_semantic());
    // Ready once ModelServices can be listed with our credentials: the controller's own cache
    // fills from the same list. (Waiting on the store's readiness from a second task would steal
    // the controller's wake-up: the store wakes only one waiter, and requeues then stall.)
    let probe = services.clone();
    tokio::spawn(async move {
        loop {
            match probe.list(&kube::api::ListParams::default().limit(1)).await {
                Ok(_) => {
                    ready.store(true, std::sync::atomic::Ordering::Relaxed);
                    info!("ModelServices listed: ready");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot list ModelServices yet");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
        }
    });
    controller
        .owns(deployments, watcher::Config::default())
        .owns(svcs, watcher::Config::default())
        .owns(pdbs, watcher::Config::default())
        // Pods belong to ReplicaSets, not to us: map them back through their instance label, so a
        // crash, a scheduling failure or a readiness change is seen at once.
        .watches(pods, runtime_pods, |pod: Pod| {
            let name = pod.labels().get(INSTANCE_LABEL)?.clone();
            Some(ObjectRef::new(&name).within(&pod.namespace()?))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                warn!(error = %crate::error_chain(&e), "reconcile failed");
            }
            futures::future::ready(())
        })
        .await;
}

/// An API over one namespace, or all of them.
fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

async fn reconcile(ms: Arc<ModelService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = ms.namespace().ok_or(Error::NoNamespace)?;
    let name = ms.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    let started = Instant::now();
    let result = reconcile_inner(&ms, &ctx, &ns, &name)
        .instrument(span)
        .await;
    ctx.metrics.observe_reconcile(
        started.elapsed(),
        result.as_ref().err().map(Error::category),
    );
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&ObjectRef::from(ms.as_ref()));
    }
    result
}

async fn reconcile_inner(
    ms: &ModelService,
    ctx: &Context,
    ns: &str,
    name: &str,
) -> Result<Action, Error> {
    let client = &ctx.client;

    // Observe.
    let weight_bytes = match ms
        .status
        .as_ref()
        .and_then(|s| s.model.as_ref())
        .and_then(|m| m.weight_bytes)
    {
        Some(b) => u64::try_from(b).ok(),
        None => ctx.sizes.get(&ctx.http, &ms.spec.model.uri).await,
    };
    // Validate.
    let mut validated = validate::validate(ms, &ctx.defaults, weight_bytes);
    let selector = match &validated {
        Ok(v) => build::selector_string(v),
        Err(_) => format!("{NAME_LABEL}={RUNTIME_NAME},{INSTANCE_LABEL}={name}"),
    };
    let mut observed = observe::children(client, ns, name, &selector).await?;

    // Autoscale: the policy's decision sets the replica count this reconcile applies.
    let uid = ms.metadata.uid.clone().unwrap_or_default();
    let mut scaler = None;
    if let Ok(v) = &mut validated
        && let Replicas::Autoscaled(scaling) = &v.replicas
    {
        let mut state = take_autoscaler(ctx, &uid);
        // This process's last applied count beats the status of a cached object that may not
        // show it yet (after a restart there is none, and status is the record).
        if let Some(a) = &state.applied {
            v.desired_replicas = a.replicas.clamp(scaling.min, scaling.max);
        }
        let current = v.desired_replicas;
        let learned = ms
            .status
            .as_ref()
            .and_then(|s| s.autoscaling.as_ref())
            .and_then(|a| a.learned.as_ref());
        state.restore(learned, ctx.started, scaling, v.max_concurrency);
        let tick = autoscaler::tick(
            &ctx.http,
            &mut state,
            ctx.started,
            scaling,
            v.max_concurrency,
            current,
            &observed.pods,
        )
        .await;
        if let Some(t) = &tick
            && t.changed
        {
            v.desired_replicas = i32::try_from(t.recommendation.desired).unwrap_or(current);
            info!(from = current, to = v.desired_replicas, reason = %t.recommendation.reason, "scaling");
        }
        scaler = Some((state, tick, current));
    } else {
        // Not autoscaled (any more): what the autoscaler remembered no longer holds.
        drop(take_autoscaler(ctx, &uid));
    }

    // Build and apply.
    if let Ok(v) = &validated
        && let Err(e) = apply(ctx, v, &mut observed).await
    {
        // Keep what the autoscaler learned; the decision it made was not applied.
        if let Some((mut state, tick, _)) = scaler {
            if tick.is_some_and(|t| t.changed) {
                state.forget_last_decision();
            }
            put_autoscaler(ctx, uid, state);
        }
        return Err(e);
    }
    let known = ms
        .status
        .as_ref()
        .and_then(|s| s.model.as_ref())
        .is_some_and(|m| m.quantization.is_some());
    // The autoscaler's tick may have read the header from the ready pods already.
    let header = scaler
        .as_mut()
        .and_then(|(state, _, _)| state.header.take());
    let with_model = !known && header.is_none();
    let (progress, model) = observe::scrape_runtimes(&ctx.http, &observed.pods, with_model).await;
    observed.progress = progress;
    if !known {
        observed.model = model.or(header);
    }

    // Status.
    // Whole seconds, as a Time is written (k8s-openapi serializes `%SZ`): a status that
    // remembers a finer one differs from what it reads back, and would be written again at
    // every reconcile.
    let wall = k8s_openapi::jiff::Timestamp::now();
    let now = Time(k8s_openapi::jiff::Timestamp::from_second(wall.as_second()).unwrap_or(wall));
    let mut new_status = status::compute(ms, validated.as_ref(), &observed, &now);
    if let Some((mut state, tick, current)) = scaler {
        let old = ms.status.as_ref();
        let applied = state.applied.take();
        let previous: Vec<Condition> = match &applied {
            Some(a) => a.conditions.clone(),
            None => old
                .map(|s| {
                    s.conditions
                        .iter()
                        .filter(|c| autoscaler::is_autoscaler_condition(c))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        };
        let previous_status = match applied {
            Some(a) => a.status,
            None => old.and_then(|s| s.autoscaling.clone()),
        };
        match &tick {
            Some(t) => {
                new_status.autoscaling = Some(autoscaler::status(
                    &mut state,
                    previous_status.as_ref(),
                    t,
                    current,
                    &now,
                ));
                new_status.conditions.extend(autoscaler::conditions_after(
                    &previous,
                    t,
                    ms.metadata.generation,
                    &now,
                ));
            }
            None => {
                new_status.autoscaling = previous_status;
                new_status.conditions.extend(previous);
            }
        }
        if let Ok(v) = &validated {
            state.applied = Some(autoscaler::Applied {
                replicas: v.desired_replicas,
                status: new_status.autoscaling.clone(),
                conditions: new_status
                    .conditions
                    .iter()
                    .filter(|c| autoscaler::is_autoscaler_condition(c))
                    .cloned()
                    .collect(),
            });
        }
        put_autoscaler(ctx, uid.clone(), state);
        if let (Some(t), Ok(v)) = (&tick, &validated)
            && t.changed
        {
            publish_scaling(
                ctx,
                ms,
                current,
                v.desired_replicas,
                &t.recommendation.reason,
            )
            .await;
        }
    }
    publish_transitions(ctx, ms, &uid, &new_status).await;
    let progress_only = ms
        .status
        .as_ref()
        .is_some_and(|old| without_progress(old) == without_progress(&new_status));
    let throttled = progress_only && recently_patched(ctx, &uid, PROGRESS_INTERVAL);
    if ms.status.as_ref() != Some(&new_status) && !throttled {
        mark_patched(ctx, &uid);
        tracing::debug!(changed = %status_diff(ms.status.as_ref(), &new_status), "patching status");
        let api: Api<ModelService> = Api::namespaced(client.clone(), ns);
        ctx.metrics.count_write("ModelServiceStatus");
        api.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": merge_patch(
                &serde_json::to_value(&ms.status).unwrap_or_default(),
                json!(new_status),
            ) })),
        )
        .await
        .map_err(|e| Error::Status(name.to_owned(), e))?;
    }

    Ok(
        match (&validated, is_true(&new_status, conditions::READY)) {
            // A permanent error: wait for the user to change the spec.
            (Err(InvalidSpec(_)), _) => Action::await_change(),
            // The autoscaler looks at the metrics every few seconds.
            (Ok(v), _) if matches!(v.replicas, Replicas::Autoscaled(_)) => {
                Action::requeue(autoscaler::SCRAPE_INTERVAL)
            }
            // Cold start under way: poll progress.
            (Ok(_), false) => Action::requeue(Duration::from_secs(5)),
            (Ok(_), true) => Action::requeue(Duration::from_secs(120)),
        },
    )
}

/// Download progress alone is written at most this often: each status write triggers a
/// reconcile, which would otherwise write the next few megabytes at once, in a loop.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The status without what changes while bytes arrive (byte counts and the messages that quote
/// them), to tell a progress update from a real change.
fn without_progress(s: &ModelServiceStatus) -> ModelServiceStatus {
    let mut s = s.clone();
    if let Some(w) = &mut s.weights {
        w.bytes_done = 0;
    }
    for c in &mut s.conditions {
        if c.reason == reasons::DOWNLOADING {
            c.message.clear();
        }
    }
    s
}

fn recently_patched(ctx: &Context, uid: &str, within: Duration) -> bool {
    ctx.written(uid, |w| w.patched.is_some_and(|t| t.elapsed() < within))
        .unwrap_or(false)
}

fn mark_patched(ctx: &Context, uid: &str) {
    ctx.written(uid, |w| w.patched = Some(Instant::now()));
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: `new`, with a null for every
/// field `old` has and `new` leaves out. Status fields that are `None` are not serialized, and
/// a merge patch without them leaves the old values in place (an idle service kept its last
/// p95, differed from what the operator computed, and was written again at every reconcile).
/// `old` is the cached object: a field it does not show yet survives until the next reconcile
/// sees it and removes it.
fn merge_patch(old: &serde_json::Value, new: serde_json::Value) -> serde_json::Value {
    match (old.as_object(), new) {
        (Some(old), serde_json::Value::Object(mut new)) => {
            for (key, was) in old {
                let now = match new.remove(key) {
                    Some(now) => merge_patch(was, now),
                    None => serde_json::Value::Null,
                };
                new.insert(key.clone(), now);
            }
            serde_json::Value::Object(new)
        }
        (_, new) => new,
    }
}

/// Which top-level status fields and conditions differ, for the debug log.
fn status_diff(old: Option<&ModelServiceStatus>, new: &ModelServiceStatus) -> String {
    let old = serde_json::to_value(old.cloned().unwrap_or_default()).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        return String::new();
    };
    let mut keys: Vec<_> = o.keys().chain(n.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| o.get(*k) != n.get(*k))
        .map(|k| {
            format!(
                "{k}: {} -> {}",
                o.get(k).map(|v| v.to_string()).unwrap_or_default(),
                n.get(k).map(|v| v.to_string()).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Takes the autoscaler state of a ModelService out of the context (a reconcile owns it while it
/// scrapes, without holding a lock), forgetting states no reconcile touched for an hour.
fn take_autoscaler(ctx: &Context, uid: &str) -> autoscaler::State {
    let Ok(mut map) = ctx.autoscalers.lock() else {
        return autoscaler::State::default();
    };
    map.retain(|_, s| {
        s.touched
            .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
    });
    map.remove(uid).unwrap_or_default()
}

fn put_autoscaler(ctx: &Context, uid: String, mut state: autoscaler::State) {
    state.touched = Some(Instant::now());
    if let Ok(mut map) = ctx.autoscalers.lock() {
        map.insert(uid, state);
    }
}

/// Annotation holding a digest of what the operator last applied to a child. When the built
/// child has the same digest, the apply is skipped: an idle operator makes no write at all.
pub const APPLIED_DIGEST: &str = "modelfleet.dev/applied-digest";

/// Applies every child that differs from what was last applied, with server-side apply, and
/// records what the apiserver stored in `observed`.
async fn apply(
    ctx: &Context,
    v: &Validated,
    observed: &mut observe::Observed,
) -> Result<(), Error> {
    let client = &ctx.client;
    let ns = &v.namespace;
    let deployment = build::deployment::deployment(v);
    if let Some(d) = apply_child(
        ctx,
        Api::namespaced(client.clone(), ns),
        deployment,
        observed.deployment.as_ref(),
    )
    .await?
    {
        observed.deployment = Some(d);
    }
    let service = build::service::service(v);
    if let Some(s) = apply_child(
        ctx,
        Api::namespaced(client.clone(), ns),
        service,
        observed.service.as_ref(),
    )
    .await?
    {
        observed.service = Some(s);
    }
    match build::pdb::pdb(v) {
        Some(pdb) => {
            if let Some(p) = apply_child(
                ctx,
                Api::namespaced(client.clone(), ns),
                pdb,
                observed.pdb.as_ref(),
            )
            .await?
            {
                observed.pdb = Some(p);
            }
        }
        None if observed.pdb.is_some() => {
            let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
            ctx.metrics.count_write("PodDisruptionBudget");
            match pdbs.delete(&v.name, &DeleteParams::default()).await {
                Ok(_) => info!("deleted the PodDisruptionBudget: one replica left"),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => {
                    return Err(Error::Delete {
                        kind: "PodDisruptionBudget",
                        name: v.name.clone(),
                        source,
                    });
                }
            }
            observed.pdb = None;
        }
        None => {}
    }
    Ok(())
}

/// Applies `desired` unless `existing` carries the same digest; returns the stored object when
/// it applied.
async fn apply_child<K>(
    ctx: &Context,
    api: Api<K>,
    mut desired: K,
    existing: Option<&K>,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()>
        + serde::Serialize
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let digest = digest(&desired);
    let current =
        existing.and_then(|e| e.meta().annotations.as_ref()?.get(APPLIED_DIGEST).cloned());
    if current.as_deref() == Some(digest.as_str()) {
        return Ok(None);
    }
    let name = desired.meta().name.clone().unwrap_or_default();
    desired
        .meta_mut()
        .annotations
        .get_or_insert_with(Default::default)
        .insert(APPLIED_DIGEST.into(), digest);
    let kind = K::kind(&()).into_owned();
    ctx.metrics.count_write(&kind);
    let stored = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(with_type(desired)),
        )
        .await
        .map_err(|source| Error::Apply { kind, name, source })?;
    Ok(Some(stored))
}

/// A digest of a built child: the first 16 hex digits of the SHA-256 of its JSON (field order is
/// fixed by the types, so equal objects give equal digests).
fn digest<K: serde::Serialize>(obj: &K) -> String {
    use sha2::Digest;
    let bytes = serde_json::to_vec(obj).unwrap_or_default();
    hex::encode(&sha2::Sha256::digest(&bytes)[..8])
}

/// Server-side apply needs `apiVersion` and `kind` in the body.
fn with_type<K: Resource<DynamicType = ()> + serde::Serialize>(obj: K) -> serde_json::Value {
    let mut value = serde_json::to_value(&obj).unwrap_or_default();
    value["apiVersion"] = json!(K::api_version(&()));
    value["kind"] = json!(K::kind(&()));
    value
}

fn is_true(s: &ModelServiceStatus, type_: &str) -> bool {
    s.conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// The `Ready`, `Stalled` and `ScalingLimited` conditions of `new` to announce: those whose
/// status or reason differs from what was last announced, or, where nothing was, from the old
/// status. Stalled going False is implied by Ready's own event; ScalingLimited going False is
/// the next ScaledDown or nothing to say. Records `new` in `announced`.
fn transitions<'a>(
    old: Option<&ModelServiceStatus>,
    new: &'a ModelServiceStatus,
    announced: &mut Announced,
) -> Vec<(&'static str, &'a Condition)> {
    let mut out = Vec::new();
    for type_ in [
        conditions::READY,
        conditions::STALLED,
        conditions::SCALING_LIMITED,
    ] {
        let Some(after) = new.conditions.iter().find(|c| c.type_ == type_) else {
            continue;
        };
        let now = (after.status.clone(), after.reason.clone());
        let before = announced.insert(type_, now.clone()).or_else(|| {
            old.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
                .map(|c| (c.status.clone(), c.reason.clone()))
        });
        if before.as_ref() == Some(&now)
            || ([conditions::STALLED, conditions::SCALING_LIMITED].contains(&type_)
                && after.status == "False")
        {
            continue;
        }
        out.push((type_, after));
    }
    out
}

/// An Event for each change of `Ready` or `Stalled`, and for `ScalingLimited` turning True, with
/// the condition's reason and message.
async fn publish_transitions(
    ctx: &Context,
    ms: &ModelService,
    uid: &str,
    new: &ModelServiceStatus,
) {
    let Some(changed) = ctx.written(uid, |w| {
        transitions(ms.status.as_ref(), new, &mut w.announced)
            .into_iter()
            .map(|(t, c)| (t, c.clone()))
            .collect::<Vec<_>>()
    }) else {
        return;
    };
    for (type_, after) in changed {
        let warning = ([conditions::STALLED, conditions::SCALING_LIMITED].contains(&type_)
            && after.status == "True")
            || (type_ == conditions::READY
                && after.status == "False"
                && after.reason == reasons::INVALID_SPEC);
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: after.reason.clone(),
            note: Some(if after.message.is_empty() {
                format!("{type_} is {}", after.status)
            } else {
                after.message.clone()
            }),
            action: format!("{type_}{}", after.status),
            secondary: None,
        };
        ctx.metrics.count_write("Event");
        if let Err(e) = ctx.recorder.publish(&event, &ms.object_ref(&())).await {
            warn!(error = %e, "failed to publish an event");
        }
    }
}

/// An Event for each change of the replica count by the autoscaler, with the policy's reason.
async fn publish_scaling(ctx: &Context, ms: &ModelService, from: i32, to: i32, why: &str) {
    let event = Event {
        type_: EventType::Normal,
        reason: if to > from {
            reasons::SCALED_UP
        } else {
            reasons::SCALED_DOWN
        }
        .to_owned(),
        note: Some(scaling_note(from, to, why)),
        action: "Scale".to_owned(),
        secondary: None,
    };
    ctx.metrics.count_write("Event");
    if let Err(e) = ctx.recorder.publish(&event, &ms.object_ref(&())).await {
        warn!(error = %e, "failed to publish an event");
    }
}

/// The note of a scaling Event, cut to the 1 kB the API accepts.
fn scaling_note(from: i32, to: i32, why: &str) -> String {
    let mut note = format!("{from} -> {to} replicas: {why}");
    if note.len() > 1024 {
        let mut end = 1021;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
        note.push_str("...");
    }
    note
}

/// Sorts failures: an invalid spec is reported in status by `reconcile` and waits for a change;
/// everything else is transient and retried with exponential backoff (1 s doubling to 5 min).
fn error_policy(ms: Arc<ModelService>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempts = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(ObjectRef::from(ms.as_ref())).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    let delay = Duration::from_secs(1u64 << attempts.min(9).saturating_sub(1))
        .min(Duration::from_secs(300));
    warn!(
        namespace = ms.namespace().unwrap_or_default(),
        name = ms.name_any(),
        category = error.category(),
        error = %crate::error_chain(error),
        retry_in = ?delay,
        "reconcile failed"
    );
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::{
        Announced, ModelServiceStatus, conditions, merge_patch, reasons, scaling_note, status,
        transitions,
    };
    use serde_json::json;

    #[test]
    fn a_status_patch_removes_what_the_new_status_leaves_out() {
        let old = json!({
            "replicas": 2,
            "autoscaling": {
                "observedP95": "1.26s",
                "observedRequestRate": "0.85",
                "lastDecisions": [{"to": 2}],
            },
            "model": {"quantization": "Q4_1"},
        });
        let new = json!({
            "replicas": 2,
            "autoscaling": {"observedRequestRate": "0.00", "lastDecisions": [{"to": 1}]},
        });
        assert_eq!(
            merge_patch(&old, new),
            json!({
                "replicas": 2,
                "autoscaling": {
                    "observedP95": null,
                    "observedRequestRate": "0.00",
                    "lastDecisions": [{"to": 1}],
                },
                "model": null,
            })
        );
        // Nothing before: the new status as it is.
        let first = json!({"replicas": 1});
        assert_eq!(merge_patch(&serde_json::Value::Null, first.clone()), first);
    }

    fn with(conds: &[(&str, bool, &str)]) -> ModelServiceStatus {
        ModelServiceStatus {
            conditions: conds
                .iter()
                .map(|(t, ok, r)| status::condition(t, *ok, r, ""))
                .collect(),
            ..ModelServiceStatus::default()
        }
    }

    /// The type and reason of each announced transition.
    fn types_and_reasons<'a>(
        announced: &[(&'static str, &'a super::Condition)],
    ) -> Vec<(&'static str, &'a str)> {
        announced
            .iter()
            .map(|(t, c)| (*t, c.reason.as_str()))
            .collect()
    }

    #[test]
    fn a_transition_is_announced_once_even_when_the_cache_is_stale() {
        let loading = with(&[
            (conditions::READY, false, reasons::LOADING),
            (conditions::STALLED, false, reasons::LOADING),
        ]);
        let ready = with(&[
            (conditions::READY, true, reasons::AVAILABLE),
            (conditions::STALLED, false, reasons::AVAILABLE),
        ]);
        let mut announced = Announced::new();
        let first = transitions(Some(&loading), &ready, &mut announced);
        assert_eq!(
            types_and_reasons(&first),
            [(conditions::READY, reasons::AVAILABLE)]
        );
        // The next reconcile sees a cached object from before the patch: nothing new.
        assert!(transitions(Some(&loading), &ready, &mut announced).is_empty());
        // A real change is announced, with a fresh memory (after a restart) from the status.
        let stalled = with(&[
            (conditions::READY, false, reasons::RUNTIME_FAILED),
            (conditions::STALLED, true, reasons::RUNTIME_FAILED),
        ]);
        assert_eq!(transitions(Some(&ready), &stalled, &mut announced).len(), 2);
        assert_eq!(
            transitions(Some(&ready), &stalled, &mut Announced::new()).len(),
            2
        );
        assert!(transitions(Some(&stalled), &stalled, &mut Announced::new()).is_empty());
    }

    #[test]
    fn reaching_the_maximum_is_announced_and_leaving_it_is_not() {
        let within = with(&[(conditions::SCALING_LIMITED, false, reasons::WITHIN_MAXIMUM)]);
        let limited = with(&[(
            conditions::SCALING_LIMITED,
            true,
            reasons::TOO_MANY_REPLICAS,
        )]);
        let mut announced = Announced::new();
        let reached = transitions(Some(&within), &limited, &mut announced);
        assert_eq!(
            types_and_reasons(&reached),
            [(conditions::SCALING_LIMITED, reasons::TOO_MANY_REPLICAS)]
        );
        assert!(transitions(Some(&limited), &within, &mut announced).is_empty());
        // Reaching it again is news again.
        assert_eq!(
            transitions(Some(&within), &limited, &mut announced).len(),
            1
        );
    }

    #[test]
    fn a_scaling_note_says_both_counts_and_fits_the_api() {
        assert_eq!(
            scaling_note(1, 2, "p95 5s above objective 4s"),
            "1 -> 2 replicas: p95 5s above objective 4s"
        );
        // A long reason of multi-byte characters is cut on a character boundary, under 1 kB.
        let note = scaling_note(2, 1, &"≈".repeat(600));
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(note.starts_with("2 -> 1 replicas: ≈") && note.ends_with("≈..."));
    }
}
