//! What the autoscaler learned, as `status.autoscaling.learned` keeps it: figures a user can
//! read (decimal strings, whole seconds), and the policy's model back from them. The operator
//! writes it and restarts from it; the simulator's operator restarts go through it too.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use modelfleet_crds::{LatencyMetric, LearnedScaling};

use super::policy::LatencyModel;
use crate::controller::validate::parse_duration;

/// Relative change of a learned figure that is worth writing to status.
pub const LEARNED_CHANGE: f64 = 0.1;

/// The policy's model as `status.autoscaling.learned` shows it; `epoch` is the wall-clock time
/// of the policy clock's zero.
pub fn learned_from(
    model: &LatencyModel,
    metric: LatencyMetric,
    max_concurrency: i32,
    epoch: Timestamp,
) -> LearnedScaling {
    let seconds = |s: f64| format!("{}s", decimal(s));
    LearnedScaling {
        capacity_per_replica: decimal(model.capacity),
        p95_floor: seconds(model.p95_floor),
        p95_per_request: seconds(model.p95_slope),
        mean_latency_floor: seconds(model.mean_floor),
        mean_latency_per_request: seconds(model.mean_slope),
        burst_dispersion: decimal(model.dispersion),
        attainment_factor: (model.attainment_ln > 0.0).then(|| decimal(model.attainment_ln.exp())),
        last_request_time: model
            .last_request
            .and_then(|t| SignedDuration::try_from_secs_f64(t).ok())
            .and_then(|t| epoch.checked_add(t).ok())
            .and_then(|t| Timestamp::from_second(t.as_second()).ok())
            .map(Time),
        metric,
        // Exact to the millisecond: the policy compares it with the spec's.
        objective: format!(
            "{}s",
            format!("{:.3}", model.capacity_for.0)
                .trim_end_matches('0')
                .trim_end_matches('.')
        ),
        max_concurrency,
    }
}

/// The inverse of [`learned_from`], read at `at` on the policy's clock; `None` when a figure
/// does not parse. An objective within a millisecond of `objective` is that objective (the
/// policy compares them exactly).
pub fn model_from(
    l: &LearnedScaling,
    epoch: Timestamp,
    at: f64,
    objective: Duration,
) -> Option<LatencyModel> {
    let [
        capacity,
        p95_floor,
        p95_slope,
        mean_floor,
        mean_slope,
        dispersion,
        factor,
    ] = figures(l);
    let written = seconds(&l.objective)?;
    let objective = objective.as_secs_f64();
    Some(LatencyModel {
        p95_floor: p95_floor?,
        p95_slope: p95_slope?,
        mean_floor: mean_floor?,
        mean_slope: mean_slope?,
        capacity: capacity?,
        // The capacity may rise from now at the usual pace.
        capacity_at: at,
        capacity_for: (
            if (written - objective).abs() < 1e-3 {
                objective
            } else {
                written
            },
            u32::try_from(l.max_concurrency).ok()?,
        ),
        last_request: l
            .last_request_time
            .as_ref()
            .map(|t| t.0.duration_since(epoch).as_secs_f64()),
        dispersion: dispersion?,
        // Below 1 only by rounding: the policy never lowers it past 1.
        attainment_ln: factor?.max(1.0).ln(),
        // The windows it counted are not counted again.
        attainment_at: at,
        carried: None,
    })
}

/// Seconds from a latency as [`learned_from`] writes it.
fn seconds(s: &str) -> Option<f64> {
    parse_duration(s).map(|d| d.as_secs_f64())
}

/// The figures of a learned status, `None` where one does not parse: the capacity, the p95's
/// floor and cost per request, the mean's floor and cost per request, the dispersion, the
/// attainment factor (1 when absent).
fn figures(l: &LearnedScaling) -> [Option<f64>; 7] {
    let number = |s: &str| s.parse::<f64>().ok().filter(|x| x.is_finite() && *x >= 0.0);
    [
        number(&l.capacity_per_replica),
        seconds(&l.p95_floor),
        seconds(&l.p95_per_request),
        seconds(&l.mean_latency_floor),
        seconds(&l.mean_latency_per_request),
        number(&l.burst_dispersion),
        l.attainment_factor.as_deref().map_or(Some(1.0), number),
    ]
}

/// Whether `new` says something `old` does not: another measure, another last request, or a
/// figure that moved by more than [`LEARNED_CHANGE`] (status is not rewritten for the drift of
/// an estimate).
pub fn learned_moved(old: Option<&LearnedScaling>, new: Option<&LearnedScaling>) -> bool {
    let (Some(old), Some(new)) = (old, new) else {
        return old != new;
    };
    // A figure that does not parse counts as moved.
    let moved = figures(old)
        .into_iter()
        .zip(figures(new))
        .any(|pair| match pair {
            (Some(a), Some(b)) => (a - b).abs() > LEARNED_CHANGE * a.max(b),
            _ => true,
        });
    moved
        || (old.metric, &old.objective, old.max_concurrency)
            != (new.metric, &new.objective, new.max_concurrency)
        || old.last_request_time != new.last_request_time
}

/// A decimal string with four significant digits and trailing zeros cut (`0.2134`, `12.5`);
/// no fraction from 10⁴ on, and at most nine places.
pub fn decimal(x: f64) -> String {
    if !(x.is_finite() && x > 0.0) {
        return "0".to_owned();
    }
    let places = (3 - x.log10().floor() as i32).clamp(0, 9) as usize;
    let s = format!("{x:.places$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A model as the policy returns one, for the tests here and in `controller::autoscaler`.
    pub(crate) fn learned_model() -> LatencyModel {
        LatencyModel {
            p95_floor: 21.4321,
            p95_slope: 5.5,
            mean_floor: 8.7,
            mean_slope: 3.25,
            capacity: 0.213_456,
            capacity_at: 100.0,
            capacity_for: (30.0, 4),
            last_request: Some(990.4),
            dispersion: 4.2,
            carried: None,
            attainment_ln: 1.125_f64.ln(),
            attainment_at: 990.0,
        }
    }

    #[test]
    fn decimals_keep_four_significant_digits() {
        assert_eq!(decimal(0.213_456), "0.2135");
        assert_eq!(decimal(12.5), "12.5");
        assert_eq!(decimal(1234.56), "1235");
        assert_eq!(decimal(0.000_123_46), "0.0001235");
        assert_eq!(decimal(0.0), "0");
        assert_eq!(decimal(f64::NAN), "0");
    }

    #[test]
    fn the_learned_model_survives_a_round_trip_through_status() {
        // The policy clock's zero is at 1_799_999_000 on the wall clock: its 990.4 s (the
        // last request) is 1_799_999_990.4.
        let epoch = Timestamp::from_second(1_799_999_000).expect("time");
        let l = learned_from(&learned_model(), LatencyMetric::RequestLatency, 4, epoch);
        assert_eq!(l.capacity_per_replica, "0.2135");
        assert_eq!(
            (l.p95_floor.as_str(), l.p95_per_request.as_str()),
            ("21.43s", "5.5s")
        );
        assert_eq!(l.burst_dispersion, "4.2");
        assert_eq!(l.attainment_factor.as_deref(), Some("1.125"));
        assert_eq!(l.objective, "30s");
        // Whole seconds, as the apiserver stores them.
        assert_eq!(
            l.last_request_time,
            Some(Time(Timestamp::from_second(1_799_999_990).expect("time")))
        );
        // Read back by a process started at 1_800_000_015, whose clock reads 5 s.
        let later = Timestamp::from_second(1_800_000_015).expect("time");
        let m = model_from(&l, later, 5.0, Duration::from_secs(30)).expect("parses");
        let want = learned_model();
        assert!((m.p95_floor - 21.43).abs() < 1e-9, "{m:?}");
        assert!((m.capacity - 0.2135).abs() < 1e-9, "{m:?}");
        assert_eq!(
            (m.mean_slope, m.dispersion),
            (want.mean_slope, want.dispersion)
        );
        assert_eq!((m.capacity_at, m.capacity_for), (5.0, (30.0, 4)));
        assert!((m.attainment_ln - want.attainment_ln).abs() < 1e-9, "{m:?}");
        // Its windows are not counted again.
        assert_eq!(m.attainment_at, 5.0);
        // Written before the factor existed, or with none: 1.
        let none = LearnedScaling {
            attainment_factor: None,
            ..l.clone()
        };
        let m = model_from(&none, later, 5.0, Duration::from_secs(30)).expect("parses");
        assert_eq!(m.attainment_ln, 0.0);
        assert_eq!(
            learned_from(&m, LatencyMetric::RequestLatency, 4, epoch).attainment_factor,
            None
        );
        // 25 s before the new process started.
        assert_eq!(m.last_request, Some(-25.0));
        // Milliseconds survive: a time to first token is tens of them.
        let fast = LatencyModel {
            p95_floor: 0.0423,
            p95_slope: 0.000_81,
            capacity_for: (1.005, 4),
            ..learned_model()
        };
        let l = learned_from(&fast, LatencyMetric::TimeToFirstToken, 4, epoch);
        assert_eq!(
            (l.p95_per_request.as_str(), l.objective.as_str()),
            ("0.00081s", "1.005s")
        );
        let m = model_from(&l, later, 5.0, Duration::from_millis(1005)).expect("parses");
        assert_eq!((m.p95_floor, m.p95_slope), (0.0423, 0.000_81));
        assert_eq!(m.capacity_for.0, Duration::from_millis(1005).as_secs_f64());
        // An objective past ten seconds with milliseconds: four significant digits would cut
        // it, and the policy would drop the restored capacity as measured for another one.
        let objective = Duration::from_millis(12_345);
        let slow = LatencyModel {
            capacity_for: (objective.as_secs_f64(), 4),
            ..learned_model()
        };
        let l = learned_from(&slow, LatencyMetric::RequestLatency, 4, epoch);
        assert_eq!(l.objective, "12.345s");
        let m = model_from(&l, later, 5.0, objective).expect("parses");
        assert_eq!(m.capacity_for.0, objective.as_secs_f64());
        // A figure that does not parse: nothing is restored.
        let bad = LearnedScaling {
            p95_floor: "fast".to_owned(),
            ..l
        };
        assert_eq!(model_from(&bad, later, 5.0, Duration::from_secs(30)), None);
    }
}
