//! Condition types and reasons, defined once.
//!
//! The types follow kstatus (`Ready`, `Reconciling`, `Stalled`), so Flux, Argo CD and `kubectl wait`
//! understand a ModelService without custom code; `WeightsAvailable` and `Progressing` say where a
//! cold start is. Reasons are CamelCase and stable: tools match on them.

/// The model is served at the desired replica count with the current spec.
pub const READY: &str = "Ready";
/// The operator is still working toward the spec (kstatus: "in progress").
pub const RECONCILING: &str = "Reconciling";
/// The operator cannot make progress without a change from the user (kstatus: "failed").
pub const STALLED: &str = "Stalled";
/// At least one replica has verified and loaded the weights.
pub const WEIGHTS_AVAILABLE: &str = "WeightsAvailable";
/// A rollout or a scale change is under way.
pub const PROGRESSING: &str = "Progressing";

/// The autoscaler has fresh metrics that can show the objective missed, and acts on them
/// (autoscaled ModelServices only; as the HorizontalPodAutoscaler's condition of the same name).
/// False while metrics are missing (the count is held) or while a replica's latency buckets end
/// below the objective (it goes on scaling, blind to a missed objective).
pub const SCALING_ACTIVE: &str = "ScalingActive";
/// Whether the load needs more replicas than `spec.scaling.maxReplicas` (autoscaled
/// ModelServices only; as the HorizontalPodAutoscaler's condition of the same name, for the
/// maximum: a minimum above what the load needs is the user's choice, not a limit).
pub const SCALING_LIMITED: &str = "ScalingLimited";

/// Every condition type a ModelService reports.
pub const TYPES: [&str; 7] = [
    READY,
    RECONCILING,
    STALLED,
    WEIGHTS_AVAILABLE,
    PROGRESSING,
    SCALING_ACTIVE,
    SCALING_LIMITED,
];

/// Reasons a condition can carry.
pub mod reasons {
    /// Every desired replica is ready.
    pub const AVAILABLE: &str = "Available";
    /// Fewer replicas are ready than desired.
    pub const REPLICAS_NOT_READY: &str = "ReplicasNotReady";
    /// Children are being created or updated.
    pub const APPLYING: &str = "Applying";
    /// The spec is valid and its children are up to date.
    pub const RECONCILED: &str = "Reconciled";
    /// The spec cannot be served as written.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The weights' SHA-256 digest differs from `spec.model.sha256`.
    pub const DIGEST_MISMATCH: &str = "DigestMismatch";
    /// The weights could not be fetched or are not a valid GGUF file.
    pub const WEIGHTS_UNREADABLE: &str = "WeightsUnreadable";
    /// The weights hold another quantization than `spec.model.quantization`.
    pub const QUANTIZATION_MISMATCH: &str = "QuantizationMismatch";
    /// The scheduler cannot place a replica (for example: not enough `nvidia.com/gpu`).
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The runtime exited for a reason not listed above.
    pub const RUNTIME_FAILED: &str = "RuntimeFailed";
    /// Replicas are fetching the weights.
    pub const DOWNLOADING: &str = "Downloading";
    /// Replicas are loading the weights.
    pub const LOADING: &str = "Loading";
    /// At least one replica has loaded the weights.
    pub const LOADED: &str = "Loaded";
    /// The Deployment is rolling out a new template or changing its replica count.
    pub const ROLLING_OUT: &str = "RollingOut";
    /// The Deployment matches the spec.
    pub const ROLLED_OUT: &str = "RolledOut";
    /// The autoscaler has no metrics from ready replicas and holds the replica count.
    pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
    /// The autoscaler has fresh metrics from the ready replicas.
    pub const METRICS_AVAILABLE: &str = "MetricsAvailable";
    /// A ready replica's latency histogram ends below the objective: a p95 above its largest
    /// bucket reads as that bucket, so a missed objective cannot be seen.
    pub const OBJECTIVE_NOT_MEASURABLE: &str = "ObjectiveNotMeasurable";
    /// The load needs more replicas than the maximum; the count is held there.
    pub const TOO_MANY_REPLICAS: &str = "TooManyReplicas";
    /// The load needs no more replicas than the maximum.
    pub const WITHIN_MAXIMUM: &str = "WithinMaximum";
    /// Event: the autoscaler raised the replica count.
    pub const SCALED_UP: &str = "ScaledUp";
    /// Event: the autoscaler lowered the replica count.
    pub const SCALED_DOWN: &str = "ScaledDown";
}
