//! The autoscaling simulator: replicas of the CPU runtime serving a request stream, scaled by
//! Modelfleet's policy (the operator's own `autoscale::policy`, fed through its own
//! `autoscale::window` code) or by a peer's documented policy (`peers`), all on the same stream.
//!
//! Time advances in fixed steps of [`STEP`] seconds. A replica decodes up to `max_batch`
//! requests at once; a batch of `b` slows every request's per-token progress by
//! `1 + α·(b − 1)`, with `α` chosen so that a full batch gives `batch_speedup` times the
//! single-stream throughput (continuous batching on CPU: the step cost grows with the batch).
//! Requests beyond the batch wait in a bounded queue, are refused when it is full, and a new
//! replica serves only after its cold start. A removed replica drains: it takes no new requests
//! and finishes its own. Replica-seconds count starting, serving and draining time.
#![forbid(unsafe_code)]

pub mod peers;
pub mod workload;

use std::collections::VecDeque;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use modelfleet_crds::{LatencyMetric, LearnedScaling};
use modelfleet_operator::autoscale::learned::{learned_from, learned_moved, model_from};
use modelfleet_operator::autoscale::policy::{
    self, LatencyModel, Observation, PastDecision, PolicyConfig, PolicyInput,
};
use modelfleet_operator::autoscale::window::{
    self, Histogram, PodMetrics, PodReport, request_duration_bounds, time_to_first_token_bounds,
};
use modelfleet_operator::controller::autoscaler;
use serde::Serialize;

use crate::workload::Request;

/// Simulation step, seconds: small against every latency and interval that matters (latencies
/// are seconds, decisions every 2-15 s).
pub const STEP: f64 = 0.1;

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The trace could not be read.
    #[error("failed to read the trace {0}")]
    ReadTrace(String, #[source] std::io::Error),
    /// A trace line is not `TIMESTAMP,ContextTokens,GeneratedTokens`.
    #[error("failed to parse line {line} of the trace: {reason}")]
    ParseTrace {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// The trace has no requests.
    #[error("failed to use the trace: it holds no requests")]
    EmptyTrace,
}

/// The service model of one replica. Defaults: the project's CPU runtime on SmolLM2-135M
/// (≈75 decode tok/s single stream, ≈190 prompt tok/s, 4 slots giving ≈2.2× throughput), with
/// the runtime's default queue of 64 and context cap of 4096 tokens.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceModel {
    /// Prompt tokens per second of one request alone.
    pub prefill_tps: f64,
    /// Generated tokens per second of one request alone.
    pub decode_tps: f64,
    /// Requests decoded at once.
    pub max_batch: u32,
    /// Throughput of a full batch relative to one request alone.
    pub batch_speedup: f64,
    /// Requests a replica queues beyond the batch before refusing.
    pub max_queue: u32,
    /// Prompt plus completion tokens a request may hold.
    pub context: u32,
}

impl Default for ServiceModel {
    fn default() -> Self {
        Self {
            prefill_tps: 190.0,
            decode_tps: 75.0,
            max_batch: 4,
            batch_speedup: 2.2,
            max_queue: 64,
            context: 4096,
        }
    }
}

impl ServiceModel {
    /// Per-request slowdown of a batch of `b`: `1 + α(b − 1)`.
    fn slowdown(&self, b: usize) -> f64 {
        let c = f64::from(self.max_batch.max(1));
        let alpha = if c > 1.0 {
            (c / self.batch_speedup.max(1.0) - 1.0) / (c - 1.0)
        } else {
            0.0
        };
        1.0 + alpha * (b.saturating_sub(1) as f64)
    }
}

/// Which autoscaler drives the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum PolicyKind {
    /// Modelfleet's policy (`operator/src/autoscale/policy.rs`).
    Modelfleet,
    /// Kubernetes HPA on the p95 latency.
    Hpa,
    /// Knative KPA on concurrency.
    Kpa,
    /// AIBrix APA on concurrency per pod.
    Apa,
    /// KubeAI on active requests.
    Kubeai,
}

impl PolicyKind {
    /// Every policy, ours first.
    pub const ALL: [PolicyKind; 5] = [
        PolicyKind::Modelfleet,
        PolicyKind::Hpa,
        PolicyKind::Kpa,
        PolicyKind::Apa,
        PolicyKind::Kubeai,
    ];

    /// The name in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Modelfleet => "modelfleet",
            Self::Hpa => "hpa",
            Self::Kpa => "kpa",
            Self::Apa => "apa",
            Self::Kubeai => "kubeai",
        }
    }
}

/// The knobs of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// The replica's service model.
    pub service: ServiceModel,
    /// p95 objective, seconds.
    pub objective: f64,
    /// Which latency the objective is about.
    pub metric: LatencyMetric,
    /// Seconds from asking for a replica to its serving.
    pub cold_start: f64,
    /// Fewest replicas.
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// Modelfleet's scale-down delay, seconds (the CRD default, 5 min).
    pub scale_down_delay: f64,
    /// Replicas at the start.
    pub initial_replicas: u32,
    /// Seconds at the start left out of every figure (the fleet settles from its initial size).
    pub warmup: f64,
    /// Modelfleet's operator restarts every this many seconds, when set.
    pub operator_restarts: Option<f64>,
}

/// What is measured in one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunResult {
    /// Share of requests (arrived after the warm-up) whose latency met the objective; refused
    /// requests miss it.
    pub slo_attainment: f64,
    /// Seconds in 10 s bins of arrival time where fewer than 95 % of the requests met it.
    pub violation_seconds: f64,
    /// Integral of the replicas that exist (starting, serving, draining), seconds.
    pub replica_seconds: f64,
    /// Mean over the workload's load steps up of the seconds until the ready replicas reach the
    /// count before the step scaled by the load ratio; `None` for workloads without steps.
    pub reaction_seconds: Option<f64>,
    /// Changes of direction of the desired replica count.
    pub reversals: u32,
    /// Requests refused (queues full, or no replica ready).
    pub rejected: u64,
    /// Desired replica count at each decision that changed it: (time, count).
    pub scale_events: Vec<(f64, u32)>,
}

#[derive(Clone, Debug)]
struct Active {
    arrival: f64,
    prefill_left: f64,
    decode_left: f64,
    first_token: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    Starting { ready_at_step: u64 },
    Ready,
    Draining,
}

#[derive(Clone, Debug)]
struct Replica {
    phase: Phase,
    batch: Vec<Active>,
    queue: VecDeque<Active>,
    metrics: PodMetrics,
    /// The previous scrape by the Modelfleet policy, for its window.
    last_scrape: Option<(f64, PodMetrics)>,
}

impl Replica {
    fn new(phase: Phase) -> Self {
        Self {
            phase,
            batch: Vec::new(),
            queue: VecDeque::new(),
            metrics: PodMetrics {
                request_duration: Histogram::with_bounds(&request_duration_bounds()),
                time_to_first_token: Histogram::with_bounds(&time_to_first_token_bounds()),
                ..PodMetrics::default()
            },
            last_scrape: None,
        }
    }

    fn load(&self) -> usize {
        self.batch.len() + self.queue.len()
    }
}

/// One-second samples every peer reads: what a metrics pipeline would collect.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Requests in the ready replicas (decoding plus queued), one per second, newest last.
    pub concurrency: VecDeque<f64>,
    /// Ready replicas at each sample.
    pub ready: VecDeque<u32>,
    /// Cumulative latency histogram of the objective's metric over the whole fleet, per second.
    pub latency: VecDeque<Histogram>,
}

impl Samples {
    const KEEP: usize = 900;

    fn push(&mut self, concurrency: f64, ready: u32, latency: Histogram) {
        self.concurrency.push_back(concurrency);
        self.ready.push_back(ready);
        self.latency.push_back(latency);
        if self.concurrency.len() > Self::KEEP {
            self.concurrency.pop_front();
            self.ready.pop_front();
            self.latency.pop_front();
        }
    }

    /// Mean concurrency over the last `secs` samples.
    pub fn mean_concurrency(&self, secs: usize) -> Option<f64> {
        let n = secs.min(self.concurrency.len());
        (n > 0).then(|| self.concurrency.iter().rev().take(n).sum::<f64>() / n as f64)
    }

    /// Mean concurrency per ready replica over the last `secs` samples.
    pub fn mean_per_pod(&self, secs: usize) -> Option<f64> {
        let n = secs.min(self.concurrency.len());
        (n > 0).then(|| {
            self.concurrency
                .iter()
                .rev()
                .zip(self.ready.iter().rev())
                .take(n)
                .map(|(c, r)| c / f64::from((*r).max(1)))
                .sum::<f64>()
                / n as f64
        })
    }

    /// p95 of the latency over the last `secs` seconds.
    pub fn p95(&self, secs: usize) -> Option<f64> {
        let last = self.latency.back()?;
        let idx = self.latency.len().saturating_sub(secs + 1);
        let first = self.latency.get(idx)?;
        last.since(first).quantile(0.95)
    }
}

/// What an autoscaler sees at a decision.
#[derive(Debug)]
pub struct View<'a> {
    /// Now, seconds.
    pub now: f64,
    /// Replicas asked for now.
    pub desired: u32,
    /// Replicas serving.
    pub ready: u32,
    /// Replicas starting.
    pub starting: u32,
    /// The one-second samples.
    pub samples: &'a Samples,
}

/// The Modelfleet policy as the operator runs it: scrape every 5 s, window, decide.
#[derive(Debug)]
struct Ours {
    observations: Vec<Observation>,
    decisions: Vec<PastDecision>,
    model: Option<LatencyModel>,
    /// When the operator last (re)started, simulated seconds.
    restarted: f64,
    /// `status.autoscaling.learned` as the operator writes it, and when it last looked.
    status: Option<LearnedScaling>,
    status_refreshed: f64,
}

impl Default for Ours {
    fn default() -> Self {
        Self {
            observations: Vec::new(),
            decisions: Vec::new(),
            model: None,
            restarted: 0.0,
            status: None,
            // A new operator refreshes status at its first decision.
            status_refreshed: f64::NEG_INFINITY,
        }
    }
}

/// The wall-clock time of the simulated clock's zero (any will do: status converts through it).
const EPOCH: Timestamp = Timestamp::UNIX_EPOCH;

/// Seconds between Modelfleet's scrapes and decisions (the lead's scrape loop uses a few
/// seconds).
pub const OURS_INTERVAL: f64 = 5.0;

/// Runs one policy on one request stream.
pub fn run(cfg: &RunConfig, requests: &[Request], end: f64, policy: PolicyKind) -> RunResult {
    let svc = &cfg.service;
    let mut replicas: Vec<Replica> = (0..cfg.initial_replicas.max(1))
        .map(|_| Replica::new(Phase::Ready))
        .collect();
    let mut desired = cfg.initial_replicas.max(1);
    let mut peer = peers::Peer::new(policy, cfg);
    let mut ours = Ours::default();
    let mut samples = Samples::default();
    let mut fleet_latency = Histogram::with_bounds(&match cfg.metric {
        LatencyMetric::RequestLatency => request_duration_bounds(),
        LatencyMetric::TimeToFirstToken => time_to_first_token_bounds(),
    });
    let cold_steps = (cfg.cold_start / STEP).round() as u64;
    let steps = (end / STEP).ceil() as u64;
    let interval = match policy {
        PolicyKind::Modelfleet => OURS_INTERVAL,
        _ => peer.interval(),
    };
    let interval_steps = ((interval / STEP).round() as u64).max(1);
    let per_second = (1.0 / STEP).round() as u64;

    let mut next_req = 0usize;
    // Per 10 s arrival bin: (met, total).
    let bins = (end / 10.0).ceil() as usize + 1;
    let mut bin_met = vec![0u64; bins];
    let mut bin_total = vec![0u64; bins];
    let mut met = 0u64;
    let mut total = 0u64;
    let mut rejected = 0u64;
    let mut replica_seconds = 0.0;
    let mut ready_series: Vec<(f64, u32)> = Vec::new();
    let mut scale_events = Vec::new();
    let mut last_dir = 0i32;
    let mut reversals = 0u32;
    let objective = cfg.objective;
    let metric = cfg.metric;

    let mut record = |arrival: f64, latency: f64, ok_request: bool| {
        if arrival < cfg.warmup {
            return;
        }
        let ok = ok_request && latency <= objective;
        let b = ((arrival / 10.0) as usize).min(bins - 1);
        bin_total[b] += 1;
        total += 1;
        if ok {
            bin_met[b] += 1;
            met += 1;
        }
    };

    for step in 0..steps {
        let now = step as f64 * STEP;
        // Replicas whose cold start ended.
        for r in &mut replicas {
            if let Phase::Starting { ready_at_step } = r.phase
                && step >= ready_at_step
            {
                r.phase = Phase::Ready;
            }
        }
        // Arrivals: least-loaded ready replica, as a least-request balancer would.
        while next_req < requests.len() && requests[next_req].at < now + STEP {
            let req = &requests[next_req];
            next_req += 1;
            let target = replicas
                .iter_mut()
                .filter(|r| r.phase == Phase::Ready)
                .min_by_key(|r| r.load());
            let active = Active {
                arrival: req.at,
                prefill_left: f64::from(req.prompt) / svc.prefill_tps,
                decode_left: f64::from(req.output) / svc.decode_tps,
                first_token: None,
            };
            match target {
                Some(r) if r.batch.len() < svc.max_batch as usize => r.batch.push(active),
                Some(r) if r.queue.len() < svc.max_queue as usize => r.queue.push_back(active),
                Some(r) => {
                    r.metrics.requests_rejected += 1.0;
                    rejected += u64::from(req.at >= cfg.warmup);
                    record(req.at, f64::INFINITY, false);
                }
                None => {
                    rejected += u64::from(req.at >= cfg.warmup);
                    record(req.at, f64::INFINITY, false);
                }
            }
        }
        // Progress every batch by one step.
        let t_end = now + STEP;
        for r in &mut replicas {
            if r.batch.is_empty() {
                continue;
            }
            let speed = STEP / svc.slowdown(r.batch.len());
            let mut i = 0;
            while i < r.batch.len() {
                let a = &mut r.batch[i];
                let mut budget = speed;
                if a.prefill_left > 0.0 {
                    let used = budget.min(a.prefill_left);
                    a.prefill_left -= used;
                    budget -= used;
                    if a.prefill_left <= 1e-12 {
                        a.prefill_left = 0.0;
                        let ttft = t_end - a.arrival;
                        a.first_token = Some(ttft);
                        r.metrics.time_to_first_token.observe(ttft);
                    }
                }
                if a.prefill_left <= 0.0 {
                    a.decode_left -= budget;
                }
                if a.prefill_left <= 0.0 && a.decode_left <= 1e-12 {
                    let done = r.batch.swap_remove(i);
                    let latency = t_end - done.arrival;
                    r.metrics.request_duration.observe(latency);
                    let value = match metric {
                        LatencyMetric::RequestLatency => latency,
                        LatencyMetric::TimeToFirstToken => done.first_token.unwrap_or(latency),
                    };
                    fleet_latency.observe(value);
                    record(done.arrival, value, true);
                    if let Some(next) = r.queue.pop_front() {
                        r.batch.push(next);
                    }
                } else {
                    i += 1;
                }
            }
        }
        // Drained replicas leave.
        replicas.retain(|r| !(r.phase == Phase::Draining && r.load() == 0));
        if now >= cfg.warmup {
            replica_seconds += replicas.len() as f64 * STEP;
        }
        let ready = replicas.iter().filter(|r| r.phase == Phase::Ready).count() as u32;
        let starting = replicas
            .iter()
            .filter(|r| matches!(r.phase, Phase::Starting { .. }))
            .count() as u32;
        if step % per_second == 0 {
            let conc: usize = replicas
                .iter()
                .filter(|r| r.phase == Phase::Ready)
                .map(Replica::load)
                .sum();
            samples.push(conc as f64, ready, fleet_latency.clone());
            ready_series.push((now, ready));
        }
        if step > 0 && step % interval_steps == 0 {
            let new = match policy {
                PolicyKind::Modelfleet => ours.decide(cfg, &mut replicas, now, desired, ready),
                _ => peer.decide(&View {
                    now,
                    desired,
                    ready,
                    starting,
                    samples: &samples,
                }),
            }
            .clamp(cfg.min_replicas.max(1), cfg.max_replicas);
            if new != desired {
                let dir = if new > desired { 1 } else { -1 };
                if last_dir != 0 && dir != last_dir && now >= cfg.warmup {
                    reversals += 1;
                }
                last_dir = dir;
                scale_events.push((now, new));
                desired = new;
            }
            apply(&mut replicas, desired, step + cold_steps);
        }
    }

    let violation_seconds = bin_total
        .iter()
        .zip(&bin_met)
        .filter(|(t, m)| **t > 0 && (**m as f64) < 0.95 * (**t as f64))
        .count() as f64
        * 10.0;
    RunResult {
        slo_attainment: if total > 0 {
            met as f64 / total as f64
        } else {
            1.0
        },
        violation_seconds,
        replica_seconds,
        reaction_seconds: None,
        reversals,
        rejected,
        scale_events,
    }
    .with_reaction(&ready_series, requests, cfg.warmup)
}

impl RunResult {
    fn with_reaction(mut self, ready: &[(f64, u32)], requests: &[Request], warmup: f64) -> Self {
        let steps = workload::steps_up(requests, warmup);
        if steps.is_empty() {
            return self;
        }
        let mut sum = 0.0;
        for s in &steps {
            let before = ready
                .iter()
                .rev()
                .find(|(t, _)| *t <= s.at)
                .map_or(1, |(_, n)| *n);
            let need = (f64::from(before) * s.ratio).ceil() as u32;
            let reached = ready
                .iter()
                .find(|(t, n)| *t >= s.at && *n >= need)
                .map_or(s.until - s.at, |(t, _)| (t - s.at).min(s.until - s.at));
            sum += reached;
        }
        self.reaction_seconds = Some(sum / steps.len() as f64);
        self
    }
}

/// Adds or removes replicas to match `desired`: new ones start cold; removal cancels starting
/// replicas first, then drains the least-loaded serving ones.
fn apply(replicas: &mut Vec<Replica>, desired: u32, ready_at_step: u64) {
    let live = replicas
        .iter()
        .filter(|r| r.phase != Phase::Draining)
        .count() as u32;
    if desired > live {
        for _ in live..desired {
            replicas.push(Replica::new(Phase::Starting { ready_at_step }));
        }
    } else if desired < live {
        let mut excess = live - desired;
        // Newest starting replicas first: they have served nothing yet.
        while excess > 0 {
            if let Some(i) = replicas
                .iter()
                .rposition(|r| matches!(r.phase, Phase::Starting { .. }))
            {
                replicas.remove(i);
                excess -= 1;
            } else {
                break;
            }
        }
        while excess > 0 {
            let Some(r) = replicas
                .iter_mut()
                .filter(|r| r.phase == Phase::Ready)
                .min_by_key(|r| r.load())
            else {
                break;
            };
            r.phase = Phase::Draining;
            excess -= 1;
        }
    }
}

impl Ours {
    /// An operator restart: the windows, the last scrapes (the caller's) and the decisions are
    /// lost; the model comes back from `status.autoscaling.learned` as the operator wrote it
    /// (`controller::autoscaler::State::restore`).
    fn restart(&mut self, now: f64, objective: Duration) {
        let model = self
            .status
            .as_ref()
            .and_then(|l| model_from(l, EPOCH, now, objective))
            .map(|m| m.without_windows(now));
        *self = Ours {
            restarted: now,
            model,
            status: self.status.take(),
            ..Ours::default()
        };
    }

    fn decide(
        &mut self,
        cfg: &RunConfig,
        replicas: &mut [Replica],
        now: f64,
        desired: u32,
        ready: u32,
    ) -> u32 {
        if cfg
            .operator_restarts
            .is_some_and(|every| now >= self.restarted + every)
        {
            self.restart(now, Duration::from_secs_f64(cfg.objective));
            for r in replicas.iter_mut() {
                r.last_scrape = None;
            }
        }
        // Scrape every ready replica as the operator does; a replica's first scrape gives no
        // window yet, and with no window from any replica and none before there is no
        // decision (`controller::autoscaler::tick`).
        let mut reports = Vec::new();
        for (i, r) in replicas.iter_mut().enumerate() {
            if r.phase != Phase::Ready {
                continue;
            }
            let mut m = r.metrics.clone();
            m.requests_in_flight = r.batch.len() as f64;
            m.requests_queued = r.queue.len() as f64;
            let pod = format!("replica-{i}");
            if let Some((t, prev)) = r.last_scrape.replace((now, m.clone())) {
                reports.push(PodReport::Measured {
                    pod,
                    window: window::pod_window(&prev, &m, now - t),
                });
            }
        }
        if reports.is_empty() && self.observations.is_empty() {
            return desired;
        }
        if !reports.is_empty() {
            self.observations
                .push(window::summarize(&reports).observation(cfg.metric, cfg.objective, now));
        }
        let keep_from =
            now - policy::history_seconds(Duration::from_secs_f64(cfg.scale_down_delay));
        self.observations.retain(|o| o.at >= keep_from);
        self.decisions.retain(|d| d.at >= keep_from);
        let rec = policy::decide(&PolicyInput {
            config: PolicyConfig {
                objective: Duration::from_secs_f64(cfg.objective),
                min_replicas: cfg.min_replicas,
                max_replicas: cfg.max_replicas,
                scale_down_delay: Duration::from_secs_f64(cfg.scale_down_delay),
                max_concurrency: cfg.service.max_batch,
            },
            observations: self.observations.clone(),
            current_replicas: desired,
            ready_replicas: ready,
            cold_start: Duration::from_secs_f64(cfg.cold_start),
            decisions: self.decisions.clone(),
            now,
            model: self.model,
        });
        self.model = rec.model;
        // Status as the operator refreshes it (`controller::autoscaler::status`).
        if rec.desired != desired
            || now - self.status_refreshed >= autoscaler::STATUS_REFRESH.as_secs_f64()
        {
            self.status_refreshed = now;
            let max_batch = i32::try_from(cfg.service.max_batch).unwrap_or(i32::MAX);
            let learned = self
                .model
                .map(|m| learned_from(&m, cfg.metric, max_batch, EPOCH));
            if learned_moved(self.status.as_ref(), learned.as_ref()) {
                self.status = learned;
            }
        }
        if rec.desired != desired {
            self.decisions.push(PastDecision {
                at: now,
                from: desired,
                to: rec.desired,
            });
        }
        rec.desired
    }
}

/// Median and spread (min, max) of a set of values.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Spread {
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    /// Of these values; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }
}

/// A small, fast, seedable generator (SplitMix64): enough for arrivals and sampling, and the
/// same stream on every platform.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponential with this mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.uniform()).ln()
    }

    /// Uniform index below `n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.uniform() * n as f64) as usize).min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_operator_starts_from_what_status_kept() {
        let model = LatencyModel {
            p95_floor: 20.0,
            p95_slope: 4.0,
            mean_floor: 9.0,
            mean_slope: 3.0,
            capacity: 0.2,
            capacity_for: (30.0, 4),
            last_request: Some(900.0),
            dispersion: 4.0,
            ..LatencyModel::default()
        };
        let mut ours = Ours {
            observations: vec![Observation::default()],
            model: Some(model),
            status: Some(learned_from(
                &model,
                LatencyMetric::RequestLatency,
                4,
                EPOCH,
            )),
            ..Ours::default()
        };
        ours.restart(1000.0, Duration::from_secs(30));
        assert!(ours.observations.is_empty());
        let m = ours.model.expect("restored");
        assert_eq!((m.capacity, m.capacity_at), (0.2, 1000.0));
        let carried = m.carried.expect("carried");
        assert_eq!(
            (carried.last_request, carried.dispersion),
            (Some(900.0), 4.0)
        );
        // Nothing in status: nothing to start from.
        ours.status = None;
        ours.restart(2000.0, Duration::from_secs(30));
        assert_eq!(ours.model, None);
    }
}
