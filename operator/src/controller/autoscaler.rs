//! The autoscaler's side effects: scrape the ready runtime pods of a ModelService with
//! `spec.scaling`, keep a window of observations per ModelService, ask the pure policy
//! (`crate::autoscale::policy::decide`) for a replica count, and say what it saw and decided in
//! `status.autoscaling`. The reconcile applies the decision to the Deployment, so the
//! Deployment's replica count keeps one writer, and `spec` is never written.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use modelfleet_crds::conditions::{self, reasons};
use modelfleet_crds::{AutoscalingStatus, LatencyMetric, LearnedScaling, ScalingDecision};
use tracing::warn;

use super::observe::{is_ready, metrics_url, parse_model_info};
use super::status;
use super::validate::{Scaling, format_duration};
use crate::autoscale::learned::{learned_from, learned_moved, model_from};
use crate::autoscale::policy::{
    self, LatencyModel, Observation, PastDecision, PolicyConfig, PolicyInput, Recommendation,
};
use crate::autoscale::window::{self, METRIC_PREFIX, PodMetrics, PodReport};

/// Seconds between two scrapes of the same ModelService's pods.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(5);
/// How long one scrape may take.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(2);
/// Cold start assumed before one has been measured.
pub const DEFAULT_COLD_START: Duration = Duration::from_secs(60);
/// Most decisions kept in status.
pub const MAX_DECISIONS: usize = 5;
/// How long ScalingLimited stays True after the load last needed more than the maximum, so that
/// a load at the limit does not flip it (and write status) at every tick.
pub const LIMITED_HOLD: Duration = Duration::from_secs(60);
/// Observed values in status are refreshed at most this often, unless the replica count changes:
/// status writes stay rare while the figures drift.
pub const STATUS_REFRESH: Duration = Duration::from_secs(15);

/// What the autoscaler remembers about one ModelService between reconciles.
#[derive(Debug, Default)]
pub struct State {
    /// Each ready pod's last scrape: when and what.
    last: HashMap<String, (Instant, PodMetrics)>,
    observations: VecDeque<Observation>,
    decisions: Vec<PastDecision>,
    model: Option<LatencyModel>,
    /// The latency metric and batch limit the observations and model were measured under.
    measured_for: Option<(LatencyMetric, i32)>,
    last_tick: Option<Instant>,
    last_status_refresh: Option<Instant>,
    /// The stretch in which the load last needed more than the maximum.
    limited: Option<Limited>,
    /// See [`State::epoch`].
    epoch: Option<Timestamp>,
    /// The model header of the first ready pod that had read it, from this tick's scrapes: the
    /// reconcile takes it instead of scraping the pod again for it.
    pub header: Option<modelfleet_crds::ModelInfo>,
    /// When a reconcile last used this state (to forget deleted ModelServices).
    pub touched: Option<Instant>,
    /// What this process last applied and wrote: the replica count, `status.autoscaling` and
    /// the ScalingActive and ScalingLimited conditions. The next reconcile may see a cached
    /// object that does not show them yet; reading them back from there would undo a decision.
    pub applied: Option<Applied>,
}

impl State {
    /// Forgets the last decision, when it could not be applied.
    pub fn forget_last_decision(&mut self) {
        self.decisions.pop();
    }

    /// Forgets the windows and the latency model when they were measured for another latency
    /// metric (a window's p95 of the time to first token is not one of the request latency) or
    /// another batch limit (the replicas restart with it and batch differently). The decisions
    /// are kept: they are about replica counts.
    fn measure_for(&mut self, metric: LatencyMetric, max_concurrency: i32) {
        let now = (metric, max_concurrency);
        if self.measured_for.is_some_and(|then| then != now) {
            self.observations.clear();
            self.model = None;
        }
        self.measured_for = Some(now);
    }

    /// Starts a state this process has not used yet (after a restart) from what an earlier
    /// tick wrote in `status.autoscaling.learned`, when it was measured under the metric and
    /// batch limit in force. The windows it was learned from are gone; the policy carries what
    /// they said (`LatencyModel::without_windows`).
    pub fn restore(
        &mut self,
        learned: Option<&LearnedScaling>,
        started: Instant,
        scaling: &Scaling,
        max_concurrency: i32,
    ) {
        if self.model.is_some() || self.measured_for.is_some() {
            return;
        }
        let Some(l) =
            learned.filter(|l| l.metric == scaling.metric && l.max_concurrency == max_concurrency)
        else {
            return;
        };
        let epoch = self.epoch(started);
        let at = started.elapsed().as_secs_f64();
        self.model = model_from(l, epoch, at, scaling.objective).map(|m| m.without_windows(at));
        if self.model.is_none() {
            warn!(learned = ?l, "status.autoscaling.learned does not parse; learning afresh");
        }
    }

    /// The wall-clock time of the policy clock's zero, read once so that a time on the policy's
    /// clock always converts to the same second.
    fn epoch(&mut self, started: Instant) -> Timestamp {
        *self.epoch.get_or_insert_with(|| {
            let since = SignedDuration::try_from(started.elapsed()).unwrap_or_default();
            Timestamp::now()
                .checked_sub(since)
                .unwrap_or(Timestamp::UNIX_EPOCH)
        })
    }
}

/// A stretch in which the load needed more replicas than the maximum.
#[derive(Debug, Clone, Copy)]
struct Limited {
    /// When it last did.
    last: Instant,
    /// The most it needed.
    need: u32,
    /// The maximum then.
    max: i32,
}

/// See [`State::applied`].
#[derive(Debug, Clone)]
pub struct Applied {
    pub replicas: i32,
    pub status: Option<AutoscalingStatus>,
    /// The ScalingActive and ScalingLimited conditions.
    pub conditions: Vec<Condition>,
}

/// The outcome of one tick.
#[derive(Debug, Clone)]
pub struct Tick {
    pub recommendation: Recommendation,
    /// Whether the recommendation changes the replica count.
    pub changed: bool,
    /// p95 of the objective's latency in the last window, and the request rate.
    pub p95: Option<f64>,
    pub rate: f64,
    /// The model after this tick, for `status.autoscaling.learned`.
    pub learned: Option<LearnedScaling>,
    /// Ready pods whose histogram of the objective's latency ends below the objective.
    pub short_histograms: Option<ShortHistograms>,
    /// While the load needs more replicas than the maximum, and for [`LIMITED_HOLD`] after: the
    /// most it needed since it first did, and the maximum.
    pub beyond_max: Option<(u32, i32)>,
}

/// Ready pods whose histogram of the objective's latency ends at or below the objective (a
/// runtime image older than the operator, or another server): a p95 above their largest bucket
/// reads as that bucket, so the autoscaler cannot see the objective missed there.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortHistograms {
    /// Their names, the one whose buckets end lowest first, then by name.
    pub pods: Vec<String>,
    /// Where the first one's buckets end, seconds.
    pub largest_bound: f64,
    /// The objective and the latency it is about.
    pub objective: Duration,
    pub metric: LatencyMetric,
}

/// Whether `c` is one of the autoscaler's conditions (ScalingActive, ScalingLimited).
pub fn is_autoscaler_condition(c: &Condition) -> bool {
    [conditions::SCALING_ACTIVE, conditions::SCALING_LIMITED].contains(&c.type_.as_str())
}

/// The autoscaler's conditions after `tick`, from what they were (`previous`): ScalingActive,
/// then ScalingLimited, which stays as it was while the tick had no metrics to size with.
pub fn conditions_after(
    previous: &[Condition],
    tick: &Tick,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let (ok, reason, message) = scaling_condition(tick);
    let mut fresh = vec![status::condition(
        conditions::SCALING_ACTIVE,
        ok,
        reason,
        &message,
    )];
    let limited = limited_condition(tick);
    if let Some((limited, reason, message)) = &limited {
        fresh.push(status::condition(
            conditions::SCALING_LIMITED,
            *limited,
            reason,
            message,
        ));
    }
    let mut out = status::merge_conditions(previous, fresh, generation, now);
    if limited.is_none() {
        out.extend(
            previous
                .iter()
                .filter(|c| c.type_ == conditions::SCALING_LIMITED)
                .cloned(),
        );
    }
    out
}

/// The ScalingLimited condition after `tick`: status, reason and message; `None` when the tick
/// had no metrics to size with (what the condition said still holds).
fn limited_condition(tick: &Tick) -> Option<(bool, &'static str, String)> {
    if tick.recommendation.metrics_missing {
        return None;
    }
    Some(match tick.beyond_max {
        Some((need, max)) => (
            true,
            reasons::TOO_MANY_REPLICAS,
            format!(
                "the load has needed more replicas than spec.scaling.maxReplicas ({max}) within the last minute, up to {need} since it first did: the objective may be missed until the maximum is raised"
            ),
        ),
        None => (
            false,
            reasons::WITHIN_MAXIMUM,
            "the load needs no more replicas than spec.scaling.maxReplicas".to_owned(),
        ),
    })
}

/// The ScalingActive condition after `tick`: status, reason and message.
fn scaling_condition(tick: &Tick) -> (bool, &'static str, String) {
    if tick.recommendation.metrics_missing {
        return (
            false,
            reasons::METRICS_UNAVAILABLE,
            // The policy's reason says it holds, and how many.
            tick.recommendation.reason.clone(),
        );
    }
    if let Some(short) = &tick.short_histograms {
        let metric = match short.metric {
            LatencyMetric::RequestLatency => "request latency",
            LatencyMetric::TimeToFirstToken => "time to first token",
        };
        let top = format_duration(Duration::from_millis(
            (short.largest_bound * 1000.0).round() as u64,
        ));
        let more = match short.pods.len() {
            0 | 1 => String::new(),
            2 => " (those of 1 more pod end below the objective too)".to_owned(),
            n => format!(
                " (those of {} more pods end below the objective too)",
                n - 1
            ),
        };
        return (
            false,
            reasons::OBJECTIVE_NOT_MEASURABLE,
            format!(
                "the {metric} objective {} is beyond what the runtime measures, so the autoscaler goes on scaling but cannot see the objective missed: the {METRIC_PREFIX}{} buckets of pod {} end at {top}{more}, and a p95 above {top} reads as {top}; run a runtime image whose buckets reach the objective",
                format_duration(short.objective),
                window::histogram_name(short.metric),
                short.pods.first().map_or("", String::as_str),
            ),
        );
    }
    (
        true,
        reasons::METRICS_AVAILABLE,
        "the autoscaler has fresh metrics from the ready replicas".to_owned(),
    )
}

/// Scrapes the ready pods and decides, at most every [`SCRAPE_INTERVAL`]; `None` between ticks.
pub async fn tick(
    http: &reqwest::Client,
    state: &mut State,
    started: Instant,
    scaling: &Scaling,
    max_concurrency: i32,
    current: i32,
    pods: &[Pod],
) -> Option<Tick> {
    let now = Instant::now();
    if state
        .last_tick
        .is_some_and(|t| now.duration_since(t) < SCRAPE_INTERVAL)
    {
        return None;
    }
    state.last_tick = Some(now);
    state.measure_for(scaling.metric, max_concurrency);

    let ready: Vec<(String, String)> = pods
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(metrics_url)
        .collect();
    let scrapes = ready.iter().map(|(pod, url)| async move {
        let result = async {
            let response = http
                .get(url)
                .timeout(SCRAPE_TIMEOUT)
                .send()
                .await
                .map_err(|e| describe(&e))?;
            let text = response
                .error_for_status()
                .map_err(|e| describe(&e))?
                .text()
                .await
                .map_err(|e| describe(&e))?;
            let metrics = window::parse_pod_metrics(&text).map_err(|e| e.to_string())?;
            Ok::<_, String>((metrics, parse_model_info(&text)))
        }
        .await;
        (pod.clone(), result)
    });
    let results = futures::future::join_all(scrapes).await;

    let mut reports = Vec::with_capacity(results.len());
    let mut seen = HashMap::new();
    state.header = None;
    for (pod, result) in results {
        match result {
            Ok((metrics, header)) => {
                state.header = state.header.take().or(header);
                // A pod answering for the first time has no window yet: it is neither measured
                // nor missing.
                if let Some((at, earlier)) = state.last.get(&pod) {
                    let seconds = now.duration_since(*at).as_secs_f64();
                    reports.push(PodReport::Measured {
                        pod: pod.clone(),
                        window: window::pod_window(earlier, &metrics, seconds),
                    });
                }
                seen.insert(pod, (now, metrics));
            }
            Err(reason) => {
                // Keep the old scrape: the next answer measures over the longer window.
                if let Some(old) = state.last.remove(&pod) {
                    seen.insert(pod.clone(), old);
                }
                reports.push(PodReport::Missing { pod, reason });
            }
        }
    }
    state.last = seen;
    // From each ready pod's last answer, this tick's or an earlier one: a pod that misses a
    // scrape does not flip the condition.
    let mut short: Vec<(f64, String)> = state
        .last
        .iter()
        .filter_map(|(pod, (_, metrics))| {
            let top = metrics.latency(scaling.metric).largest_bound()?;
            (top <= scaling.objective.as_secs_f64()).then(|| (top, pod.clone()))
        })
        .collect();
    short.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let short_histograms = short
        .first()
        .map(|s| s.0)
        .map(|largest_bound| ShortHistograms {
            largest_bound,
            pods: short.into_iter().map(|s| s.1).collect(),
            objective: scaling.objective,
            metric: scaling.metric,
        });
    // Nothing measured yet and every ready pod answered, each for the first time (the operator
    // restarted, or the first replicas just became ready): no window yet, which is not missing
    // metrics. The next tick measures; until then status says what it said (no
    // MetricsUnavailable after a restart). Later, a ready set that is all new (every pod
    // replaced) holds and says so like any tick without a window.
    if reports.is_empty() && !state.last.is_empty() && state.observations.is_empty() {
        return None;
    }

    let at = now.duration_since(started).as_secs_f64();
    let summary = window::summarize(&reports);
    let observation = summary.observation(scaling.metric, scaling.objective.as_secs_f64(), at);
    let (p95, rate) = (observation.p95, observation.completed_rate);
    if !reports.is_empty() {
        state.observations.push_back(observation);
    }
    let keep = policy::history_seconds(scaling.scale_down_delay);
    while state.observations.front().is_some_and(|o| at - o.at > keep) {
        state.observations.pop_front();
    }
    state.decisions.retain(|d| at - d.at <= keep);

    let input = PolicyInput {
        config: PolicyConfig {
            objective: scaling.objective,
            min_replicas: u32::try_from(scaling.min).unwrap_or(1),
            max_replicas: u32::try_from(scaling.max).unwrap_or(1),
            scale_down_delay: scaling.scale_down_delay,
            max_concurrency: u32::try_from(max_concurrency).unwrap_or(1),
        },
        observations: state.observations.iter().cloned().collect(),
        current_replicas: u32::try_from(current).unwrap_or(0),
        ready_replicas: u32::try_from(ready.len()).unwrap_or(0),
        cold_start: cold_start(pods).unwrap_or(DEFAULT_COLD_START),
        decisions: state.decisions.clone(),
        now: at,
        model: state.model,
    };
    let rec = policy::decide(&input);
    state.model = rec.model.or(state.model);
    // A stretch at the maximum ends LIMITED_HOLD after the load last needed more, or when the
    // maximum changes.
    state.limited = state
        .limited
        .filter(|l| l.max == scaling.max && now.duration_since(l.last) < LIMITED_HOLD);
    if let Some(need) = rec.beyond_max {
        state.limited = Some(Limited {
            last: now,
            need: state.limited.map_or(need, |l| l.need.max(need)),
            max: scaling.max,
        });
    }
    let beyond_max = state.limited.map(|l| (l.need, l.max));
    let changed = i64::from(rec.desired) != i64::from(current);
    if changed {
        state.decisions.push(PastDecision {
            at,
            from: input.current_replicas,
            to: rec.desired,
        });
    }
    let epoch = state.epoch(started);
    let learned = state
        .model
        .map(|m| learned_from(&m, scaling.metric, max_concurrency, epoch));
    Some(Tick {
        recommendation: rec,
        changed,
        p95,
        rate,
        learned,
        short_histograms,
        beyond_max,
    })
}

/// The new `status.autoscaling`, from the old one and this tick. Observed figures are refreshed
/// at most every [`STATUS_REFRESH`] unless the count changed, so status writes stay rare.
pub fn status(
    state: &mut State,
    old: Option<&AutoscalingStatus>,
    tick: &Tick,
    current: i32,
    now: &Time,
) -> AutoscalingStatus {
    let mut s = old.cloned().unwrap_or_default();
    let refresh_due = state
        .last_status_refresh
        .is_none_or(|t| t.elapsed() >= STATUS_REFRESH);
    if tick.changed || refresh_due {
        state.last_status_refresh = Some(Instant::now());
        s.observed_p95 = tick
            .p95
            .map(|p| format_duration(Duration::from_millis((p * 1000.0).round() as u64)));
        s.observed_request_rate = Some(format!("{:.2}", tick.rate));
        if learned_moved(s.learned.as_ref(), tick.learned.as_ref()) {
            s.learned = tick.learned.clone();
        }
    }
    if tick.changed {
        s.last_scale_time = Some(now.clone());
        s.last_decisions.push(ScalingDecision {
            time: now.clone(),
            from: current,
            to: i32::try_from(tick.recommendation.desired).unwrap_or(i32::MAX),
            reason: truncate(&tick.recommendation.reason, 1000),
        });
        let excess = s.last_decisions.len().saturating_sub(MAX_DECISIONS);
        s.last_decisions.drain(..excess);
    }
    s
}

/// The longest time a current pod took from creation to ready: what a new replica will need.
pub fn cold_start(pods: &[Pod]) -> Option<Duration> {
    pods.iter()
        .filter_map(|p| {
            let created = p.metadata.creation_timestamp.as_ref()?.0;
            let ready = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "Ready" && c.status == "True")?
                .last_transition_time
                .as_ref()?
                .0;
            let seconds = ready.as_second() - created.as_second();
            u64::try_from(seconds).ok().map(Duration::from_secs)
        })
        .max()
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timed out after {}s", SCRAPE_TIMEOUT.as_secs())
    } else if e.is_connect() {
        "connection refused".to_owned()
    } else if let Some(status) = e.status() {
        format!("HTTP {status}")
    } else {
        "request failed".to_owned()
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::autoscale::learned::tests::learned_model;

    fn tick(desired: u32, changed: bool) -> Tick {
        Tick {
            recommendation: Recommendation {
                desired,
                reason: format!("to {desired}"),
                metrics_missing: false,
                arrival_rate: None,
                capacity_per_replica: None,
                model: None,
                beyond_max: None,
            },
            changed,
            p95: Some(2.3456),
            rate: 1.234,
            learned: None,
            short_histograms: None,
            beyond_max: None,
        }
    }

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).expect("time"))
    }

    #[test]
    fn decisions_are_kept_newest_last_at_most_five() {
        let mut state = State::default();
        let mut s = AutoscalingStatus::default();
        for i in 0..7 {
            s = status(
                &mut state,
                Some(&s),
                &tick(i + 2, true),
                i32::try_from(i).unwrap_or(0) + 1,
                &t(i64::from(i)),
            );
        }
        assert_eq!(s.last_decisions.len(), MAX_DECISIONS);
        assert_eq!(s.last_decisions.last().map(|d| d.to), Some(8));
        assert_eq!(s.last_decisions[0].to, 4);
        assert_eq!(s.last_scale_time, Some(t(6)));
        assert_eq!(s.observed_p95.as_deref(), Some("2.35s"));
        assert_eq!(s.observed_request_rate.as_deref(), Some("1.23"));
    }

    #[test]
    fn a_new_state_starts_from_status_when_measured_alike() {
        let scaling = Scaling {
            min: 1,
            max: 10,
            metric: LatencyMetric::RequestLatency,
            objective: Duration::from_secs(30),
            scale_down_delay: Duration::from_secs(300),
        };
        // Written by a process that started 2000 s ago (its last request: 990 s after that).
        let earlier = Timestamp::now()
            .checked_sub(SignedDuration::from_secs(2000))
            .expect("time");
        let l = learned_from(&learned_model(), LatencyMetric::RequestLatency, 4, earlier);
        let started = Instant::now();
        // Another batch limit or metric: the replicas batch differently, or it is another
        // latency.
        let mut state = State::default();
        state.restore(Some(&l), started, &scaling, 8);
        assert!(state.model.is_none());
        let ttft = LearnedScaling {
            metric: LatencyMetric::TimeToFirstToken,
            ..l.clone()
        };
        state.restore(Some(&ttft), started, &scaling, 4);
        assert!(state.model.is_none());
        // Measured alike: the model, with what the lost windows said carried.
        state.restore(Some(&l), started, &scaling, 4);
        let m = state.model.expect("restored");
        let carried = m.carried.expect("carried");
        assert_eq!(carried.dispersion, 4.2);
        assert!(
            carried.last_request.is_some_and(|t| t < carried.at),
            "{m:?}"
        );
        // A state in use keeps what it learned itself, with a model or without one (it
        // forgot it when the metric changed).
        state.model = Some(LatencyModel {
            capacity: 9.0,
            ..learned_model()
        });
        state.restore(Some(&l), started, &scaling, 4);
        assert_eq!(state.model.map(|m| m.capacity), Some(9.0));
        let mut forgot = State::default();
        forgot.measure_for(LatencyMetric::RequestLatency, 4);
        forgot.restore(Some(&l), started, &scaling, 4);
        assert!(forgot.model.is_none());
    }

    #[test]
    fn status_rewrites_what_was_learned_only_when_it_moved() {
        let mut state = State::default();
        let epoch = Timestamp::now();
        let learned = |m: LatencyModel| learned_from(&m, LatencyMetric::RequestLatency, 4, epoch);
        let with = |m: Option<LatencyModel>| Tick {
            learned: m.map(learned),
            ..tick(3, false)
        };
        let first = status(&mut state, None, &with(Some(learned_model())), 3, &t(0));
        assert_eq!(first.learned, Some(learned(learned_model())));
        // At the next refresh, a capacity 5 % higher is drift: status keeps what it says.
        let drift = LatencyModel {
            capacity: learned_model().capacity * 1.05,
            ..learned_model()
        };
        state.last_status_refresh = None;
        let s = status(&mut state, Some(&first), &with(Some(drift)), 3, &t(20));
        assert_eq!(s.learned, first.learned);
        // 20 % higher, or a later request, is news.
        for news in [
            LatencyModel {
                capacity: learned_model().capacity * 1.2,
                ..learned_model()
            },
            LatencyModel {
                last_request: Some(1990.0),
                ..learned_model()
            },
            // The attainment factor from 1.125 to 1.3.
            LatencyModel {
                attainment_ln: 1.3_f64.ln(),
                ..learned_model()
            },
        ] {
            state.last_status_refresh = None;
            let s = status(&mut state, Some(&first), &with(Some(news)), 3, &t(40));
            assert_eq!(s.learned, Some(learned(news)));
        }
        // Between refreshes nothing is rewritten.
        let s = status(&mut state, Some(&first), &with(None), 3, &t(45));
        assert_eq!(s.learned, first.learned);
        // A model forgotten (another metric) is removed at the next refresh.
        state.last_status_refresh = None;
        let s = status(&mut state, Some(&first), &with(None), 3, &t(60));
        assert_eq!(s.learned, None);
    }

    #[test]
    fn windows_of_another_metric_or_batch_limit_are_forgotten() {
        let mut state = State::default();
        let fill = |state: &mut State| {
            state.observations.push_back(Observation::default());
            state.model = Some(LatencyModel {
                p95_floor: 1.0,
                p95_slope: 0.1,
                mean_floor: 1.0,
                mean_slope: 0.1,
                capacity: 1.0,
                capacity_for: (4.0, 4),
                ..LatencyModel::default()
            });
        };
        fill(&mut state);
        state.measure_for(LatencyMetric::RequestLatency, 4);
        state.measure_for(LatencyMetric::RequestLatency, 4);
        assert_eq!(state.observations.len(), 1);
        assert!(state.model.is_some());
        state.measure_for(LatencyMetric::TimeToFirstToken, 4);
        assert!(state.observations.is_empty() && state.model.is_none());
        fill(&mut state);
        state.measure_for(LatencyMetric::TimeToFirstToken, 8);
        assert!(state.observations.is_empty() && state.model.is_none());
    }

    /// A Ready pod whose metrics port is `port` on 127.0.0.1.
    fn ready_pod(name: &str, port: u16) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "runtime",
                "ports": [{"name": crate::build::PORT_NAME, "containerPort": port}]}]},
            "status": {"podIP": "127.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .expect("pod")
    }

    #[tokio::test]
    async fn first_answers_are_not_missing_metrics() {
        let port = serve_metrics(
            "# TYPE modelfleet_runtime_requests_in_flight gauge\n\
             modelfleet_runtime_requests_in_flight 0\n\
             # TYPE modelfleet_runtime_requests_queued gauge\n\
             modelfleet_runtime_requests_queued 0\n\
             # TYPE modelfleet_runtime_model_info gauge\n\
             modelfleet_runtime_model_info{architecture=\"llama\",quantization=\"Q4_1\"} 1\n"
                .to_owned(),
        )
        .await;
        let closed = closed_port();

        let http = reqwest::Client::new();
        let scaling = Scaling {
            min: 1,
            max: 3,
            objective: Duration::from_secs(4),
            metric: modelfleet_crds::LatencyMetric::RequestLatency,
            scale_down_delay: Duration::from_secs(300),
        };
        let started = Instant::now();
        let pods = [ready_pod("a", port)];
        let mut state = State::default();
        let first = super::tick(&http, &mut state, started, &scaling, 4, 1, &pods).await;
        assert!(first.is_none(), "{first:?}");
        // The header comes with the scrape: the reconcile need not fetch it again.
        let header = state
            .header
            .as_ref()
            .and_then(|h| h.quantization.as_deref());
        assert_eq!(header, Some("Q4_1"));
        state.last_tick = None;
        let second = super::tick(&http, &mut state, started, &scaling, 4, 1, &pods)
            .await
            .expect("a decision");
        assert!(!second.recommendation.metrics_missing, "{second:?}");

        // A pod that does not answer is missing, first time or not.
        let mut state = State::default();
        let pods = [ready_pod("a", port), ready_pod("b", closed)];
        let missing = super::tick(&http, &mut state, started, &scaling, 4, 1, &pods)
            .await
            .expect("a decision");
        assert!(missing.recommendation.metrics_missing, "{missing:?}");
    }

    /// Serves `text` as `/metrics` on 127.0.0.1; returns the port.
    async fn serve_metrics(text: String) -> u16 {
        serve_shared_metrics(std::sync::Arc::new(std::sync::Mutex::new(text))).await
    }

    /// Serves what `text` holds at each request as `/metrics` on 127.0.0.1; returns the port.
    async fn serve_shared_metrics(text: std::sync::Arc<std::sync::Mutex<String>>) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let text = text.lock().expect("lock").clone();
                async move { text }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        port
    }

    /// A port nothing listens on: bound, then released.
    fn closed_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port()
    }

    /// A runtime's `/metrics` whose request-duration and time-to-first-token buckets end at
    /// `request` and `ttft`, with these requests in flight and queued.
    fn runtime_metrics(request: &[f64], ttft: &[f64], in_flight: u32, queued: u32) -> String {
        let mut text = String::new();
        let labels = "route=\"/v1/chat/completions\",status=\"200\"";
        for (metric, bounds) in [
            (LatencyMetric::RequestLatency, request),
            (LatencyMetric::TimeToFirstToken, ttft),
        ] {
            let name = format!("{METRIC_PREFIX}{}", window::histogram_name(metric));
            text.push_str(&format!("# TYPE {name} histogram\n"));
            for le in bounds.iter().map(f64::to_string).chain(["+Inf".to_owned()]) {
                text.push_str(&format!("{name}_bucket{{{labels},le=\"{le}\"}} 0\n"));
            }
            text.push_str(&format!(
                "{name}_sum{{{labels}}} 0\n{name}_count{{{labels}}} 0\n"
            ));
        }
        text.push_str(&format!(
            "# TYPE {METRIC_PREFIX}requests_in_flight gauge\n{METRIC_PREFIX}requests_in_flight {in_flight}\n\
             # TYPE {METRIC_PREFIX}requests_queued gauge\n{METRIC_PREFIX}requests_queued {queued}\n"
        ));
        text
    }

    /// This runtime's `/metrics`, with these requests in flight and queued.
    fn current_runtime(in_flight: u32, queued: u32) -> String {
        runtime_metrics(
            &window::request_duration_bounds(),
            &window::time_to_first_token_bounds(),
            in_flight,
            queued,
        )
    }

    fn scaling(max: i32, objective: u64, metric: LatencyMetric) -> Scaling {
        Scaling {
            min: 1,
            max,
            objective: Duration::from_secs(objective),
            metric,
            scale_down_delay: Duration::from_secs(300),
        }
    }

    /// A tick now, however recent the last one.
    async fn tick_now(
        state: &mut State,
        started: Instant,
        scaling: &Scaling,
        current: i32,
        pods: &[Pod],
    ) -> Option<Tick> {
        state.last_tick = None;
        super::tick(
            &reqwest::Client::new(),
            state,
            started,
            scaling,
            4,
            current,
            pods,
        )
        .await
    }

    #[tokio::test]
    async fn a_load_beyond_the_maximum_is_reported_until_a_minute_after_it_fits() {
        let text = std::sync::Arc::new(std::sync::Mutex::new(current_runtime(4, 8)));
        let port = serve_shared_metrics(text.clone()).await;
        let started = Instant::now();
        let pods = [ready_pod("a", port)];
        let at_most_2 = scaling(2, 30, LatencyMetric::RequestLatency);
        let mut state = State::default();
        let tick = async |state: &mut State, scaling: &Scaling| {
            tick_now(state, started, scaling, 2, &pods)
                .await
                .expect("a decision")
        };
        assert!(
            tick_now(&mut state, started, &at_most_2, 2, &pods)
                .await
                .is_none(),
            "first answers"
        );
        // 12 requests in one replica and no latency yet: 5 replicas at 2.8 each.
        let busy = tick(&mut state, &at_most_2).await;
        assert_eq!(busy.beyond_max, Some((5, 2)), "{busy:?}");
        assert_eq!(
            limited_condition(&busy),
            Some((
                true,
                reasons::TOO_MANY_REPLICAS,
                "the load has needed more replicas than spec.scaling.maxReplicas (2) within the \
                 last minute, up to 5 since it first did: the objective may be missed until the \
                 maximum is raised"
                    .to_owned()
            ))
        );
        // Less, still beyond: the most it needed stays in the message (no write per tick).
        *text.lock().expect("lock") = current_runtime(4, 4);
        let less = tick(&mut state, &at_most_2).await;
        assert_eq!(less.recommendation.beyond_max, Some(3));
        assert_eq!(less.beyond_max, Some((5, 2)));
        // The load fits again: still limited for a minute, so that a load at the limit does
        // not flip the condition at every tick.
        *text.lock().expect("lock") = current_runtime(1, 0);
        let fits = tick(&mut state, &at_most_2).await;
        assert_eq!(fits.recommendation.beyond_max, None, "{fits:?}");
        assert_eq!(fits.beyond_max, Some((5, 2)));
        let limited = state.limited.as_mut().expect("remembered");
        limited.last = limited.last.checked_sub(LIMITED_HOLD).expect("an instant");
        let later = tick(&mut state, &at_most_2).await;
        assert_eq!(later.beyond_max, None);
        let (limited, reason, _) = limited_condition(&later).expect("a condition");
        assert!(!limited);
        assert_eq!(reason, reasons::WITHIN_MAXIMUM);

        // A new maximum that suffices ends a stretch at once.
        *text.lock().expect("lock") = current_runtime(4, 8);
        assert!(tick(&mut state, &at_most_2).await.beyond_max.is_some());
        *text.lock().expect("lock") = current_runtime(1, 0);
        let raised = tick(&mut state, &scaling(10, 30, LatencyMetric::RequestLatency)).await;
        assert_eq!(raised.beyond_max, None);

        // Without metrics nothing is known: what the condition said holds.
        let missing = Tick {
            recommendation: Recommendation {
                metrics_missing: true,
                ..later.recommendation.clone()
            },
            ..later
        };
        assert_eq!(limited_condition(&missing), None);
    }

    #[test]
    fn the_autoscalers_conditions_keep_their_order_and_what_missing_metrics_cannot_tell() {
        let limited = Tick {
            beyond_max: Some((5, 2)),
            ..tick(2, false)
        };
        let types = |c: &[Condition]| {
            c.iter()
                .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
                .collect::<Vec<_>>()
        };
        let first = conditions_after(&[], &limited, Some(1), &t(0));
        let owned = |t: &str, s: &str, r: &str| (t.to_owned(), s.to_owned(), r.to_owned());
        assert_eq!(
            types(&first),
            [
                owned("ScalingActive", "True", "MetricsAvailable"),
                owned("ScalingLimited", "True", "TooManyReplicas"),
            ]
        );
        // Metrics missing: ScalingActive says so, ScalingLimited stays as it was, second.
        let mut missing = tick(2, false);
        missing.recommendation.metrics_missing = true;
        let held = conditions_after(&first, &missing, Some(1), &t(10));
        assert_eq!(
            types(&held),
            [
                owned("ScalingActive", "False", "MetricsUnavailable"),
                owned("ScalingLimited", "True", "TooManyReplicas"),
            ]
        );
        assert_eq!(held[0].message, "to 2", "the policy's reason as it is");
        assert_eq!(held[1], first[1], "kept as it was");
        // Back within the maximum; a condition whose status did not change keeps its time.
        let within = conditions_after(&held, &tick(2, false), Some(1), &t(20));
        assert_eq!(
            types(&within),
            [
                owned("ScalingActive", "True", "MetricsAvailable"),
                owned("ScalingLimited", "False", "WithinMaximum"),
            ]
        );
        assert_eq!(within[0].last_transition_time, t(20));
        let again = conditions_after(&within, &tick(2, false), Some(1), &t(30));
        assert_eq!(again, within);
    }

    #[tokio::test]
    async fn an_objective_beyond_a_replicas_buckets_is_reported() {
        // An older runtime's buckets end at 115.85 s (5 ms × √2^29) for the request latency and
        // at 23.17 s (1 ms × √2^29) for the time to first token; this operator's runtime's
        // reach an hour.
        let (request, ttft) = (
            window::request_duration_bounds(),
            window::time_to_first_token_bounds(),
        );
        let old = serve_metrics(runtime_metrics(&request[..30], &ttft[..30], 0, 0)).await;
        let older = serve_metrics(runtime_metrics(&request[..20], &ttft[..20], 0, 0)).await;
        let new = serve_metrics(current_runtime(0, 0)).await;
        let started = Instant::now();
        let pods = [
            ready_pod("new", new),
            ready_pod("a-old", old),
            ready_pod("b-older", older),
        ];
        let two_ticks = async |scaling: Scaling, pods: &[Pod]| {
            let mut state = State::default();
            tick_now(&mut state, started, &scaling, 3, pods).await;
            let second = tick_now(&mut state, started, &scaling, 3, pods)
                .await
                .expect("a decision");
            (state, second)
        };

        let (mut state, beyond) =
            two_ticks(scaling(3, 300, LatencyMetric::RequestLatency), &pods).await;
        let short = beyond.short_histograms.clone().expect("short histograms");
        // The lowest bound first, with its pod.
        assert_eq!(short.pods, ["b-older", "a-old"]);
        assert_eq!(short.largest_bound, request[19]);
        let (ok, reason, message) = scaling_condition(&beyond);
        assert!(!ok);
        assert_eq!(reason, reasons::OBJECTIVE_NOT_MEASURABLE);
        assert_eq!(
            message,
            "the request latency objective 5m is beyond what the runtime measures, so the \
             autoscaler goes on scaling but cannot see the objective missed: the \
             modelfleet_runtime_request_duration_seconds buckets of pod b-older end at 3.62s \
             (those of 1 more pod end below the objective too), and a p95 above 3.62s reads as \
             3.62s; \
             run a runtime image whose buckets reach the objective"
        );
        // A pod that misses a scrape is still reported, from its last answer.
        let gone = [
            ready_pod("new", new),
            ready_pod("a-old", old),
            ready_pod("b-older", closed_port()),
        ];
        let missed = tick_now(
            &mut state,
            started,
            &scaling(3, 300, LatencyMetric::RequestLatency),
            3,
            &gone,
        )
        .await
        .expect("a decision");
        assert_eq!(
            missed.short_histograms.map(|s| s.pods),
            Some(vec!["b-older".to_owned(), "a-old".to_owned()])
        );

        // The time to first token, whose old buckets end at 23.17 s.
        let (_, ttft_30s) = two_ticks(scaling(3, 30, LatencyMetric::TimeToFirstToken), &pods).await;
        let short = ttft_30s.short_histograms.clone().expect("short histograms");
        assert_eq!(short.pods, ["b-older", "a-old"]);
        assert_eq!(short.largest_bound, ttft[19]);
        assert!(
            scaling_condition(&ttft_30s)
                .2
                .contains("modelfleet_runtime_time_to_first_token_seconds buckets of pod b-older"),
        );

        // Within every replica's buckets: nothing to say.
        let (_, within) = two_ticks(scaling(3, 3, LatencyMetric::RequestLatency), &pods).await;
        assert_eq!(within.short_histograms, None);
        let (ok, reason, _) = scaling_condition(&within);
        assert!(ok);
        assert_eq!(reason, reasons::METRICS_AVAILABLE);
    }

    #[test]
    fn observed_figures_refresh_at_most_every_15s_without_a_change() {
        let mut state = State::default();
        let first = status(&mut state, None, &tick(1, false), 1, &t(0));
        let mut second_tick = tick(1, false);
        second_tick.p95 = Some(9.0);
        let second = status(&mut state, Some(&first), &second_tick, 1, &t(5));
        assert_eq!(first, second, "no write for drifting figures");
        assert!(second.last_decisions.is_empty());
    }
}
