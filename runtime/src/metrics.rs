//! Prometheus metrics of the runtime, served at `/metrics` in the text format.
//!
//! Labels are bounded: routes come from axum's `MatchedPath` (or `unmatched`), statuses are the
//! numeric codes this server returns, rejection reasons and error categories are fixed strings.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of the request duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

/// Labels of the model-info gauge: one series per process, so bounded.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    pub architecture: String,
    pub quantization: String,
}

/// Labels of per-reason counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

/// Bucket bounds grow by √2: an estimate interpolated within a bucket is off by at most 41 %
/// (doubling bounds allowed 100 %), which the operator's autoscaler needs near the objective.
/// The operator's `autoscale::window` mirrors these layouts for its simulator.
const BUCKET_FACTOR: f64 = std::f64::consts::SQRT_2;

/// Longest objective a ModelService may set (`spec.scaling.objective.target`, at most `1h`): the
/// latency histograms reach past it, or the operator could never see a p95 above it (with a
/// top bucket of 23 s, a 30 s time-to-first-token objective was never seen missed, and the
/// simulator's fleets held 92 % of the requests within it instead of 99.9 %).
#[cfg(test)]
const LONGEST_OBJECTIVE_SECONDS: f64 = 3600.0;

fn duration_histogram() -> Histogram {
    // 5 ms to ~62 min: a health probe up to the longest objective.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005,
        BUCKET_FACTOR,
        40,
    ))
}

/// Every metric the runtime exports.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub request_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub requests_in_flight: Gauge,
    pub requests_queued: Gauge,
    pub requests_rejected: Family<ReasonLabels, Counter>,
    pub prompt_tokens: Counter,
    pub generated_tokens: Counter,
    pub fetch_bytes_done: Gauge,
    pub fetch_bytes_total: Gauge,
    pub weight_bytes_loaded: Gauge<u64, AtomicU64>,
    pub weight_bytes_total: Gauge<u64, AtomicU64>,
    pub ready: Gauge,
    pub model_info: Family<ModelLabels, Gauge>,
    pub model_parameters: Gauge<u64, AtomicU64>,
    pub model_context_length: Gauge<u64, AtomicU64>,
}

impl Metrics {
    /// Creates and registers every metric under the `modelfleet_runtime_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelfleet_runtime");
        let request_duration =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram as fn() -> Histogram,
            );
        registry.register(
            "request_duration_seconds",
            "HTTP request duration by route and status, until the last byte of streamed responses",
            request_duration.clone(),
        );
        // 1 ms to ~70 min: a short prompt on a GPU up to the longest objective.
        let time_to_first_token = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, BUCKET_FACTOR, 45),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Time from request arrival to the first generated token, queueing included",
            time_to_first_token.clone(),
        );
        // 1 ms to ~1 s: one decode step of a small model is ~10 ms, a big one on CPU ~100s of ms.
        let inter_token_latency = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 11),
        );
        registry.register(
            "inter_token_latency_seconds",
            "Time between two generated tokens of one request",
            inter_token_latency.clone(),
        );
        let requests_in_flight = Gauge::default();
        registry.register(
            "requests_in_flight",
            "Generation requests being decoded",
            requests_in_flight.clone(),
        );
        let requests_queued = Gauge::default();
        registry.register(
            "requests_queued",
            "Generation requests waiting for a free decoding slot",
            requests_queued.clone(),
        );
        let requests_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "requests_rejected",
            "Generation requests refused before decoding, by reason",
            requests_rejected.clone(),
        );
        let prompt_tokens = Counter::default();
        registry.register(
            "prompt_tokens",
            "Prompt tokens processed",
            prompt_tokens.clone(),
        );
        let generated_tokens = Counter::default();
        registry.register(
            "generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        let fetch_bytes_done = Gauge::default();
        registry.register(
            "fetch_bytes_done",
            "Bytes of the weights downloaded so far",
            fetch_bytes_done.clone(),
        );
        let fetch_bytes_total = Gauge::default();
        registry.register(
            "fetch_bytes_total",
            "Size of the weights being downloaded (0 when unknown)",
            fetch_bytes_total.clone(),
        );
        let weight_bytes_loaded = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "weight_bytes_loaded",
            "Bytes of the weights loaded by the engine",
            weight_bytes_loaded.clone(),
        );
        let weight_bytes_total = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "weight_bytes_total",
            "Size of the weights file being loaded",
            weight_bytes_total.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when the model is loaded, warmed up and not draining",
            ready.clone(),
        );
        let model_info = Family::<ModelLabels, Gauge>::default();
        registry.register(
            "model_info",
            "1, labelled with what the weights' GGUF header says (set once verified)",
            model_info.clone(),
        );
        let model_parameters = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "model_parameters",
            "Parameters of the model, from the GGUF tensor shapes",
            model_parameters.clone(),
        );
        let model_context_length = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "model_context_length",
            "Context length the model was trained with, from the GGUF header",
            model_context_length.clone(),
        );
        Self {
            registry,
            model_info,
            model_parameters,
            model_context_length,
            request_duration,
            time_to_first_token,
            inter_token_latency,
            requests_in_flight,
            requests_queued,
            requests_rejected,
            prompt_tokens,
            generated_tokens,
            fetch_bytes_done,
            fetch_bytes_total,
            weight_bytes_loaded,
            weight_bytes_total,
            ready,
        }
    }

    /// Renders the registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The largest finite `le` of the histogram `name` in the text format.
    fn top_bucket(text: &str, name: &str) -> f64 {
        let prefix = format!("modelfleet_runtime_{name}_bucket{{");
        text.lines()
            .filter(|l| l.starts_with(&prefix))
            .filter_map(|l| {
                l.split("le=\"")
                    .nth(1)?
                    .split('"')
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
            .filter(|le| le.is_finite())
            .fold(0.0, f64::max)
    }

    #[test]
    fn latency_buckets_reach_past_the_longest_objective() {
        let m = Metrics::new();
        let route = RouteLabels {
            route: "/v1/completions".to_string(),
            status: 200,
        };
        m.request_duration.get_or_create(&route).observe(1.0);
        m.time_to_first_token.observe(0.1);
        let text = m.encode().unwrap();
        for name in ["request_duration_seconds", "time_to_first_token_seconds"] {
            let top = top_bucket(&text, name);
            assert!(
                top >= LONGEST_OBJECTIVE_SECONDS,
                "{name}: top bucket {top} s, objectives go up to {LONGEST_OBJECTIVE_SECONDS} s"
            );
        }
    }
}
