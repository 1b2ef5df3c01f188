//! From scraped runtime `/metrics` text to one windowed [`Observation`] for the policy.
//!
//! The operator scrapes every ready runtime pod every few seconds and keeps the previous scrape
//! of each. Counters and histogram buckets are cumulative, so a window is the difference of two
//! scrapes: [`parse_pod_metrics`] reads one scrape, [`pod_window`] subtracts two of the same pod,
//! [`summarize`] adds the pods' windows (a pod that did not answer is listed as missing, never
//! counted as zero load) and [`WindowSummary::observation`] is what the policy reads. Quantiles are
//! estimated as Prometheus' `histogram_quantile` does: linear interpolation inside the bucket
//! that holds the rank. The simulator feeds its replicas' metrics through the same functions, so
//! the policy sees the same bucket resolution in simulation as in a cluster.

use modelfleet_crds::LatencyMetric;
use prometheus_parse::{Scrape, Value};
use serde::{Deserialize, Serialize};

use super::policy::Observation;

/// Prefix of every runtime metric (`runtime/src/metrics.rs` registers them under it).
pub const METRIC_PREFIX: &str = "modelfleet_runtime_";

/// The runtime's histogram of the latency `metric` is about, less [`METRIC_PREFIX`].
pub fn histogram_name(metric: LatencyMetric) -> &'static str {
    match metric {
        LatencyMetric::RequestLatency => "request_duration_seconds",
        LatencyMetric::TimeToFirstToken => "time_to_first_token_seconds",
    }
}

/// Routes whose requests generate tokens: the only ones whose latency and rate drive scaling
/// (probes and `/metrics` scrapes are fast and would dilute the quantiles).
pub const GENERATION_ROUTES: [&str; 2] = ["/v1/completions", "/v1/chat/completions"];

/// Upper bounds of the runtime's `request_duration_seconds` buckets: 5 ms × √2^i, 40 buckets,
/// up to 62 minutes (`runtime/src/metrics.rs`). The simulator uses them so it sees the same
/// resolution. The operator itself reads the bounds from the scraped `le` labels, whatever
/// they are.
pub fn request_duration_bounds() -> Vec<f64> {
    exponential_bounds(0.005, std::f64::consts::SQRT_2, 40)
}

/// Upper bounds of the runtime's `time_to_first_token_seconds` buckets: 1 ms × √2^i, 45
/// buckets, up to 70 minutes.
pub fn time_to_first_token_bounds() -> Vec<f64> {
    exponential_bounds(0.001, std::f64::consts::SQRT_2, 45)
}

fn exponential_bounds(start: f64, factor: f64, n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    let mut b = start;
    for _ in 0..n {
        v.push(b);
        b *= factor;
    }
    v
}

/// Failures of reading a scrape.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The text could not be read line by line.
    #[error("failed to read the metrics text")]
    Read(#[source] std::io::Error),
    /// A metric every runtime exports is absent: not a Modelfleet runtime, or a broken one.
    #[error("failed to find the metric {0} in the scrape")]
    MissingMetric(&'static str),
}

impl WindowError {
    /// A bounded label for metrics and the Event reason.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read(_) => "MetricsUnreadable",
            Self::MissingMetric(_) => "MetricsIncomplete",
        }
    }
}

/// One cumulative histogram bucket: observations `<= le`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Upper bound in seconds; the last bucket is `+Inf`.
    pub le: f64,
    /// Cumulative count of observations up to `le`.
    pub count: f64,
}

/// A Prometheus histogram: cumulative buckets in ascending `le`, the last one `+Inf`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Histogram {
    /// Cumulative buckets, ascending, ending with `+Inf`. Empty when nothing was exported.
    pub buckets: Vec<Bucket>,
    /// Sum of the observed values, in seconds.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

impl Histogram {
    /// An empty histogram with these finite upper bounds (a `+Inf` bucket is added).
    pub fn with_bounds(bounds: &[f64]) -> Self {
        let mut buckets: Vec<Bucket> = bounds.iter().map(|&le| Bucket { le, count: 0.0 }).collect();
        buckets.push(Bucket {
            le: f64::INFINITY,
            count: 0.0,
        });
        Self {
            buckets,
            sum: 0.0,
            count: 0.0,
        }
    }

    /// Records one value, as the runtime does (used by the simulator).
    pub fn observe(&mut self, v: f64) {
        for b in self.buckets.iter_mut().rev() {
            if v <= b.le {
                b.count += 1.0;
            } else {
                break;
            }
        }
        self.sum += v;
        self.count += 1.0;
    }

    /// Adds another histogram into this one. Buckets are matched by bound; a bound only one side
    /// has is kept (so two runtime versions with different buckets still add up, coarsely).
    pub fn add(&mut self, other: &Histogram) {
        if self.buckets.is_empty() {
            self.buckets = other.buckets.clone();
        } else if self.buckets.len() == other.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&other.buckets)
                .all(|(a, b)| a.le == b.le)
        {
            for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                a.count += b.count;
            }
        } else {
            // Different layouts: merge on the union of bounds, reading each side's cumulative
            // count at a bound as its count at the largest bound not above it.
            let mut bounds: Vec<f64> = self
                .buckets
                .iter()
                .chain(&other.buckets)
                .map(|b| b.le)
                .collect();
            bounds.sort_by(f64::total_cmp);
            bounds.dedup();
            let at = |h: &[Bucket], le: f64| {
                h.iter()
                    .take_while(|b| b.le <= le)
                    .last()
                    .map_or(0.0, |b| b.count)
            };
            self.buckets = bounds
                .into_iter()
                .map(|le| Bucket {
                    le,
                    count: at(&self.buckets, le) + at(&other.buckets, le),
                })
                .collect();
        }
        self.sum += other.sum;
        self.count += other.count;
    }

    /// What was observed between `earlier` and `self`. When any cumulative value went down the
    /// pod restarted in between, and everything in `self` is new.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let same_layout = self.buckets.len() == earlier.buckets.len()
            && self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .all(|(a, b)| a.le == b.le);
        let reset = !same_layout
            || self.count < earlier.count
            || self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .any(|(a, b)| a.count < b.count);
        if earlier.buckets.is_empty() || reset {
            return self.clone();
        }
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(a, b)| Bucket {
                    le: a.le,
                    count: a.count - b.count,
                })
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
            count: self.count - earlier.count,
        }
    }

    /// Observations in the histogram (the `+Inf` bucket, or `count` when there are no buckets).
    pub fn total(&self) -> f64 {
        self.buckets.last().map_or(self.count, |b| b.count)
    }

    /// The `q` quantile (0..=1), interpolated linearly inside its bucket as Prometheus'
    /// `histogram_quantile` does; `None` without observations. A rank in the `+Inf` bucket
    /// returns the largest finite bound: the histogram cannot say more.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total <= 0.0 || !q.is_finite() {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for b in &self.buckets {
            if b.count >= rank && b.count > lower_count {
                if b.le.is_infinite() {
                    return Some(lower_bound);
                }
                let share = (rank - lower_count) / (b.count - lower_count);
                return Some(lower_bound + (b.le - lower_bound) * share);
            }
            if b.le.is_finite() {
                lower_bound = b.le;
            }
            lower_count = b.count;
        }
        Some(lower_bound)
    }

    /// Observations above `x`, interpolated linearly inside its bucket (as [`Self::quantile`]);
    /// those in the `+Inf` bucket count as above.
    pub fn count_above(&self, x: f64) -> f64 {
        let total = self.total();
        let mut lower_bound = 0.0;
        let mut lower_count = 0.0;
        for b in &self.buckets {
            if b.le.is_infinite() {
                break;
            }
            if x <= b.le {
                let share = ((x - lower_bound) / (b.le - lower_bound)).clamp(0.0, 1.0);
                let below = lower_count + (b.count - lower_count) * share;
                return (total - below).max(0.0);
            }
            lower_bound = b.le;
            lower_count = b.count;
        }
        (total - lower_count).max(0.0)
    }

    /// The largest finite bucket bound: a quantile above it reads as it ([`Self::quantile`]).
    /// `None` when no finite bucket was exported.
    pub fn largest_bound(&self) -> Option<f64> {
        self.buckets
            .iter()
            .rev()
            .map(|b| b.le)
            .find(|le| le.is_finite())
    }

    /// Mean of the observations, from `sum / count`.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }
}

/// What one scrape of one runtime pod says, cumulative since the pod started.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodMetrics {
    /// Durations of successful (2xx) generation requests, both routes added together. Failed and
    /// rejected requests are fast and would hide the latency of the served ones.
    pub request_duration: Histogram,
    /// Time to first token of generation requests.
    pub time_to_first_token: Histogram,
    /// Generation requests that failed (4xx other than rejections, 5xx).
    pub requests_failed: f64,
    /// Generation requests refused before decoding, all reasons (queue full, draining, ...).
    pub requests_rejected: f64,
    /// Requests being decoded now (gauge).
    pub requests_in_flight: f64,
    /// Requests waiting for a decoding slot now (gauge).
    pub requests_queued: f64,
    /// Prompt tokens processed.
    pub prompt_tokens: f64,
    /// Tokens generated.
    pub generated_tokens: f64,
}

impl PodMetrics {
    /// The histogram of the latency `metric` is about.
    pub fn latency(&self, metric: LatencyMetric) -> &Histogram {
        match metric {
            LatencyMetric::RequestLatency => &self.request_duration,
            LatencyMetric::TimeToFirstToken => &self.time_to_first_token,
        }
    }
}

/// Reads one `/metrics` text. The in-flight and queued gauges must be present (every runtime
/// exports them from the start); a histogram or counter with no samples yet reads as zero.
pub fn parse_pod_metrics(text: &str) -> Result<PodMetrics, WindowError> {
    let scrape =
        Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).map_err(WindowError::Read)?;
    let name = |suffix: &str| format!("{METRIC_PREFIX}{suffix}");
    let duration = name(histogram_name(LatencyMetric::RequestLatency));
    let ttft = name(histogram_name(LatencyMetric::TimeToFirstToken));
    let mut m = PodMetrics::default();
    let mut seen_in_flight = false;
    let mut seen_queued = false;
    let generation = |s: &prometheus_parse::Sample| {
        s.labels
            .get("route")
            .is_some_and(|r| GENERATION_ROUTES.contains(&r))
    };
    let success = |s: &prometheus_parse::Sample| {
        s.labels
            .get("status")
            .and_then(|v| v.parse::<u16>().ok())
            .is_some_and(|c| (200..300).contains(&c))
    };
    for s in &scrape.samples {
        // Counters are `<name>_total` in the OpenMetrics text prometheus-client writes, and
        // prometheus-parse reads `_sum`/`_count` of a histogram as separate untyped samples.
        let metric = s.metric.strip_suffix("_total").unwrap_or(&s.metric);
        let v = match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        };
        if metric == duration {
            if let Value::Histogram(h) = &s.value
                && generation(s)
            {
                if success(s) {
                    m.request_duration.add(&to_histogram(h, 0.0, 0.0));
                } else if s.labels.get("status") != Some("429") {
                    m.requests_failed += h.last().map_or(0.0, |b| b.count);
                }
            }
        } else if metric == format!("{duration}_sum") {
            if generation(s) && success(s) {
                m.request_duration.sum += v.unwrap_or(0.0);
            }
        } else if metric == format!("{duration}_count") {
            if generation(s) && success(s) {
                m.request_duration.count += v.unwrap_or(0.0);
            }
        } else if metric == ttft {
            if let Value::Histogram(h) = &s.value {
                m.time_to_first_token.add(&to_histogram(h, 0.0, 0.0));
            }
        } else if metric == format!("{ttft}_sum") {
            m.time_to_first_token.sum += v.unwrap_or(0.0);
        } else if metric == format!("{ttft}_count") {
            m.time_to_first_token.count += v.unwrap_or(0.0);
        } else if metric == name("requests_in_flight") {
            m.requests_in_flight += v.unwrap_or(0.0);
            seen_in_flight = true;
        } else if metric == name("requests_queued") {
            m.requests_queued += v.unwrap_or(0.0);
            seen_queued = true;
        } else if metric == name("requests_rejected") {
            m.requests_rejected += v.unwrap_or(0.0);
        } else if metric == name("prompt_tokens") {
            m.prompt_tokens += v.unwrap_or(0.0);
        } else if metric == name("generated_tokens") {
            m.generated_tokens += v.unwrap_or(0.0);
        }
    }
    if !seen_in_flight {
        return Err(WindowError::MissingMetric(
            "modelfleet_runtime_requests_in_flight",
        ));
    }
    if !seen_queued {
        return Err(WindowError::MissingMetric(
            "modelfleet_runtime_requests_queued",
        ));
    }
    Ok(m)
}

fn to_histogram(h: &[prometheus_parse::HistogramCount], sum: f64, count: f64) -> Histogram {
    let mut buckets: Vec<Bucket> = h
        .iter()
        .map(|b| Bucket {
            le: b.less_than,
            count: b.count,
        })
        .collect();
    buckets.sort_by(|a, b| a.le.total_cmp(&b.le));
    Histogram {
        buckets,
        sum,
        count,
    }
}

/// What one pod did between two of its scrapes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct PodWindow {
    /// Seconds between the two scrapes.
    pub seconds: f64,
    /// Durations of the successful generation requests that finished in the window.
    pub request_duration: Histogram,
    /// Time to first token of the generation requests that got one in the window.
    pub time_to_first_token: Histogram,
    /// Generation requests that failed in the window.
    pub failed: f64,
    /// Requests refused in the window.
    pub rejected: f64,
    /// Prompt tokens processed in the window.
    pub prompt_tokens: f64,
    /// Tokens generated in the window.
    pub generated_tokens: f64,
    /// In-flight requests at the later scrape.
    pub in_flight: f64,
    /// Queued requests at the later scrape.
    pub queued: f64,
    /// Generation requests that arrived in the window: those that finished, failed or were
    /// refused in it, plus the growth of the requests in the pod (decoding and queued). A step
    /// shows when it arrives, not a latency later when its requests finish.
    pub arrived: f64,
}

/// The window between two scrapes of the same pod, `seconds` apart. A counter that went down
/// means the pod restarted: its value since the restart is used, and every request in the pod
/// arrived since.
pub fn pod_window(earlier: &PodMetrics, later: &PodMetrics, seconds: f64) -> PodWindow {
    let counter = |a: f64, b: f64| if b >= a { b - a } else { b };
    let restarted = later.request_duration.total() < earlier.request_duration.total()
        || later.requests_failed < earlier.requests_failed
        || later.requests_rejected < earlier.requests_rejected;
    let inside = |m: &PodMetrics| m.requests_in_flight + m.requests_queued;
    let growth = inside(later) - if restarted { 0.0 } else { inside(earlier) };
    let request_duration = later.request_duration.since(&earlier.request_duration);
    let finished = request_duration.total();
    let failed = counter(earlier.requests_failed, later.requests_failed);
    let rejected = counter(earlier.requests_rejected, later.requests_rejected);
    PodWindow {
        arrived: (finished + failed + rejected + growth).max(0.0),
        seconds,
        request_duration,
        time_to_first_token: later
            .time_to_first_token
            .since(&earlier.time_to_first_token),
        failed,
        rejected,
        prompt_tokens: counter(earlier.prompt_tokens, later.prompt_tokens),
        generated_tokens: counter(earlier.generated_tokens, later.generated_tokens),
        in_flight: later.requests_in_flight,
        queued: later.requests_queued,
    }
}

/// One pod's part of a window: measured, or missing with the reason (timeout, refused,
/// unparsable, first scrape so no window yet).
#[derive(Clone, Debug, PartialEq)]
pub enum PodReport {
    /// The pod answered twice and this is the difference.
    Measured {
        /// Pod name, for the missing-pod message only (never a metric label).
        pod: String,
        /// What it did in the window.
        window: PodWindow,
    },
    /// The pod did not give a usable window.
    Missing {
        /// Pod name.
        pod: String,
        /// Why, in words (`timed out after 2s`, `connection refused`, ...).
        reason: String,
    },
}

/// p50, p95 and p99 of one latency over a window, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct Quantiles {
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Mean, from the histogram's sum and count.
    pub mean: Option<f64>,
}

impl Quantiles {
    fn of(h: &Histogram) -> Self {
        Self {
            p50: h.quantile(0.5),
            p95: h.quantile(0.95),
            p99: h.quantile(0.99),
            mean: h.mean(),
        }
    }
}

/// A window across the pods of one ModelService: the rates add up, quantiles come from the
/// added histograms, gauges add up.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct WindowSummary {
    /// Mean window length over the measured pods, seconds.
    pub seconds: f64,
    /// Pods that gave a window.
    pub pods_measured: u32,
    /// Pods that did not, as `name: reason`.
    pub pods_missing: Vec<String>,
    /// Successful generation requests finished per second.
    pub request_rate: f64,
    /// Requests refused per second.
    pub rejected_rate: f64,
    /// Generation requests failed per second.
    pub failed_rate: f64,
    /// Generation requests that arrived per second ([`PodWindow::arrived`]).
    pub arrival_rate: f64,
    /// Request duration of successful generation requests.
    pub request_duration: Quantiles,
    /// Time to first token.
    pub time_to_first_token: Quantiles,
    /// Time-averaged requests in the pods (Little's law: summed durations of the requests that
    /// finished over the window length); `None` when nothing finished.
    pub concurrency: Option<f64>,
    /// In-flight requests at the last scrapes, summed.
    pub in_flight: f64,
    /// Queued requests at the last scrapes, summed.
    pub queued: f64,
    /// Prompt tokens per second.
    pub prompt_token_rate: f64,
    /// Generated tokens per second.
    pub generated_token_rate: f64,
    /// The pods' request-duration histograms of the window, added up.
    #[serde(skip)]
    pub duration_histogram: Histogram,
    /// The pods' time-to-first-token histograms of the window, added up.
    #[serde(skip)]
    pub ttft_histogram: Histogram,
}

/// Adds up the pods' windows. Missing pods add nothing and are listed by name.
pub fn summarize(reports: &[PodReport]) -> WindowSummary {
    let mut s = WindowSummary::default();
    let mut duration = Histogram::default();
    let mut ttft = Histogram::default();
    let mut concurrency = 0.0;
    for r in reports {
        match r {
            PodReport::Missing { pod, reason } => s.pods_missing.push(format!("{pod}: {reason}")),
            PodReport::Measured { window: w, .. } => {
                if w.seconds <= 0.0 {
                    continue;
                }
                s.pods_measured += 1;
                s.seconds += w.seconds;
                s.request_rate += w.request_duration.count / w.seconds;
                s.rejected_rate += w.rejected / w.seconds;
                s.failed_rate += w.failed / w.seconds;
                s.arrival_rate += w.arrived / w.seconds;
                s.prompt_token_rate += w.prompt_tokens / w.seconds;
                s.generated_token_rate += w.generated_tokens / w.seconds;
                concurrency += w.request_duration.sum / w.seconds;
                s.in_flight += w.in_flight;
                s.queued += w.queued;
                duration.add(&w.request_duration);
                ttft.add(&w.time_to_first_token);
            }
        }
    }
    if s.pods_measured > 0 {
        s.seconds /= f64::from(s.pods_measured);
    }
    s.request_duration = Quantiles::of(&duration);
    s.time_to_first_token = Quantiles::of(&ttft);
    s.concurrency = (duration.count > 0.0).then_some(concurrency);
    s.duration_histogram = duration;
    s.ttft_histogram = ttft;
    s
}

impl WindowSummary {
    /// The policy's input for this window, at `at` (seconds on the caller's clock), for the
    /// latency the objective is about, with the requests over `objective` (seconds) counted.
    pub fn observation(&self, metric: LatencyMetric, objective: f64, at: f64) -> Observation {
        let (q, h) = match metric {
            LatencyMetric::RequestLatency => (&self.request_duration, &self.duration_histogram),
            LatencyMetric::TimeToFirstToken => (&self.time_to_first_token, &self.ttft_histogram),
        };
        Observation {
            at,
            window_seconds: self.seconds,
            replicas_measured: self.pods_measured,
            replicas_missing: u32::try_from(self.pods_missing.len()).unwrap_or(u32::MAX),
            completed_rate: self.request_rate,
            rejected_rate: self.rejected_rate,
            arrival_rate: self.arrival_rate,
            p95: q.p95,
            mean_latency: q.mean,
            request_latency_mean: self.request_duration.mean,
            concurrency: self.concurrency,
            in_flight: self.in_flight,
            queued: self.queued,
            over_objective: h.count_above(objective),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::EncodeLabelSet;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    use prometheus_client::metrics::histogram::Histogram as PHistogram;
    use prometheus_client::registry::Registry;

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct RouteLabels {
        route: String,
        status: u16,
    }

    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct ReasonLabels {
        reason: &'static str,
    }

    /// The runtime's registry, rebuilt with the same names, kinds and buckets as
    /// `runtime/src/metrics.rs`, so the parser is tested on the exact text it will read.
    struct FakeRuntime {
        registry: Registry,
        duration: Family<RouteLabels, PHistogram, fn() -> PHistogram>,
        ttft: PHistogram,
        in_flight: Gauge,
        queued: Gauge,
        rejected: Family<ReasonLabels, Counter>,
        generated: Counter,
    }

    fn duration_histogram() -> PHistogram {
        PHistogram::new(request_duration_bounds())
    }

    impl FakeRuntime {
        fn new() -> Self {
            let mut registry = Registry::with_prefix("modelfleet_runtime");
            let duration =
                Family::<RouteLabels, PHistogram, fn() -> PHistogram>::new_with_constructor(
                    duration_histogram as fn() -> PHistogram,
                );
            registry.register("request_duration_seconds", "d", duration.clone());
            let ttft = PHistogram::new(time_to_first_token_bounds());
            registry.register("time_to_first_token_seconds", "t", ttft.clone());
            let in_flight = Gauge::default();
            registry.register("requests_in_flight", "i", in_flight.clone());
            let queued = Gauge::default();
            registry.register("requests_queued", "q", queued.clone());
            let rejected = Family::<ReasonLabels, Counter>::default();
            registry.register("requests_rejected", "r", rejected.clone());
            let prompt: Counter = Counter::default();
            registry.register("prompt_tokens", "p", prompt);
            let generated = Counter::default();
            registry.register("generated_tokens", "g", generated.clone());
            Self {
                registry,
                duration,
                ttft,
                in_flight,
                queued,
                rejected,
                generated,
            }
        }

        fn observe(&self, route: &str, status: u16, secs: f64) {
            self.duration
                .get_or_create(&RouteLabels {
                    route: route.to_string(),
                    status,
                })
                .observe(secs);
        }

        fn text(&self) -> String {
            let mut out = String::new();
            prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
            out
        }
    }

    #[test]
    fn parses_the_runtime_text_format() {
        let rt = FakeRuntime::new();
        rt.observe("/v1/completions", 200, 0.3);
        rt.observe("/v1/chat/completions", 200, 1.5);
        rt.observe("/v1/chat/completions", 500, 9.0);
        rt.observe("/v1/chat/completions", 429, 0.001);
        rt.observe("/livez", 200, 0.001);
        rt.ttft.observe(0.2);
        rt.in_flight.set(3);
        rt.queued.set(2);
        rt.rejected
            .get_or_create(&ReasonLabels {
                reason: "queue_full",
            })
            .inc_by(4);
        rt.generated.inc_by(100);
        let m = parse_pod_metrics(&rt.text()).unwrap();
        assert_eq!(m.request_duration.total(), 2.0, "{m:?}");
        assert_eq!(m.request_duration.count, 2.0);
        assert!((m.request_duration.sum - 1.8).abs() < 1e-9);
        assert_eq!(m.requests_failed, 1.0);
        assert_eq!(m.time_to_first_token.count, 1.0);
        assert_eq!(m.requests_in_flight, 3.0);
        assert_eq!(m.requests_queued, 2.0);
        assert_eq!(m.requests_rejected, 4.0);
        assert_eq!(m.generated_tokens, 100.0);
        assert_eq!(m.request_duration.buckets.len(), 41, "40 bounds and +Inf");
    }

    #[test]
    fn a_fresh_runtime_parses_with_empty_histograms() {
        let m = parse_pod_metrics(&FakeRuntime::new().text()).unwrap();
        assert_eq!(m.request_duration.total(), 0.0);
        assert_eq!(m.request_duration.quantile(0.95), None);
    }

    #[test]
    fn text_without_the_gauges_is_an_error() {
        let e = parse_pod_metrics("# TYPE x counter\nx_total 1\n").unwrap_err();
        assert_eq!(e.category(), "MetricsIncomplete");
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        let mut h = Histogram::with_bounds(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.5, 1.5, 3.0] {
            h.observe(v);
        }
        // rank 0.5*4 = 2 lies in (1,2] holding ranks 1..3: 1 + (2-1)/2 * 1 = 1.5
        assert_eq!(h.quantile(0.5), Some(1.5));
        // rank 3.8 in (2,4] holding ranks 3..4: 2 + 0.8 * 2 = 3.6
        assert!((h.quantile(0.95).unwrap() - 3.6).abs() < 1e-9);
        // first bucket interpolates from 0
        assert_eq!(h.quantile(0.125), Some(0.5));
        h.observe(100.0);
        // rank in +Inf: the largest finite bound
        assert_eq!(h.quantile(0.99), Some(4.0));
        assert_eq!(Histogram::with_bounds(&[1.0]).quantile(0.5), None);
    }

    #[test]
    fn counts_above_a_latency_interpolate_inside_the_bucket_like_the_quantiles() {
        let mut h = Histogram::with_bounds(&[1.0, 2.0, 4.0]);
        for v in [0.5, 1.5, 1.5, 3.0] {
            h.observe(v);
        }
        assert_eq!(h.count_above(0.0), 4.0);
        // (1,2] holds 2: half of them lie above 1.5.
        assert_eq!(h.count_above(1.5), 2.0);
        assert_eq!(h.count_above(2.0), 1.0);
        // The inverse of the quantile: 5 % of 4 lie above the p95.
        let p95 = h.quantile(0.95).unwrap();
        assert!((h.count_above(p95) - 0.2).abs() < 1e-9);
        assert_eq!(h.count_above(4.0), 0.0);
        // The `+Inf` bucket counts as above whatever the latency.
        h.observe(100.0);
        assert_eq!(h.count_above(50.0), 1.0);
        assert_eq!(Histogram::with_bounds(&[1.0]).count_above(0.5), 0.0);
    }

    #[test]
    fn windows_are_deltas_of_cumulative_scrapes_and_survive_restarts() {
        let rt = FakeRuntime::new();
        for _ in 0..10 {
            rt.observe("/v1/completions", 200, 0.1);
        }
        let a = parse_pod_metrics(&rt.text()).unwrap();
        for _ in 0..20 {
            rt.observe("/v1/completions", 200, 3.0);
        }
        // Arrived too: 4 refused, 3 decoding and 2 queued at the end.
        rt.rejected
            .get_or_create(&ReasonLabels {
                reason: "queue_full",
            })
            .inc_by(4);
        rt.in_flight.set(3);
        rt.queued.set(2);
        let b = parse_pod_metrics(&rt.text()).unwrap();
        let w = pod_window(&a, &b, 10.0);
        assert_eq!(w.request_duration.count, 20.0);
        assert_eq!(w.arrived, 20.0 + 4.0 + 5.0);
        let p95 = w.request_duration.quantile(0.95).unwrap();
        assert!((2.56..=5.12).contains(&p95), "{p95}");
        // Requests that leave the pod arrived in an earlier window: 4 finish, none arrive.
        for _ in 0..4 {
            rt.observe("/v1/completions", 200, 3.0);
        }
        rt.in_flight.set(1);
        rt.queued.set(0);
        let later = parse_pod_metrics(&rt.text()).unwrap();
        assert_eq!(pod_window(&b, &later, 10.0).arrived, 0.0);
        // A restarted pod counts from zero again, and every request in it arrived since.
        let fresh = FakeRuntime::new();
        fresh.observe("/v1/completions", 200, 0.1);
        fresh.in_flight.set(1);
        let c = parse_pod_metrics(&fresh.text()).unwrap();
        assert_eq!(pod_window(&b, &c, 10.0).request_duration.count, 1.0);
        assert_eq!(pod_window(&b, &c, 10.0).arrived, 2.0);
    }

    #[test]
    fn latencies_up_to_the_longest_objective_are_measured() {
        // An objective may be up to 1 h (`spec.scaling.objective.target`): a p95 above it must
        // show above it. With a top bucket of 23 s, a 30 s time to first token read as 23 s.
        for bounds in [request_duration_bounds(), time_to_first_token_bounds()] {
            for latency in [40.0, 3000.0] {
                let mut h = Histogram::with_bounds(&bounds);
                for _ in 0..20 {
                    h.observe(latency);
                }
                let p95 = h.quantile(0.95).unwrap();
                assert!(p95 > 0.7 * latency, "{latency} s read as {p95} s");
            }
        }
    }

    #[test]
    fn summaries_add_pods_and_list_the_missing_ones() {
        let mut h = Histogram::with_bounds(&request_duration_bounds());
        for _ in 0..50 {
            h.observe(1.0);
        }
        let w = PodWindow {
            seconds: 10.0,
            request_duration: h.clone(),
            in_flight: 2.0,
            queued: 1.0,
            rejected: 5.0,
            arrived: 56.0,
            ..PodWindow::default()
        };
        let reports = vec![
            PodReport::Measured {
                pod: "a".into(),
                window: w.clone(),
            },
            PodReport::Measured {
                pod: "b".into(),
                window: w,
            },
            PodReport::Missing {
                pod: "c".into(),
                reason: "timed out after 2s".into(),
            },
        ];
        let s = summarize(&reports);
        assert_eq!(s.pods_measured, 2);
        assert_eq!(s.pods_missing, vec!["c: timed out after 2s".to_string()]);
        assert!((s.request_rate - 10.0).abs() < 1e-9);
        assert!((s.rejected_rate - 1.0).abs() < 1e-9);
        assert_eq!(s.in_flight, 4.0);
        assert_eq!(s.queued, 2.0);
        assert!((s.concurrency.unwrap() - 10.0).abs() < 1e-9);
        let o = s.observation(LatencyMetric::RequestLatency, 30.0, 100.0);
        assert_eq!(o.replicas_measured, 2);
        assert_eq!(o.replicas_missing, 1);
        assert!((o.arrival_rate - 11.2).abs() < 1e-9, "{}", o.arrival_rate);
        assert!(o.p95.is_some());
        // The 100 requests took 1 s each: within an objective of 30 s, over one of 0.5 s.
        assert_eq!(o.over_objective, 0.0);
        let strict = s.observation(LatencyMetric::RequestLatency, 0.5, 100.0);
        assert_eq!(strict.over_objective, 100.0);
        // No first token was timed.
        let ttft = s.observation(LatencyMetric::TimeToFirstToken, 0.5, 100.0);
        assert_eq!(ttft.over_objective, 0.0);
        // Nobody answered: no latency and no rate, not zero latency.
        let none = summarize(&[PodReport::Missing {
            pod: "a".into(),
            reason: "refused".into(),
        }]);
        assert_eq!(none.pods_measured, 0);
        assert_eq!(none.request_duration.p95, None);
        assert_eq!(none.concurrency, None);
    }

    #[test]
    fn histograms_with_different_buckets_still_add() {
        let mut a = Histogram::with_bounds(&[1.0, 2.0]);
        a.observe(0.5);
        let mut b = Histogram::with_bounds(&[1.5]);
        b.observe(1.2);
        a.add(&b);
        assert_eq!(a.total(), 2.0);
        assert_eq!(a.count, 2.0);
    }
}
