//! The runtime Deployment: one pod per replica, running `modelfleet-runtime serve`.
//!
//! The pods pass the Pod Security "restricted" profile: non-root, read-only root filesystem (the
//! weights go to an `emptyDir`), every capability dropped, seccomp `RuntimeDefault`, no service
//! account token. Credentials reach the runtime as environment from the user's Secret (`envFrom`),
//! never copied into this object.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, SleepAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use modelfleet_crds::Quantization;

use super::{CONTAINER_NAME, PORT_NAME, child_meta, labels, selector_labels};
use crate::controller::validate::{Validated, WeightsSource};

/// Node label NVIDIA's GPU feature discovery sets to the GPU product name.
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// Where the weights are downloaded to, inside the writable `emptyDir`.
pub const CACHE_DIR: &str = "/var/cache/modelfleet";
/// Where a `pvc://` claim is mounted.
pub const PVC_MOUNT: &str = "/models";
/// The non-root user and group the runtime image runs as (distroless' `nonroot`).
pub const RUNTIME_UID: i64 = 65532;
/// Seconds a pod gets to finish in-flight requests after SIGTERM. Generation requests on CPU can
/// take tens of seconds; the runtime's own drain deadline is set a little below this.
pub const GRACE_PERIOD_SECONDS: i64 = 90;
/// The runtime drains for at most this long, leaving the kubelet time to collect the exit.
pub const RUNTIME_DRAIN_SECONDS: i64 = GRACE_PERIOD_SECONDS - 10;
/// The preStop pause: long enough for the pod to leave the Service's endpoints before the runtime
/// stops taking new requests.
pub const PRESTOP_SLEEP_SECONDS: i64 = 5;
/// Seconds between two startup probes.
pub const STARTUP_PERIOD_SECONDS: i32 = 5;
/// Throughput assumed for download, digest and load when sizing the startup budget: a slow
/// model store, not a fast one, so a cold start is never killed halfway.
pub const ASSUMED_BYTES_PER_SECOND: u64 = 20 << 20;
/// Startup budget when the size of the weights is not known yet.
pub const UNKNOWN_SIZE_STARTUP_SECONDS: u64 = 30 * 60;

/// How long the runtime may take from start to ready: a minute, plus the time to move the
/// weights at [`ASSUMED_BYTES_PER_SECOND`].
pub fn startup_budget_seconds(weight_bytes: Option<u64>) -> u64 {
    match weight_bytes {
        Some(b) => 60 + b.div_ceil(ASSUMED_BYTES_PER_SECOND),
        None => UNKNOWN_SIZE_STARTUP_SECONDS,
    }
}

/// Builds the runtime Deployment.
pub fn deployment(v: &Validated) -> Deployment {
    Deployment {
        metadata: child_meta(v),
        spec: Some(DeploymentSpec {
            replicas: Some(v.desired_replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(v)),
                ..LabelSelector::default()
            },
            // A new pod must be ready before an old one goes: capacity never drops in a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }),
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(v)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(v)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

fn pod_spec(v: &Validated) -> PodSpec {
    let mut volumes = vec![
        Volume {
            name: "cache".into(),
            empty_dir: Some(EmptyDirVolumeSource {
                // The weights plus a margin: a replica cannot fill the node's disk.
                size_limit: v
                    .weight_bytes
                    .map(|b| Quantity(format!("{}Mi", (b + b / 10 + (64 << 20)) >> 20))),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ];
    if let WeightsSource::Pvc { claim, .. } = &v.source {
        volumes.push(Volume {
            name: "weights".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        });
    }
    PodSpec {
        containers: vec![container(v)],
        volumes: Some(volumes),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        termination_grace_period_seconds: Some(GRACE_PERIOD_SECONDS),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUNTIME_UID),
            run_as_group: Some(RUNTIME_UID),
            fs_group: Some(RUNTIME_UID),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        node_selector: (!v.node_selector.is_empty()).then(|| v.node_selector.clone()),
        tolerations: (!v.tolerations.is_empty()).then(|| v.tolerations.clone()),
        priority_class_name: v.priority_class_name.clone(),
        affinity: v
            .accelerator
            .as_ref()
            .and_then(|a| a.product.as_ref())
            .map(|product| Affinity {
                node_affinity: Some(NodeAffinity {
                    required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                        node_selector_terms: vec![NodeSelectorTerm {
                            match_expressions: Some(vec![NodeSelectorRequirement {
                                key: GPU_PRODUCT_LABEL.into(),
                                operator: "In".into(),
                                values: Some(vec![product.clone()]),
                            }]),
                            ..NodeSelectorTerm::default()
                        }],
                    }),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
        ..PodSpec::default()
    }
}

fn container(v: &Validated) -> Container {
    let mut mounts = vec![
        VolumeMount {
            name: "cache".into(),
            mount_path: CACHE_DIR.into(),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..VolumeMount::default()
        },
    ];
    if matches!(v.source, WeightsSource::Pvc { .. }) {
        mounts.push(VolumeMount {
            name: "weights".into(),
            mount_path: PVC_MOUNT.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String(PORT_NAME.into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(3),
        ..Probe::default()
    };
    let startup_failures = startup_budget_seconds(v.weight_bytes)
        .div_ceil(STARTUP_PERIOD_SECONDS as u64)
        .try_into()
        .unwrap_or(i32::MAX);
    Container {
        name: CONTAINER_NAME.into(),
        image: Some(v.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        args: Some(args(v)),
        env: Some(env(v)),
        env_from: v.credentials_secret.as_ref().map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: name.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        ports: Some(vec![ContainerPort {
            name: Some(PORT_NAME.into()),
            container_port: v.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        resources: Some(resources(v)),
        volume_mounts: Some(mounts),
        // The runtime serves /livez from its first second, while it downloads; /readyz turns true
        // once the weights are verified, loaded and warmed up. The startup probe gives the cold
        // start a budget sized from the weights before liveness takes over.
        startup_probe: Some(probe("/livez", STARTUP_PERIOD_SECONDS, startup_failures)),
        liveness_probe: Some(probe("/livez", 10, 3)),
        // Three misses before a busy replica leaves the endpoints: a replica saturated by decoding
        // may answer a probe late, and flapping would only move its load to the others. A
        // terminating pod leaves the endpoints at once anyway.
        readiness_probe: Some(probe("/readyz", 5, 3)),
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: PRESTOP_SLEEP_SECONDS,
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        termination_message_path: Some("/dev/termination-log".into()),
        // The runtime's own words when it refuses the weights: the operator shows them in status.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The runtime's command line: everything the spec says, then the user's extra arguments.
pub fn args(v: &Validated) -> Vec<String> {
    let uri = match &v.source {
        WeightsSource::Url(u) => u.clone(),
        WeightsSource::Pvc { path, .. } => format!("{PVC_MOUNT}/{path}"),
    };
    let mut a = vec![
        "serve".to_owned(),
        "--model-uri".to_owned(),
        uri,
        "--served-name".to_owned(),
        v.served_name.clone(),
        "--port".to_owned(),
        v.port.to_string(),
        "--max-concurrency".to_owned(),
        v.max_concurrency.to_string(),
        "--cache-dir".to_owned(),
        CACHE_DIR.to_owned(),
        "--grace-period".to_owned(),
        format!("{RUNTIME_DRAIN_SECONDS}s"),
        "--log-format".to_owned(),
        "json".to_owned(),
    ];
    if let Some(d) = &v.sha256 {
        a.extend(["--sha256".to_owned(), d.clone()]);
    }
    if v.quantization != Quantization::Auto {
        a.extend(["--quantization".to_owned(), v.quantization.to_string()]);
    }
    if let Some(n) = v.context_length {
        a.extend(["--context-length".to_owned(), n.to_string()]);
    }
    if let Some(t) = v.threads {
        a.extend(["--threads".to_owned(), t.to_string()]);
    }
    a.extend(v.extra_args.iter().cloned());
    a
}

fn env(v: &Validated) -> Vec<EnvVar> {
    // Listen on the pod's own address (from the downward API).
    let mut env = vec![EnvVar {
        name: "MODELFLEET_HOST".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "status.podIP".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    env.extend(v.env.iter().map(|(name, value)| EnvVar {
        name: name.clone(),
        value: Some(value.clone()),
        ..EnvVar::default()
    }));
    env
}

fn resources(v: &Validated) -> ResourceRequirements {
    let mut r = BTreeMap::new();
    if let Some(cpu) = &v.cpu {
        r.insert("cpu".to_owned(), cpu.clone());
    }
    if let Some(mem) = &v.memory {
        r.insert("memory".to_owned(), mem.clone());
    }
    if let Some(a) = &v.accelerator {
        r.insert(a.resource_name.clone(), Quantity(a.count.to_string()));
    }
    // Requests equal limits: the replica's latency must not depend on its neighbours.
    ResourceRequirements {
        requests: (!r.is_empty()).then(|| r.clone()),
        limits: (!r.is_empty()).then_some(r),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{CPU, validated};

    fn gpu() -> Validated {
        validated(
            r#"
apiVersion: modelfleet.dev/v1alpha1
kind: ModelService
metadata: {name: smollm2}
spec:
  model:
    uri: http://127.0.0.1:18080/m.gguf
    credentialsSecretRef: {name: store-token}
  resources:
    accelerator: {count: 2, product: NVIDIA-H100-80GB-HBM3}
  placement:
    nodeSelector: {pool: gpu}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  replicas: 3
"#,
        )
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    #[test]
    fn args_carry_the_spec() {
        let v = validated(CPU);
        let a = args(&v);
        let joined = a.join(" ");
        assert!(joined.starts_with(
            "serve --model-uri http://127.0.0.1:18080/SmolLM2-135M-Instruct.Q4_1.gguf"
        ));
        assert!(
            joined.contains(
                "--sha256 b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
            )
        );
        assert!(joined.contains("--quantization Q4_1"));
        assert!(joined.contains("--context-length 2048"));
        assert!(joined.contains("--max-concurrency 4"));
        assert!(joined.contains("--threads 1"));
        assert!(joined.contains("--port 8080"));
    }

    #[test]
    fn pods_pass_the_restricted_profile() {
        let d = deployment(&validated(CPU));
        let p = pod(&d);
        assert_eq!(p.automount_service_account_token, Some(false));
        let psc = p.security_context.as_ref().expect("pod security context");
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
            Some("RuntimeDefault")
        );
        let c = &p.containers[0];
        let sc = c
            .security_context
            .as_ref()
            .expect("container security context");
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()])
        );
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(
            mounts.contains(&CACHE_DIR),
            "weights need a writable volume"
        );
        assert!(p.volumes.iter().flatten().all(|v| v.host_path.is_none()));
    }

    #[test]
    fn gpus_are_requested_and_limited_with_product_affinity() {
        let v = gpu();
        let d = deployment(&v);
        assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(3));
        let p = pod(&d);
        let r = p.containers[0].resources.as_ref().expect("resources");
        let gpu = Some(&Quantity("2".into()));
        assert_eq!(
            r.requests.as_ref().and_then(|m| m.get("nvidia.com/gpu")),
            gpu
        );
        assert_eq!(r.limits.as_ref().and_then(|m| m.get("nvidia.com/gpu")), gpu);
        let term = &p
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .expect("node affinity")
            .node_selector_terms[0];
        let expr = &term.match_expressions.as_ref().expect("expressions")[0];
        assert_eq!(expr.key, GPU_PRODUCT_LABEL);
        assert_eq!(expr.values, Some(vec!["NVIDIA-H100-80GB-HBM3".to_owned()]));
        assert_eq!(
            p.node_selector
                .as_ref()
                .and_then(|n| n.get("pool"))
                .map(String::as_str),
            Some("gpu")
        );
        assert_eq!(p.tolerations.as_ref().map(Vec::len), Some(1));
    }

    #[test]
    fn credentials_come_from_the_secret_never_inlined() {
        let d = deployment(&gpu());
        let c = &pod(&d).containers[0];
        let from = c.env_from.as_ref().expect("envFrom");
        assert_eq!(
            from[0].secret_ref.as_ref().map(|s| s.name.as_str()),
            Some("store-token")
        );
        assert!(c.env.iter().flatten().all(|e| {
            e.value_from
                .as_ref()
                .is_none_or(|s| s.secret_key_ref.is_none())
        }));
    }

    #[test]
    fn startup_budget_grows_with_the_weights() {
        assert_eq!(startup_budget_seconds(None), UNKNOWN_SIZE_STARTUP_SECONDS);
        assert_eq!(startup_budget_seconds(Some(98_362_432)), 65);
        // 40 GiB at 20 MiB/s: 2048 s, plus a minute.
        assert_eq!(startup_budget_seconds(Some(40 << 30)), 2108);
        let mut v = validated(CPU);
        v.weight_bytes = Some(40 << 30);
        let d = deployment(&v);
        let probe = pod(&d).containers[0]
            .startup_probe
            .clone()
            .expect("startup probe");
        assert_eq!(
            probe.failure_threshold,
            Some(2108_u32.div_ceil(STARTUP_PERIOD_SECONDS as u32) as i32)
        );
    }

    #[test]
    fn rollouts_never_lower_capacity_and_drain_gracefully() {
        let d = deployment(&validated(CPU));
        let s = d.spec.as_ref().expect("spec");
        let ru = s
            .strategy
            .as_ref()
            .and_then(|s| s.rolling_update.as_ref())
            .expect("rolling");
        assert_eq!(ru.max_unavailable, Some(IntOrString::Int(0)));
        let p = pod(&d);
        assert!(p.termination_grace_period_seconds > Some(RUNTIME_DRAIN_SECONDS));
        assert!(
            args(&validated(CPU))
                .join(" ")
                .contains(&format!("--grace-period {RUNTIME_DRAIN_SECONDS}s"))
        );
        let owner = &d.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "ModelService");
        assert_eq!(owner.controller, Some(true));
    }
}
