//! Validate: turn a ModelService into a [`Validated`] one, with every default applied, or an
//! error that names what is wrong.
//!
//! The CEL rules in the CRD refuse most mistakes at admission; this step catches what only the
//! operator knows (what this runtime supports, whether the weights fit the accelerators), and
//! parses what the builders need typed. Builders take a `Validated` and cannot fail.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Toleration;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use modelfleet_crds::{LatencyMetric, ModelService, Quantization, TaintEffect, TolerationOperator};

/// Longest ModelService name: it becomes a label value, which is at most 63 characters.
pub const MAX_NAME_LEN: usize = 63;

/// A spec the operator cannot serve as written. The message is shown to the user in the
/// `Stalled` condition, so it names the field and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// Settings of the operator that fill what a spec leaves out.
#[derive(Debug, Clone)]
pub struct Defaults {
    /// Runtime image when `spec.runtime.image` is empty.
    pub runtime_image: String,
    /// API port when `spec.runtime.port` is empty.
    pub port: i32,
    /// In-flight requests per replica when `spec.runtime.maxConcurrency` is empty.
    pub max_concurrency: i32,
}

impl Defaults {
    /// Defaults used by unit tests.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        Self {
            runtime_image: "localhost/modelfleet-runtime:test".into(),
            port: 8080,
            max_concurrency: 4,
        }
    }
}

/// How the replica count is chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Replicas {
    /// `spec.replicas` (or 1 when neither it nor `spec.scaling` is set).
    Fixed(i32),
    /// `spec.scaling`: the autoscaler decides within the range.
    Autoscaled(Scaling),
}

/// A parsed `spec.scaling`.
#[derive(Debug, Clone, PartialEq)]
pub struct Scaling {
    pub min: i32,
    pub max: i32,
    pub metric: LatencyMetric,
    pub objective: Duration,
    pub scale_down_delay: Duration,
}

/// Default `spec.scaling.scaleDownDelay`.
pub const DEFAULT_SCALE_DOWN_DELAY: Duration = Duration::from_secs(300);

/// Where the runtime reads the weights from.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightsSource {
    /// Downloaded by the runtime from this URL.
    Url(String),
    /// A file inside a PersistentVolumeClaim, mounted read-only.
    Pvc { claim: String, path: String },
}

/// Accelerators per replica.
#[derive(Debug, Clone, PartialEq)]
pub struct Accelerator {
    pub resource_name: String,
    pub count: i32,
    pub product: Option<String>,
}

/// A ModelService with every default applied, ready for the builders.
#[derive(Debug, Clone, PartialEq)]
pub struct Validated {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub generation: Option<i64>,
    pub source: WeightsSource,
    pub sha256: Option<String>,
    pub quantization: Quantization,
    pub served_name: String,
    pub credentials_secret: Option<String>,
    pub image: String,
    pub port: i32,
    pub context_length: Option<i32>,
    pub max_concurrency: i32,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub accelerator: Option<Accelerator>,
    pub cpu: Option<Quantity>,
    /// CPU threads the runtime uses: the CPU limit rounded up, when one is set.
    pub threads: Option<u32>,
    pub memory: Option<Quantity>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    pub priority_class_name: Option<String>,
    pub replicas: Replicas,
    /// The replica count the Deployment is asked for.
    pub desired_replicas: i32,
    /// Size of the weights file, when known (from the model store or a replica's report).
    pub weight_bytes: Option<u64>,
}

/// Validates `ms`. `weight_bytes` is the size of the weights when known: it sizes memory and the
/// startup budget, and is checked against the accelerators' memory.
pub fn validate(
    ms: &ModelService,
    defaults: &Defaults,
    weight_bytes: Option<u64>,
) -> Result<Validated, InvalidSpec> {
    let name = ms.metadata.name.clone().unwrap_or_default();
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidSpec(format!(
            "metadata.name is {} characters long: at most {MAX_NAME_LEN}, since it labels the pods",
            name.len()
        )));
    }
    let spec = &ms.spec;
    let source = weights_source(&spec.model.uri)?;
    let runtime = spec.runtime.clone().unwrap_or_default();
    let resources = spec.resources.clone().unwrap_or_default();
    let placement = spec.placement.clone().unwrap_or_default();

    let threads = match &resources.cpu {
        Some(q) => Some(cpu_threads(q).ok_or_else(|| {
            InvalidSpec(format!(
                "spec.resources.cpu: {:?} is not a CPU quantity such as 2 or 500m",
                q.0
            ))
        })?),
        None => None,
    };
    let memory = match &resources.memory {
        Some(q) => {
            parse_bytes(&q.0).ok_or_else(|| {
                InvalidSpec(format!(
                    "spec.resources.memory: {:?} is not a memory quantity such as 4Gi",
                    q.0
                ))
            })?;
            Some(q.clone())
        }
        None => weight_bytes.map(|b| Quantity(format!("{}Mi", memory_for_weights(b) >> 20))),
    };
    let accelerator = match &resources.accelerator {
        Some(a) => {
            if let (Some(mem), Some(bytes)) = (&a.memory, weight_bytes) {
                let per = parse_bytes(&mem.0).ok_or_else(|| {
                    InvalidSpec(format!(
                        "spec.resources.accelerator.memory: {:?} is not a memory quantity such as 80Gi",
                        mem.0
                    ))
                })?;
                let total = per.saturating_mul(u64::try_from(a.count).unwrap_or(1));
                if total < bytes {
                    return Err(InvalidSpec(format!(
                        "the weights ({}) do not fit in {} accelerator(s) of {}: raise spec.resources.accelerator.count or pick a smaller quantization",
                        human_bytes(bytes),
                        a.count,
                        mem.0
                    )));
                }
            }
            Some(Accelerator {
                resource_name: a.resource_name.clone(),
                count: a.count,
                product: a.product.clone(),
            })
        }
        None => None,
    };

    let (replicas, desired_replicas) = match (&spec.replicas, &spec.scaling) {
        (Some(_), Some(_)) => {
            return Err(InvalidSpec(
                "spec.replicas and spec.scaling are mutually exclusive: set one".into(),
            ));
        }
        (fixed, None) => {
            let n = fixed.unwrap_or(1);
            (Replicas::Fixed(n), n)
        }
        (None, Some(s)) => {
            if s.min_replicas > s.max_replicas {
                return Err(InvalidSpec(
                    "spec.scaling.minReplicas must not be greater than spec.scaling.maxReplicas"
                        .into(),
                ));
            }
            let objective = parse_duration(&s.objective.target)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    InvalidSpec(format!(
                        "spec.scaling.objective.target: {:?} is not a positive duration such as 2s",
                        s.objective.target
                    ))
                })?;
            let scale_down_delay = match &s.scale_down_delay {
                Some(d) => parse_duration(d).ok_or_else(|| {
                    InvalidSpec(format!(
                        "spec.scaling.scaleDownDelay: {d:?} is not a duration such as 5m"
                    ))
                })?,
                None => DEFAULT_SCALE_DOWN_DELAY,
            };
            // The autoscaler's last decision, kept in status, drives the Deployment; before the
            // first decision, the range's floor.
            let decided = ms
                .status
                .as_ref()
                .and_then(|st| st.desired_replicas)
                .unwrap_or(s.min_replicas)
                .clamp(s.min_replicas, s.max_replicas);
            (
                Replicas::Autoscaled(Scaling {
                    min: s.min_replicas,
                    max: s.max_replicas,
                    metric: s.objective.metric,
                    objective,
                    scale_down_delay,
                }),
                decided,
            )
        }
    };

    Ok(Validated {
        served_name: ms.served_name().to_owned(),
        namespace: ms.metadata.namespace.clone().unwrap_or_default(),
        uid: ms.metadata.uid.clone().unwrap_or_default(),
        generation: ms.metadata.generation,
        name,
        source,
        sha256: spec.model.sha256.clone(),
        quantization: spec.model.quantization,
        credentials_secret: spec
            .model
            .credentials_secret_ref
            .as_ref()
            .map(|r| r.name.clone()),
        image: runtime
            .image
            .clone()
            .unwrap_or_else(|| defaults.runtime_image.clone()),
        port: runtime.port.unwrap_or(defaults.port),
        context_length: runtime.context_length,
        max_concurrency: runtime.max_concurrency.unwrap_or(defaults.max_concurrency),
        extra_args: runtime.args.clone(),
        env: runtime
            .env
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect(),
        accelerator,
        cpu: resources.cpu.clone(),
        threads,
        memory,
        node_selector: placement.node_selector.clone(),
        tolerations: placement.tolerations.iter().map(toleration).collect(),
        priority_class_name: placement.priority_class_name.clone(),
        replicas,
        desired_replicas,
        weight_bytes,
    })
}

fn weights_source(uri: &str) -> Result<WeightsSource, InvalidSpec> {
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(WeightsSource::Url(uri.to_owned()));
    }
    if let Some(rest) = uri.strip_prefix("pvc://") {
        let (claim, path) = rest.split_once('/').ok_or_else(|| {
            InvalidSpec(
                "spec.model.uri: pvc:// must name a claim and a path: pvc://claim/path".into(),
            )
        })?;
        if path.split('/').any(|seg| seg == "..") {
            return Err(InvalidSpec(
                "spec.model.uri: a pvc:// path must not contain '..'".into(),
            ));
        }
        return Ok(WeightsSource::Pvc {
            claim: claim.to_owned(),
            path: path.to_owned(),
        });
    }
    let scheme = uri.split("://").next().unwrap_or(uri);
    Err(InvalidSpec(format!(
        "spec.model.uri: {scheme}:// is not supported by this runtime version yet: use https://, http:// or pvc://"
    )))
}

fn toleration(t: &modelfleet_crds::Toleration) -> Toleration {
    Toleration {
        key: t.key.clone(),
        operator: Some(
            match t.operator {
                TolerationOperator::Equal => "Equal",
                TolerationOperator::Exists => "Exists",
            }
            .to_owned(),
        ),
        value: t.value.clone(),
        effect: t.effect.map(|e| {
            match e {
                TaintEffect::NoSchedule => "NoSchedule",
                TaintEffect::PreferNoSchedule => "PreferNoSchedule",
                TaintEffect::NoExecute => "NoExecute",
            }
            .to_owned()
        }),
        toleration_seconds: t.toleration_seconds,
    }
}

/// Memory a replica needs for weights of `bytes`: the mapped weights, a quarter more for the KV
/// cache and compute buffers at a modest context, and 256 MiB for the server itself. Rounded up
/// to a MiB.
pub fn memory_for_weights(bytes: u64) -> u64 {
    let need = bytes + bytes / 4 + (256 << 20);
    need.div_ceil(1 << 20) << 20
}

/// Parses a Go duration (`500ms`, `2s`, `1m30s`, `1.5h`), as CEL's `duration()` does.
pub fn parse_duration(s: &str) -> Option<Duration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let (scale, unit_len) = if rest.starts_with("ms") {
            (0.001, 2)
        } else if rest.starts_with('s') {
            (1.0, 1)
        } else if rest.starts_with('m') {
            (60.0, 1)
        } else if rest.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    Duration::try_from_secs_f64(total).ok()
}

/// Formats a duration the way users write them (`850ms`, `2.5s`, `3m`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{:.2}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    }
}

/// Parses a Kubernetes memory quantity (`512Mi`, `4Gi`, `1G`, `1048576`) into bytes.
pub fn parse_bytes(q: &str) -> Option<u64> {
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| q.strip_suffix(suffix).map(|n| (n, *scale)))
        .unwrap_or((q, 1.0));
    let value: f64 = number.parse().ok()?;
    (value >= 0.0 && value.is_finite()).then(|| (value * scale).ceil() as u64)
}

/// Threads for a CPU quantity: the number of cores, rounded up, at least 1.
pub fn cpu_threads(q: &Quantity) -> Option<u32> {
    let cores = match q.0.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok()? / 1000.0,
        None => q.0.parse::<f64>().ok()?,
    };
    (cores > 0.0 && cores.is_finite()).then(|| (cores.ceil() as u32).max(1))
}

/// `1.2 GiB`-style sizes for messages.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{CPU, GPU, validated};

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("fast"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("-5m"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(format_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(format_duration(Duration::from_millis(2500)), "2.5s");
        assert_eq!(format_duration(Duration::from_secs(180)), "3m");
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("512Mi"), Some(512 << 20));
        assert_eq!(parse_bytes("1G"), Some(1_000_000_000));
        assert_eq!(parse_bytes("1000"), Some(1000));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(cpu_threads(&Quantity("500m".into())), Some(1));
        assert_eq!(cpu_threads(&Quantity("2".into())), Some(2));
        assert_eq!(cpu_threads(&Quantity("2500m".into())), Some(3));
        assert_eq!(cpu_threads(&Quantity("0".into())), None);
    }

    #[test]
    fn cpu_sample_takes_its_fields_and_defaults() {
        let v = validated(CPU);
        assert_eq!(v.served_name, "smollm2");
        assert_eq!(v.image, "localhost/modelfleet-runtime:test");
        assert_eq!(v.port, 8080);
        assert_eq!(v.max_concurrency, 4);
        assert_eq!(v.threads, Some(1));
        assert_eq!(v.quantization, Quantization::Q4_1);
        assert_eq!(v.replicas, Replicas::Fixed(1));
        assert_eq!(v.desired_replicas, 1);
        assert!(matches!(v.source, WeightsSource::Url(ref u) if u.ends_with(".gguf")));
    }

    #[test]
    fn hf_uris_are_refused_until_the_runtime_fetches_them() {
        let err = validate(
            &serde_yaml::from_str(GPU).expect("sample"),
            &Defaults::for_tests(),
            None,
        )
        .expect_err("hf:// is not supported yet");
        assert!(err.0.contains("hf:// is not supported"), "{err}");
    }

    #[test]
    fn autoscaled_desired_replicas_come_from_status_within_range() {
        let mut ms: ModelService = serde_yaml::from_str(include_str!(
            "../../../crds/samples/valid/smollm2-autoscaled.yaml"
        ))
        .expect("sample");
        let v = validate(&ms, &Defaults::for_tests(), None).expect("valid");
        assert_eq!(v.desired_replicas, 1, "before any decision: minReplicas");
        let Replicas::Autoscaled(s) = &v.replicas else {
            panic!("autoscaled")
        };
        assert_eq!(s.objective, Duration::from_secs(2));
        assert_eq!(s.scale_down_delay, Duration::from_secs(30));
        ms.status = Some(modelfleet_crds::ModelServiceStatus {
            desired_replicas: Some(3),
            ..Default::default()
        });
        assert_eq!(
            validate(&ms, &Defaults::for_tests(), None)
                .expect("valid")
                .desired_replicas,
            3
        );
        ms.status = Some(modelfleet_crds::ModelServiceStatus {
            desired_replicas: Some(40),
            ..Default::default()
        });
        assert_eq!(
            validate(&ms, &Defaults::for_tests(), None)
                .expect("valid")
                .desired_replicas,
            4,
            "clamped to maxReplicas"
        );
    }

    #[test]
    fn memory_is_sized_from_the_weights_when_not_given() {
        let mut ms: ModelService = serde_yaml::from_str(CPU).expect("sample");
        ms.spec.resources = None;
        let v = validate(&ms, &Defaults::for_tests(), Some(98_362_432)).expect("valid");
        // 93.8 MiB of weights + 25 % + 256 MiB, rounded up to a MiB.
        assert_eq!(v.memory, Some(Quantity("374Mi".into())));
        let v = validate(&ms, &Defaults::for_tests(), None).expect("valid");
        assert_eq!(v.memory, None, "no guess without a size");
    }

    #[test]
    fn weights_larger_than_the_accelerators_are_refused() {
        let mut ms: ModelService = serde_yaml::from_str(CPU).expect("sample");
        ms.spec.resources = Some(modelfleet_crds::ResourcesSpec {
            accelerator: Some(modelfleet_crds::AcceleratorSpec {
                count: 2,
                memory: Some(Quantity("16Gi".into())),
                ..Default::default()
            }),
            ..Default::default()
        });
        let err = validate(&ms, &Defaults::for_tests(), Some(40 << 30)).expect_err("too big");
        assert!(
            err.0.contains("do not fit in 2 accelerator(s) of 16Gi"),
            "{err}"
        );
        assert!(validate(&ms, &Defaults::for_tests(), Some(20 << 30)).is_ok());
    }

    #[test]
    fn long_names_are_refused() {
        let mut ms: ModelService = serde_yaml::from_str(CPU).expect("sample");
        ms.metadata.name = Some("m".repeat(64));
        let err = validate(&ms, &Defaults::for_tests(), None).expect_err("too long");
        assert!(err.0.contains("at most 63"), "{err}");
    }
}
