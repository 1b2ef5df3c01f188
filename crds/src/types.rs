//! The `ModelService` spec and status types.
//!
//! Doc comments on fields become the schema descriptions that `kubectl explain` prints, so they
//! are written for users. Every string and list carries a length bound: the apiserver estimates
//! the cost of each CEL rule from these bounds and refuses a CRD whose rules could cost too much.
//! Invariants a user can get wrong are CEL rules, so a bad manifest is refused at admission with a
//! message that names the field, instead of being accepted and failing later in the operator.

// Each `printcolumn(...)` of the derive repeats keys such as `type_` and `priority`, which clippy
// reads as duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A Go-style duration such as `500ms`, `2s`, `1m30s` or `1h`: the syntax CEL's `duration()`
/// and every Kubernetes tool accept.
pub const DURATION_PATTERN: &str = "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$";

/// The desired state of a served model.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "modelfleet.dev",
    version = "v1alpha1",
    kind = "ModelService",
    plural = "modelservices",
    singular = "modelservice",
    shortname = "ms",
    category = "ai",
    namespaced,
    status = "ModelServiceStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "A quantized model served by autoscaled runtime replicas behind an OpenAI-compatible API.",
    validation = Rule::new("size(self.metadata.name) <= 63").message(
        "metadata.name must be at most 63 characters: it names the Service and labels the pods"
    ),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        description = "Whether the model is served at its desired replica count",
        json_path = r#".status.conditions[?(@.type=="Ready")].status"#
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        description = "Replicas that are ready to serve",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        description = "Replicas the operator asks for, from spec.replicas or the autoscaler",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Quant",
        type_ = "string",
        description = "Quantization detected in the weights",
        json_path = ".status.model.quantization"
    ),
    printcolumn(
        name = "P95",
        type_ = "string",
        description = "p95 latency observed by the runtime replicas (autoscaled services)",
        json_path = ".status.autoscaling.observedP95"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Objective",
        type_ = "string",
        description = "p95 latency objective",
        json_path = ".spec.scaling.objective.target",
        priority = 1
    ),
    printcolumn(
        name = "Weights",
        type_ = "string",
        description = "Phase of the weights: download, verification, load",
        json_path = ".status.weights.phase",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        description = "Why the model is not ready, if it is not",
        json_path = r#".status.conditions[?(@.type=="Ready")].reason"#,
        priority = 1
    ),
    printcolumn(
        name = "URI",
        type_ = "string",
        description = "Where the weights come from",
        json_path = ".spec.model.uri",
        priority = 1
    )
)]
#[x_kube(validation = Rule::new("!(has(self.replicas) && has(self.scaling))").message(
    "spec.replicas and spec.scaling are mutually exclusive: set a fixed replica count or an autoscaling range, not both"
))]
#[serde(rename_all = "camelCase")]
pub struct ModelServiceSpec {
    /// The weights to serve and how to check them.
    pub model: ModelSource,

    /// The inference runtime each replica runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeSpec>,

    /// Compute each replica needs: accelerators, CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,

    /// Where replicas may be scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,

    /// A fixed number of replicas. This is also the field `kubectl scale`, a HorizontalPodAutoscaler
    /// or KEDA write through the scale subresource. Mutually exclusive with `scaling`; when neither
    /// is set, one replica runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: Option<i32>,

    /// Let the operator choose the replica count, between `minReplicas` and `maxReplicas`, to hold
    /// a latency objective at the fewest replicas. Mutually exclusive with `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<ScalingSpec>,
}

/// Where the weights come from, what they must be, and the name they are served under.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// Location of the weights file: `https://host/path`, `http://host/path`,
    /// `hf://org/repo/file.gguf@revision` (a pinned revision is required), `s3://bucket/key` or
    /// `pvc://claim/path/in/volume`.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(
        validation = Rule::new("self.matches('^(https?|hf|s3|pvc)://')")
            .message("spec.model.uri must start with https://, http://, hf://, s3:// or pvc://"),
        validation = Rule::new("!self.startsWith('hf://') || self.matches('^hf://[^/@]+/[^/@]+/[^@]+@[A-Za-z0-9._/-]+$')")
            .message("spec.model.uri: hf:// must name org/repo/file and pin a revision, as in hf://org/repo/model.gguf@main"),
        validation = Rule::new("!self.startsWith('s3://') || self.matches('^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$')")
            .message("spec.model.uri: s3:// must name a bucket and a key, as in s3://bucket/path/model.gguf"),
        validation = Rule::new("!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+$')")
            .message("spec.model.uri: pvc:// must name a claim and a path inside it, as in pvc://models/smollm2.gguf"),
        validation = Rule::new("!self.matches('^https?://') || self.matches('^https?://[^/]+/.+$')")
            .message("spec.model.uri: http(s):// must name a host and a file path")
    )]
    pub uri: String,

    /// Expected SHA-256 digest of the weights file, as 64 lowercase hex characters. The runtime
    /// verifies it before loading and refuses to serve a file that does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[a-f0-9]{64}$')")
        .message("spec.model.sha256 must be a SHA-256 digest: 64 lowercase hex characters"))]
    pub sha256: Option<String>,

    /// File format of the weights. Only GGUF is supported.
    #[serde(default)]
    pub format: ModelFormat,

    /// Quantization the weights must have. `Auto` accepts what the file holds; any other value is
    /// checked against the file and a mismatch is refused before serving.
    #[serde(default)]
    pub quantization: Quantization,

    /// Model name clients pass as `model` in OpenAI API requests. Defaults to the ModelService name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._:/-]*$')")
        .message("spec.model.servedName may contain only letters, digits and . _ : / -, and must start with a letter or digit"))]
    pub served_name: Option<String>,

    /// A Secret in the same namespace whose keys are passed to the runtime as environment variables
    /// (for example `HF_TOKEN`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`) to fetch the weights.
    /// The values are never copied into other objects or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretReference>,
}

/// File formats the runtime can load.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ModelFormat {
    /// llama.cpp's GGUF container.
    #[default]
    #[serde(rename = "GGUF")]
    Gguf,
}

/// GGUF quantization types the runtime checks weights against.
#[allow(non_camel_case_types)]
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Quantization {
    /// Accept whatever the file holds.
    #[default]
    Auto,
    F32,
    F16,
    BF16,
    Q8_0,
    Q6_K,
    Q5_0,
    Q5_1,
    Q5_K_S,
    Q5_K_M,
    Q4_0,
    Q4_1,
    Q4_K_S,
    Q4_K_M,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q2_K,
    IQ4_NL,
    IQ4_XS,
}

impl Quantization {
    /// The name used in the API and in GGUF tooling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "Auto",
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q8_0 => "Q8_0",
            Self::Q6_K => "Q6_K",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q5_K_S => "Q5_K_S",
            Self::Q5_K_M => "Q5_K_M",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q4_K_S => "Q4_K_S",
            Self::Q4_K_M => "Q4_K_M",
            Self::Q3_K_S => "Q3_K_S",
            Self::Q3_K_M => "Q3_K_M",
            Self::Q3_K_L => "Q3_K_L",
            Self::Q2_K => "Q2_K",
            Self::IQ4_NL => "IQ4_NL",
            Self::IQ4_XS => "IQ4_XS",
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Secret in the ModelService's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretReference {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')")
        .message("credentialsSecretRef.name must be a valid Secret name (lowercase letters, digits, '-' and '.')"))]
    pub name: String,
}

/// The inference runtime each replica runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSpec {
    /// Container image of the runtime. Defaults to the image the operator was installed with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Port the OpenAI-compatible API and `/metrics` listen on. At least 1024: pods run as non-root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 65535))]
    pub port: Option<i32>,

    /// Context window, in tokens, per sequence. Defaults to the model's own context length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 128, max = 1048576))]
    pub context_length: Option<i32>,

    /// Requests each replica decodes at once (continuous batching); more wait in a bounded queue,
    /// and beyond it the replica answers 429. Defaults to 4.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 256))]
    pub max_concurrency: Option<i32>,

    /// Extra command-line arguments for the runtime, appended after the ones the operator sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(max = 1024)))]
    pub args: Vec<String>,

    /// Extra environment variables for the runtime. Use `spec.model.credentialsSecretRef` for secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub env: Vec<EnvVar>,
}

/// An environment variable with a literal value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvVar {
    /// Name of the variable.
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^[-._a-zA-Z][-._a-zA-Z0-9]*$')")
        .message("spec.runtime.env[].name must consist of letters, digits, '_', '-' or '.', and not start with a digit"))]
    pub name: String,

    /// Value of the variable.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub value: String,
}

/// Compute each replica needs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// Accelerators (GPUs) per replica. Without it, replicas run on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator: Option<AcceleratorSpec>,

    /// CPU per replica, requested and limited, for example `2` or `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Quantity>,

    /// Memory per replica, requested and limited, for example `4Gi`. Defaults to a size derived
    /// from the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

/// Accelerators per replica.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorSpec {
    /// Extended resource name the device plugin advertises.
    #[serde(default = "default_accelerator_resource")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')")
        .message("spec.resources.accelerator.resourceName must be a domain-prefixed resource name such as nvidia.com/gpu"))]
    pub resource_name: String,

    /// Accelerators per replica.
    #[serde(default = "default_accelerator_count")]
    #[schemars(range(min = 1, max = 16))]
    pub count: i32,

    /// Accelerator product replicas must run on, matched against the node label
    /// `nvidia.com/gpu.product`, for example `NVIDIA-H100-80GB-HBM3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')")
        .message("spec.resources.accelerator.product must be a valid label value such as NVIDIA-H100-80GB-HBM3"))]
    pub product: Option<String>,

    /// Memory each accelerator must have, for example `80Gi`, checked against the size of the
    /// weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Quantity>,
}

impl Default for AcceleratorSpec {
    fn default() -> Self {
        Self {
            resource_name: default_accelerator_resource(),
            count: default_accelerator_count(),
            product: None,
            memory: None,
        }
    }
}

/// The accelerator resource name NVIDIA's device plugin advertises.
pub const DEFAULT_ACCELERATOR_RESOURCE: &str = "nvidia.com/gpu";

fn default_accelerator_resource() -> String {
    DEFAULT_ACCELERATOR_RESOURCE.to_owned()
}

fn default_accelerator_count() -> i32 {
    1
}

/// Where replicas may be scheduled.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PlacementSpec {
    /// Node labels a node must have to run a replica.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32, "additionalProperties" = {"type": "string", "maxLength": 63}))]
    pub node_selector: BTreeMap<String, String>,

    /// Taints replicas tolerate, for example the taint on a dedicated GPU node pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,

    /// PriorityClass of the replicas' pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,
}

/// A taint a replica tolerates (the fields of a Pod's toleration).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.operator != 'Exists' || !has(self.value) || self.value == ''")
    .message("spec.placement.tolerations[]: a toleration with operator Exists must not have a value"))]
pub struct Toleration {
    /// Taint key to match; empty with operator `Exists` matches every taint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 316))]
    pub key: Option<String>,

    /// `Equal` (the default) or `Exists`.
    #[serde(default)]
    pub operator: TolerationOperator,

    /// Taint value to match with operator `Equal`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub value: Option<String>,

    /// Taint effect to match (`NoSchedule`, `PreferNoSchedule`, `NoExecute`); empty matches all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effect: Option<TaintEffect>,

    /// How long a replica stays on a node after a matching `NoExecute` taint appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub toleration_seconds: Option<i64>,
}

/// How a toleration matches a taint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TolerationOperator {
    /// Key and value must both match.
    #[default]
    Equal,
    /// The key must exist, whatever its value.
    Exists,
}

/// Effect of a taint.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaintEffect {
    /// New pods are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Running pods are evicted.
    NoExecute,
}

/// Autoscaling between a replica range to hold a latency objective.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas")
    .message("spec.scaling.minReplicas must not be greater than spec.scaling.maxReplicas"))]
pub struct ScalingSpec {
    /// Fewest replicas, kept even when idle.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,

    /// Most replicas the autoscaler may run.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,

    /// The latency to hold.
    pub objective: LatencyObjective,

    /// How long load must stay low before replicas are removed; replicas are removed one step
    /// per delay, and when traffic stops altogether they are kept for three delays after the
    /// last request. Scale-up never waits. Defaults to `5m`; `0s` removes replicas as soon as
    /// the policy allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) >= duration('0s') && duration(self) <= duration('24h')"
    ).message("spec.scaling.scaleDownDelay must be a duration between 0s and 24h, such as 30s or 5m"))]
    pub scale_down_delay: Option<String>,
}

fn default_min_replicas() -> i32 {
    1
}

/// A latency objective: the p95 of a latency the runtime measures.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyObjective {
    /// Which latency: `RequestLatency` (whole request, first byte to last token) or
    /// `TimeToFirstToken`.
    pub metric: LatencyMetric,

    /// Most the p95 of that latency may be, as a duration such as `800ms` or `2s`.
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(
        "self.matches('^([0-9]+(\\\\.[0-9]+)?(ms|s|m|h))+$') && duration(self) > duration('0s') && duration(self) <= duration('1h')"
    ).message("spec.scaling.objective.target must be a positive duration of at most 1h, such as 800ms or 2s"))]
    pub target: String,
}

/// Latencies an objective can hold.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LatencyMetric {
    /// From the request's arrival to its last token.
    RequestLatency,
    /// From the request's arrival to its first generated token.
    TimeToFirstToken,
}

/// The observed state of a served model.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelServiceStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Runtime pods that exist.
    #[serde(default)]
    pub replicas: i32,

    /// Runtime pods that are ready to serve.
    #[serde(default)]
    pub ready_replicas: i32,

    /// Replicas the operator asks for, from `spec.replicas` or the autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,

    /// Label selector of the runtime pods, in the string form the scale subresource expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// What the weights' own headers say about the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelInfo>,

    /// Progress of the weights on the replicas: download, verification, load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<WeightsStatus>,

    /// What the autoscaler observed and decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingStatus>,

    /// Current conditions: `Ready`, `Reconciling`, `Stalled`, `WeightsAvailable`, `Progressing`,
    /// and `ScalingActive` and `ScalingLimited` for autoscaled ModelServices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// Facts read from the weights' GGUF header.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelInfo {
    /// Quantization of the weights, such as `Q4_1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Size of the weights file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_bytes: Option<i64>,
    /// Model architecture, such as `llama`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    /// Number of parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_count: Option<i64>,
    /// Context length the model was trained with, in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<i64>,
}

/// Progress of the weights, summed over the replicas that report it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WeightsStatus {
    /// Where the slowest replica is.
    pub phase: WeightsPhase,
    /// Bytes downloaded so far.
    #[serde(default)]
    pub bytes_done: i64,
    /// Bytes to download, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<i64>,
}

/// The steps a replica goes through before it serves.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WeightsPhase {
    /// No replica has started fetching yet.
    #[default]
    Pending,
    /// Streaming the file to local disk.
    Downloading,
    /// Checking the SHA-256 digest.
    Verifying,
    /// Loading into memory and warming up.
    Loading,
    /// Loaded and serving.
    Ready,
    /// The runtime refused the weights; see the `Stalled` condition.
    Failed,
}

/// What the autoscaler saw and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingStatus {
    /// p95 of the objective's latency over the last window, across ready replicas, such as `850ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_p95: Option<String>,
    /// Requests per second over the last window, across ready replicas, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_request_rate: Option<String>,
    /// When the replica count last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// The last decisions that changed the replica count, newest last (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub last_decisions: Vec<ScalingDecision>,
    /// What the autoscaler learned about the replicas and the traffic, rewritten (with the
    /// observed figures, at most every 15 s) when a figure moves by more than a tenth or a
    /// later request came. The windows it learned it from live in the operator's memory; a
    /// restarted operator starts from this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<LearnedScaling>,
}

/// The autoscaler's latency model and what it knows of the traffic, in figures a user can read.
/// The p95 and the mean latency are modelled as a floor (one request per replica) plus a cost
/// per extra request per replica.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LearnedScaling {
    /// Requests per second one replica serves while holding the objective, as a decimal
    /// string.
    #[schemars(length(max = 32))]
    pub capacity_per_replica: String,
    /// p95 of the objective's latency with one request per replica, such as `21.4s`.
    #[schemars(length(max = 32))]
    pub p95_floor: String,
    /// What each extra request per replica adds to that p95.
    #[schemars(length(max = 32))]
    pub p95_per_request: String,
    /// Mean request latency with one request per replica.
    #[schemars(length(max = 32))]
    pub mean_latency_floor: String,
    /// What each extra request per replica adds to the mean.
    #[schemars(length(max = 32))]
    pub mean_latency_per_request: String,
    /// How much more the request rate varies over 10 s than Poisson arrivals at the same mean
    /// would, as a decimal string: about 1 for independent clients, more for bursts. The
    /// autoscaler provisions for it.
    #[schemars(length(max = 32))]
    pub burst_dispersion: String,
    /// Factor by which what the requests attained raised the capacity the latencies gave, as a
    /// decimal string between 1 and 2 (absent: 1). It rises while more than 99.8 % of the
    /// requests meet the objective and falls with each that misses it or is refused: the
    /// latency fit errs on the safe side, and this takes back what the requests show it does
    /// not need. `capacityPerReplica` is before it. Like the other figures it is rewritten
    /// when it moves by more than a tenth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub attainment_factor: Option<String>,
    /// When the replicas last had a request (the start of a pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_request_time: Option<Time>,
    /// The latency this was measured for; after a change it is not used.
    pub metric: LatencyMetric,
    /// The objective the capacity was estimated for; after a change the capacity is not used.
    #[schemars(length(max = 32))]
    pub objective: String,
    /// The batch limit (`spec.runtime.maxConcurrency`) the replicas ran with; after a change
    /// it is not used.
    pub max_concurrency: i32,
}

/// One change of the replica count, and why.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScalingDecision {
    /// When it was decided.
    pub time: Time,
    /// Replicas before.
    pub from: i32,
    /// Replicas after.
    pub to: i32,
    /// Why, in words.
    #[schemars(length(max = 1024))]
    pub reason: String,
}

impl ModelService {
    /// The OpenAI `model` name: `spec.model.servedName`, or the object's name.
    pub fn served_name(&self) -> &str {
        self.spec
            .model
            .served_name
            .as_deref()
            .or(self.metadata.name.as_deref())
            .unwrap_or_default()
    }
}
