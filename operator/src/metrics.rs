//! The operator's own Prometheus metrics. Labels are bounded: error categories, never object
//! names.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label of the reconcile counters: the outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `ok` or an error category.
    pub result: String,
}

/// Label of the write counter: the kind of object written.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    /// `Deployment`, `Service`, `PodDisruptionBudget`, `ModelServiceStatus` or `Event`.
    pub kind: String,
}

/// Every metric the operator exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    reconciles: Family<Outcome, Counter>,
    reconcile_duration: Histogram,
    writes: Family<Kind, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("modelfleet_operator");
        let reconciles = Family::<Outcome, Counter>::default();
        registry.register("reconciles", "Reconciles by outcome", reconciles.clone());
        // 1 ms to ~16 s: a reconcile is a handful of API calls and metric scrapes.
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "reconcile_duration_seconds",
            "Duration of one reconcile",
            reconcile_duration.clone(),
        );
        let writes = Family::<Kind, Counter>::default();
        registry.register(
            "kube_writes",
            "Write requests to the apiserver by kind of object (zero while idle)",
            writes.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_duration,
            writes,
        }
    }
}

impl Metrics {
    /// Records a reconcile and its outcome (`None`: success).
    pub fn observe_reconcile(&self, took: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        self.reconciles
            .get_or_create(&Outcome {
                result: error.unwrap_or("ok").to_owned(),
            })
            .inc();
    }

    /// Counts one write request to the apiserver.
    pub fn count_write(&self, kind: &str) {
        self.writes
            .get_or_create(&Kind {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
