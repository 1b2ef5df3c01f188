//! Status: a pure function from what was validated, applied and observed to the ModelService's
//! status. It tells the truth at every moment: conditions follow kstatus, a failure carries the
//! runtime's own words, and `lastTransitionTime` only moves when a condition's status does.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use modelfleet_crds::conditions::{self, reasons};
use modelfleet_crds::{ModelInfo, ModelService, ModelServiceStatus, WeightsPhase, WeightsStatus};

use super::observe::{Observed, RuntimeProgress};
use super::validate::{InvalidSpec, Validated};
use crate::build::CONTAINER_NAME;

/// Why a ModelService cannot make progress without a change from its user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stall {
    pub reason: &'static str,
    pub message: String,
}

/// Computes the status. `validated` is the spec after validation (or why it is invalid).
pub fn compute(
    ms: &ModelService,
    validated: Result<&Validated, &InvalidSpec>,
    observed: &Observed,
    now: &Time,
) -> ModelServiceStatus {
    let old = ms.status.clone().unwrap_or_default();
    let generation = ms.metadata.generation;
    let dep_status = observed.deployment.as_ref().and_then(|d| d.status.clone());
    let replicas = dep_status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
    let ready = dep_status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);

    let v = match validated {
        Ok(v) => v,
        Err(invalid) => {
            let stall = Stall {
                reason: reasons::INVALID_SPEC,
                message: invalid.0.clone(),
            };
            let conds = vec![
                cond(
                    conditions::READY,
                    false,
                    reasons::INVALID_SPEC,
                    &stall.message,
                ),
                cond(
                    conditions::STALLED,
                    true,
                    reasons::INVALID_SPEC,
                    &stall.message,
                ),
                cond(
                    conditions::RECONCILING,
                    false,
                    reasons::INVALID_SPEC,
                    "waiting for a change to the spec",
                ),
                cond(
                    conditions::PROGRESSING,
                    false,
                    reasons::INVALID_SPEC,
                    "waiting for a change to the spec",
                ),
            ];
            return ModelServiceStatus {
                observed_generation: generation,
                replicas,
                ready_replicas: ready,
                conditions: merge_conditions(&old.conditions, conds, generation, now),
                ..old
            };
        }
    };

    let desired = v.desired_replicas;
    let rolled_out = observed
        .deployment
        .as_ref()
        .is_some_and(|d| rollout_complete(d, desired));
    let stall = runtime_failure(&observed.pods)
        .or_else(|| unschedulable(&observed.pods))
        .filter(|_| ready < desired);
    let serving = ready >= desired && rolled_out;
    let weights = weights(observed, stall.as_ref(), ready, desired, v.weight_bytes);

    let mut conds = Vec::with_capacity(5);
    match (&stall, serving) {
        (Some(s), _) => {
            conds.push(cond(conditions::READY, false, s.reason, &s.message));
            conds.push(cond(conditions::STALLED, true, s.reason, &s.message));
            conds.push(cond(
                conditions::RECONCILING,
                false,
                s.reason,
                "waiting for a change to the spec or the cluster",
            ));
        }
        (None, true) => {
            let msg = format!("{ready}/{desired} replicas ready");
            conds.push(cond(conditions::READY, true, reasons::AVAILABLE, &msg));
            conds.push(cond(conditions::STALLED, false, reasons::RECONCILED, ""));
            conds.push(cond(
                conditions::RECONCILING,
                false,
                reasons::RECONCILED,
                "",
            ));
        }
        (None, false) => {
            let (reason, msg) = match weights.phase {
                WeightsPhase::Downloading => (
                    reasons::DOWNLOADING,
                    format!(
                        "downloading the weights: {} of {}",
                        human(weights.bytes_done),
                        weights.bytes_total.map_or("?".to_owned(), human)
                    ),
                ),
                WeightsPhase::Verifying | WeightsPhase::Loading => (
                    reasons::LOADING,
                    "verifying and loading the weights".to_owned(),
                ),
                _ if observed.deployment.is_none() => (
                    reasons::APPLYING,
                    "creating the runtime Deployment".to_owned(),
                ),
                _ => (
                    reasons::REPLICAS_NOT_READY,
                    format!("{ready}/{desired} replicas ready"),
                ),
            };
            conds.push(cond(conditions::READY, false, reason, &msg));
            conds.push(cond(conditions::STALLED, false, reasons::RECONCILED, ""));
            conds.push(cond(conditions::RECONCILING, true, reason, &msg));
        }
    }
    conds.push(match (ready > 0, &stall) {
        (true, _) => cond(
            conditions::WEIGHTS_AVAILABLE,
            true,
            reasons::LOADED,
            "at least one replica serves the weights",
        ),
        (false, Some(s)) => cond(conditions::WEIGHTS_AVAILABLE, false, s.reason, &s.message),
        (false, None) => cond(
            conditions::WEIGHTS_AVAILABLE,
            false,
            reasons::LOADING,
            "no replica has loaded the weights yet",
        ),
    });
    conds.push(if rolled_out {
        cond(
            conditions::PROGRESSING,
            false,
            reasons::ROLLED_OUT,
            "the Deployment matches the spec",
        )
    } else {
        cond(
            conditions::PROGRESSING,
            true,
            reasons::ROLLING_OUT,
            &format!("rolling out to {desired} replicas"),
        )
    });

    ModelServiceStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        desired_replicas: Some(desired),
        selector: Some(crate::build::selector_string(v)),
        weights: Some(weights),
        model: model_info(
            observed.model.clone(),
            old.model.clone().or_else(|| {
                v.weight_bytes.map(|b| ModelInfo {
                    weight_bytes: i64::try_from(b).ok(),
                    ..Default::default()
                })
            }),
        ),
        conditions: merge_conditions(&old.conditions, conds, generation, now),
        autoscaling: old.autoscaling,
    }
}

/// The model a header read from a runtime pod describes, with what was known before where it
/// says nothing: a pod that is still loading publishes its header before the size of its
/// weights, and the size from the store's HEAD request must not be lost to it.
fn model_info(header: Option<ModelInfo>, known: Option<ModelInfo>) -> Option<ModelInfo> {
    let Some(known) = known else {
        return header;
    };
    let Some(h) = header else {
        return Some(known);
    };
    Some(ModelInfo {
        quantization: h.quantization.or(known.quantization),
        weight_bytes: h.weight_bytes.or(known.weight_bytes),
        architecture: h.architecture.or(known.architecture),
        parameter_count: h.parameter_count.or(known.parameter_count),
        context_length: h.context_length.or(known.context_length),
    })
}

/// Whether the Deployment has caught up with the spec we applied.
fn rollout_complete(d: &Deployment, desired: i32) -> bool {
    let Some(s) = &d.status else { return false };
    let observed = s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    observed
        && s.updated_replicas.unwrap_or(0) >= desired
        && s.replicas.unwrap_or(0) == desired
        && s.available_replicas.unwrap_or(0) >= desired
}

/// The most recent failure the runtime reported by exiting, in its own words.
pub fn runtime_failure(pods: &[Pod]) -> Option<Stall> {
    let mut latest: Option<(&ContainerStateTerminated, &str)> = None;
    for pod in pods {
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref());
        for cs in statuses
            .into_iter()
            .flatten()
            .filter(|c| c.name == CONTAINER_NAME)
        {
            let terminated = [
                cs.state.as_ref().and_then(|s| s.terminated.as_ref()),
                cs.last_state.as_ref().and_then(|s| s.terminated.as_ref()),
            ];
            for t in terminated
                .into_iter()
                .flatten()
                .filter(|t| t.exit_code != 0)
            {
                let newer = latest.is_none_or(|(l, _)| t.finished_at > l.finished_at);
                if newer {
                    latest = Some((t, pod.metadata.name.as_deref().unwrap_or_default()));
                }
            }
        }
    }
    let (t, pod) = latest?;
    let words = t
        .message
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(|m| last_line(m).to_owned())
        .unwrap_or_else(|| format!("exited with code {}", t.exit_code));
    Some(Stall {
        reason: classify(&words),
        message: truncate(&format!("runtime in pod {pod}: {words}"), 1024),
    })
}

/// The runtime's last line is its error chain; earlier lines (when the kubelet fell back to logs)
/// are context.
fn last_line(m: &str) -> &str {
    m.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(m)
        .trim()
}

/// Maps the runtime's words to a stable reason. The runtime names what went wrong in its error
/// messages ("digest", "quantization", "GGUF"); anything else is a generic runtime failure.
pub fn classify(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if m.contains("digest") || m.contains("sha256") || m.contains("sha-256") {
        reasons::DIGEST_MISMATCH
    } else if m.contains("quantization") {
        reasons::QUANTIZATION_MISMATCH
    } else if m.contains("gguf")
        || m.contains("truncated")
        || m.contains("corrupt")
        || m.contains("download")
        || m.contains("fetch")
        || m.contains("weights")
    {
        reasons::WEIGHTS_UNREADABLE
    } else {
        reasons::RUNTIME_FAILED
    }
}

/// A pod the scheduler cannot place, with the scheduler's message.
pub fn unschedulable(pods: &[Pod]) -> Option<Stall> {
    pods.iter().find_map(|p| {
        let c = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?;
        Some(Stall {
            reason: reasons::UNSCHEDULABLE,
            message: truncate(
                &format!(
                    "pod {} cannot be scheduled: {}",
                    p.metadata.name.as_deref().unwrap_or_default(),
                    c.message.as_deref().unwrap_or("no reason given")
                ),
                1024,
            ),
        })
    })
}

fn weights(
    observed: &Observed,
    stall: Option<&Stall>,
    ready: i32,
    desired: i32,
    known_size: Option<u64>,
) -> WeightsStatus {
    let weight_failure = stall.is_some_and(|s| {
        [
            reasons::DIGEST_MISMATCH,
            reasons::WEIGHTS_UNREADABLE,
            reasons::QUANTIZATION_MISMATCH,
        ]
        .contains(&s.reason)
    });
    let total = known_size.and_then(|b| i64::try_from(b).ok());
    if weight_failure {
        return WeightsStatus {
            phase: WeightsPhase::Failed,
            bytes_done: 0,
            bytes_total: total,
        };
    }
    // The replica furthest from serving decides the phase a user waits on.
    let slowest = observed
        .progress
        .iter()
        .min_by(|a, b| a.fraction().total_cmp(&b.fraction()));
    match slowest {
        Some(p) => WeightsStatus {
            phase: p.phase(),
            bytes_done: i64::try_from(p.fetch_done).unwrap_or(i64::MAX),
            bytes_total: p.fetch_total.and_then(|t| i64::try_from(t).ok()).or(total),
        },
        None if ready > 0 && ready >= desired => WeightsStatus {
            phase: WeightsPhase::Ready,
            bytes_done: total.unwrap_or(0),
            bytes_total: total,
        },
        None => WeightsStatus {
            phase: if ready > 0 {
                WeightsPhase::Ready
            } else {
                WeightsPhase::Pending
            },
            bytes_done: if ready > 0 { total.unwrap_or(0) } else { 0 },
            bytes_total: total,
        },
    }
}

impl RuntimeProgress {
    /// How far this replica is from serving, 0 to 1 (download then load).
    pub fn fraction(&self) -> f64 {
        let total = self.fetch_total.unwrap_or(0).max(1) as f64;
        let fetched = (self.fetch_done as f64 / total).min(1.0);
        let loaded = if self.load_total > 0 {
            (self.load_done as f64 / self.load_total as f64).min(1.0)
        } else {
            0.0
        };
        (fetched + loaded) / 2.0
    }

    /// The phase this replica is in.
    pub fn phase(&self) -> WeightsPhase {
        match self.fetch_total {
            _ if self.ready => WeightsPhase::Ready,
            Some(t) if self.fetch_done < t => WeightsPhase::Downloading,
            None if self.fetch_done == 0 && self.load_total == 0 => WeightsPhase::Pending,
            None if self.load_total == 0 => WeightsPhase::Downloading,
            _ if self.load_total == 0 => WeightsPhase::Verifying,
            _ => WeightsPhase::Loading,
        }
    }
}

/// A condition of `type_`, before [`merge_conditions`] stamps it.
pub fn condition(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    cond(type_, status, reason, message)
}

fn cond(type_: &str, status: bool, reason: &str, message: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.to_owned(),
        last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        observed_generation: None,
    }
}

/// Stamps each new condition with the generation, and keeps the old `lastTransitionTime` when the
/// condition's status did not change.
pub fn merge_conditions(
    old: &[Condition],
    new: Vec<Condition>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    new.into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
                .map_or_else(|| now.clone(), |o| o.last_transition_time.clone());
            c
        })
        .collect()
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max - 3;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

fn human(b: i64) -> String {
    super::validate::human_bytes(u64::try_from(b).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStatus, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;
    use crate::build::fixtures::{CPU, validated};

    fn ms() -> ModelService {
        let mut ms: ModelService = serde_yaml::from_str(CPU).expect("sample");
        ms.metadata.generation = Some(3);
        ms
    }

    fn t(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).expect("time"))
    }

    #[test]
    fn a_header_without_the_size_keeps_the_size_known_before() {
        // A loading pod publishes its header before the size of its weights.
        let header = ModelInfo {
            quantization: Some("Q4_1".to_owned()),
            architecture: Some("llama".to_owned()),
            ..ModelInfo::default()
        };
        let sized = ModelInfo {
            weight_bytes: Some(98_000_000),
            ..ModelInfo::default()
        };
        let m = model_info(Some(header.clone()), Some(sized)).expect("model");
        assert_eq!(m.quantization.as_deref(), Some("Q4_1"));
        assert_eq!(m.weight_bytes, Some(98_000_000));
        // What the header says wins; nothing known, the header alone; no header, what was known.
        let bigger = ModelInfo {
            weight_bytes: Some(99_000_000),
            ..header.clone()
        };
        assert_eq!(
            model_info(Some(bigger.clone()), Some(m.clone())),
            Some(bigger)
        );
        assert_eq!(model_info(Some(header.clone()), None), Some(header));
        assert_eq!(model_info(None, Some(m.clone())), Some(m));
    }

    fn deployment(replicas: i32, ready: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(1),
                ..ObjectMeta::default()
            },
            status: Some(DeploymentStatus {
                observed_generation: Some(1),
                replicas: Some(replicas),
                updated_replicas: Some(replicas),
                ready_replicas: Some(ready),
                available_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    fn get<'a>(s: &'a ModelServiceStatus, t: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == t)
            .expect("condition")
    }

    fn crashed_pod(message: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("smollm2-abc".into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER_NAME.into(),
                    last_state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 1,
                            message: Some(message.into()),
                            finished_at: Some(t(100)),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn ready_when_every_desired_replica_is() {
        let ms = ms();
        let v = validated(CPU);
        let obs = Observed {
            deployment: Some(deployment(1, 1)),
            ..Observed::default()
        };
        let s = compute(&ms, Ok(&v), &obs, &t(10));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.ready_replicas, 1);
        assert_eq!(s.desired_replicas, Some(1));
        assert_eq!(get(&s, conditions::READY).status, "True");
        assert_eq!(get(&s, conditions::RECONCILING).status, "False");
        assert_eq!(get(&s, conditions::STALLED).status, "False");
        assert_eq!(get(&s, conditions::WEIGHTS_AVAILABLE).status, "True");
        assert_eq!(get(&s, conditions::READY).observed_generation, Some(3));
        assert_eq!(
            s.weights.as_ref().map(|w| w.phase),
            Some(WeightsPhase::Ready)
        );
    }

    #[test]
    fn not_ready_while_replicas_load_and_reconciling_says_so() {
        let v = validated(CPU);
        let obs = Observed {
            deployment: Some(deployment(1, 0)),
            progress: vec![RuntimeProgress {
                fetch_done: 40 << 20,
                fetch_total: Some(94 << 20),
                ..RuntimeProgress::default()
            }],
            ..Observed::default()
        };
        let s = compute(&ms(), Ok(&v), &obs, &t(10));
        let ready = get(&s, conditions::READY);
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::DOWNLOADING)
        );
        assert!(
            ready.message.contains("40.0 MiB of 94.0 MiB"),
            "{}",
            ready.message
        );
        assert_eq!(get(&s, conditions::RECONCILING).status, "True");
        let w = s.weights.expect("weights");
        assert_eq!(
            (w.phase, w.bytes_done, w.bytes_total),
            (WeightsPhase::Downloading, 40 << 20, Some(94 << 20))
        );
    }

    #[test]
    fn runtime_words_reach_a_stalled_condition() {
        let v = validated(CPU);
        let obs = Observed {
            deployment: Some(deployment(1, 0)),
            pods: vec![crashed_pod(
                "failed to verify the weights: sha256 digest mismatch: expected b179c952..., got 0000...",
            )],
            ..Observed::default()
        };
        let s = compute(&ms(), Ok(&v), &obs, &t(10));
        let stalled = get(&s, conditions::STALLED);
        assert_eq!(stalled.status, "True");
        assert_eq!(stalled.reason, reasons::DIGEST_MISMATCH);
        assert!(
            stalled
                .message
                .contains("digest mismatch: expected b179c952"),
            "{}",
            stalled.message
        );
        assert_eq!(get(&s, conditions::READY).reason, reasons::DIGEST_MISMATCH);
        assert_eq!(s.weights.map(|w| w.phase), Some(WeightsPhase::Failed));
    }

    #[test]
    fn reasons_from_the_runtime_messages() {
        assert_eq!(
            classify("quantization mismatch: the file holds Q4_1, spec asks Q8_0"),
            reasons::QUANTIZATION_MISMATCH
        );
        assert_eq!(
            classify("not a GGUF file: bad magic"),
            reasons::WEIGHTS_UNREADABLE
        );
        assert_eq!(
            classify("truncated GGUF: header says 40 tensors"),
            reasons::WEIGHTS_UNREADABLE
        );
        assert_eq!(
            classify("failed to bind 127.0.0.1:8080"),
            reasons::RUNTIME_FAILED
        );
    }

    #[test]
    fn unschedulable_carries_the_scheduler_message() {
        let v = validated(CPU);
        let pod = Pod {
            metadata: ObjectMeta {
                name: Some("smollm2-x".into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "False".into(),
                    reason: Some("Unschedulable".into()),
                    message: Some("0/4 nodes are available: 4 Insufficient nvidia.com/gpu.".into()),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let obs = Observed {
            deployment: Some(deployment(1, 0)),
            pods: vec![pod],
            ..Observed::default()
        };
        let s = compute(&ms(), Ok(&v), &obs, &t(10));
        let stalled = get(&s, conditions::STALLED);
        assert_eq!(stalled.reason, reasons::UNSCHEDULABLE);
        assert!(stalled.message.contains("Insufficient nvidia.com/gpu"));
    }

    #[test]
    fn invalid_spec_stalls_without_touching_children() {
        let s = compute(
            &ms(),
            Err(&InvalidSpec(
                "spec.model.uri: hf:// is not supported".into(),
            )),
            &Observed::default(),
            &t(10),
        );
        let stalled = get(&s, conditions::STALLED);
        assert_eq!(
            (stalled.status.as_str(), stalled.reason.as_str()),
            ("True", reasons::INVALID_SPEC)
        );
        assert!(stalled.message.contains("hf://"));
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn transition_time_is_kept_while_status_is_unchanged() {
        let v = validated(CPU);
        let mut ms = ms();
        let obs = Observed {
            deployment: Some(deployment(1, 1)),
            ..Observed::default()
        };
        let first = compute(&ms, Ok(&v), &obs, &t(10));
        ms.status = Some(first.clone());
        let second = compute(&ms, Ok(&v), &obs, &t(20));
        assert_eq!(
            first, second,
            "nothing changed: same status, nothing to patch"
        );
        let obs = Observed {
            deployment: Some(deployment(1, 0)),
            ..Observed::default()
        };
        let third = compute(&ms, Ok(&v), &obs, &t(30));
        assert_eq!(get(&third, conditions::READY).last_transition_time, t(30));
        assert_eq!(
            get(&third, conditions::STALLED).last_transition_time,
            t(10),
            "still False"
        );
    }
}
