//! The policies users run today, implemented from their documented formulas and defaults
//! (`/work/shared/docs/autoscaling-baselines.md`), not tuned: HPA on the p95 latency, Knative KPA
//! and AIBrix APA on concurrency, KubeAI on active requests.
//!
//! Targets that a user must pick for this runtime are picked as each project's documentation
//! tells a user to: HPA's target is the latency objective itself; KPA's `containerConcurrency`
//! is the runtime's batch size (4) at the default 0.7 target utilization (2.8 in flight per
//! pod); APA uses the same 2.8 per pod; KubeAI's `targetRequests` is the batch size (4), because
//! its default of 100 is sized for GPU engines and would never scale a 4-slot CPU runtime.

use std::collections::VecDeque;

use crate::{PolicyKind, RunConfig, View};

/// KPA's and APA's target utilization of `containerConcurrency` (Knative default).
pub const TARGET_UTILIZATION: f64 = 0.7;

/// One peer's state.
#[derive(Debug)]
pub enum Peer {
    /// Not a peer: the simulator calls the Modelfleet policy itself.
    None,
    /// Kubernetes HPA.
    Hpa(Hpa),
    /// Knative KPA.
    Kpa(Kpa),
    /// AIBrix APA.
    Apa(Apa),
    /// KubeAI.
    Kubeai(Kubeai),
}

impl Peer {
    /// The peer for `kind`, configured for `cfg`'s objective and runtime.
    pub fn new(kind: PolicyKind, cfg: &RunConfig) -> Self {
        let batch = f64::from(cfg.service.max_batch.max(1));
        match kind {
            PolicyKind::Modelfleet => Self::None,
            PolicyKind::Hpa => Self::Hpa(Hpa::new(cfg.objective)),
            PolicyKind::Kpa => Self::Kpa(Kpa::new(batch * TARGET_UTILIZATION)),
            PolicyKind::Apa => Self::Apa(Apa::new(batch * TARGET_UTILIZATION)),
            PolicyKind::Kubeai => Self::Kubeai(Kubeai::new(batch)),
        }
    }

    /// Seconds between decisions.
    pub fn interval(&self) -> f64 {
        match self {
            Self::None => 5.0,
            Self::Hpa(_) => 15.0,
            Self::Kpa(_) => 2.0,
            Self::Apa(_) | Self::Kubeai(_) => 10.0,
        }
    }

    /// The replica count this peer asks for now.
    pub fn decide(&mut self, v: &View) -> u32 {
        match self {
            Self::None => v.desired,
            Self::Hpa(p) => p.decide(v.now, v.desired, v.ready, v.starting, v.samples.p95(60)),
            Self::Kpa(p) => p.decide(
                v.now,
                v.desired,
                v.ready,
                v.samples.mean_concurrency(60),
                v.samples.mean_concurrency(6),
            ),
            Self::Apa(p) => p.decide(v.now, v.desired, v.samples.mean_per_pod(180)),
            Self::Kubeai(p) => p.decide(v.desired, v.samples.mean_concurrency(600)),
        }
    }
}

/// HPA on a per-pod latency metric: tolerance 0.1, scale-up at most max(+4, +100 %) per sync,
/// scale-down to the highest recommendation of the last 300 s; pods without metrics count as
/// 0 % of the target when scaling up and 100 % when scaling down.
#[derive(Debug)]
pub struct Hpa {
    target: f64,
    history: VecDeque<(f64, u32)>,
}

impl Hpa {
    /// Tolerance band around the target where nothing changes.
    pub const TOLERANCE: f64 = 0.1;
    /// Scale-down stabilization window, seconds.
    pub const DOWN_WINDOW: f64 = 300.0;

    /// With the latency target, seconds.
    pub fn new(target: f64) -> Self {
        Self {
            target,
            history: VecDeque::new(),
        }
    }

    /// The raw recommendation of one sync, before stabilization and rate limits.
    pub fn recommend(&self, current: u32, ready: u32, unready: u32, metric: Option<f64>) -> u32 {
        let Some(m) = metric else {
            // No metric: HPA skips the scale decision.
            return current;
        };
        if ready == 0 {
            return current;
        }
        let ratio = m / self.target;
        if (1.0 - ratio).abs() <= Self::TOLERANCE {
            return current;
        }
        let r = f64::from(ready);
        let all = f64::from(ready + unready);
        if ratio > 1.0 && unready > 0 {
            // Unready pods count as 0 % when scaling up.
            let adjusted = m * r / (self.target * all);
            if adjusted <= 1.0 + Self::TOLERANCE {
                return current;
            }
            return (adjusted * all).ceil() as u32;
        }
        if ratio < 1.0 && unready > 0 {
            // Pods without metrics count as 100 % when scaling down.
            let adjusted = (m * r + self.target * f64::from(unready)) / (self.target * all);
            if (1.0 - adjusted).abs() <= Self::TOLERANCE || adjusted >= 1.0 {
                return current;
            }
            return (adjusted * all).ceil() as u32;
        }
        (ratio * r).ceil() as u32
    }

    /// One sync at `now`.
    pub fn decide(
        &mut self,
        now: f64,
        current: u32,
        ready: u32,
        unready: u32,
        metric: Option<f64>,
    ) -> u32 {
        let rec = self.recommend(current, ready, unready, metric);
        self.history.push_back((now, rec));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| *t < now - Self::DOWN_WINDOW)
        {
            self.history.pop_front();
        }
        if rec > current {
            rec.min((current + 4).max(2 * current))
        } else {
            // Scale-down stabilization: the highest recommendation of the window.
            let highest = self.history.iter().map(|(_, r)| *r).max().unwrap_or(rec);
            highest.min(current)
        }
    }
}

/// Knative KPA: stable (60 s) and panic (6 s) windows, panic at 2× the ready pods.
#[derive(Debug)]
pub struct Kpa {
    target: f64,
    panic_since: Option<f64>,
    last_over: f64,
}

impl Kpa {
    /// Stable window, seconds; also how long panic lasts after the last excess.
    pub const STABLE_WINDOW: f64 = 60.0;
    /// Panic threshold: desired panic pods over ready pods.
    pub const PANIC_THRESHOLD: f64 = 2.0;

    /// With the target concurrency per pod.
    pub fn new(target: f64) -> Self {
        Self {
            target,
            panic_since: None,
            last_over: f64::NEG_INFINITY,
        }
    }

    /// True while in panic mode.
    pub fn in_panic(&self) -> bool {
        self.panic_since.is_some()
    }

    /// One decision from the 60 s and 6 s average concurrencies.
    pub fn decide(
        &mut self,
        now: f64,
        current: u32,
        ready: u32,
        stable: Option<f64>,
        panic: Option<f64>,
    ) -> u32 {
        let (Some(stable), Some(panic)) = (stable, panic) else {
            return current;
        };
        let ready_f = f64::from(ready.max(1));
        let lo = (ready_f / 2.0).floor();
        let hi = ready_f * 1000.0;
        let want_stable = (stable / self.target).ceil().clamp(lo, hi);
        let want_panic = (panic / self.target).ceil().clamp(lo, hi);
        if want_panic / ready_f >= Self::PANIC_THRESHOLD {
            self.last_over = now;
            if self.panic_since.is_none() {
                self.panic_since = Some(now);
            }
        } else if self.panic_since.is_some() && now - self.last_over >= Self::STABLE_WINDOW {
            self.panic_since = None;
        }
        let want = if self.in_panic() {
            // Never scale down in panic.
            want_stable.max(want_panic).max(f64::from(current))
        } else {
            want_stable
        };
        want as u32
    }
}

/// AIBrix APA: ratio to the target with a ±10 % band, at most ×2 up and ÷2 down per step, a
/// 300 s cooldown before a scale-down, and scale-down to the lowest recommendation of the
/// 180 s window.
#[derive(Debug)]
pub struct Apa {
    target: f64,
    history: VecDeque<(f64, u32)>,
    last_scale: f64,
}

impl Apa {
    /// Stable window, seconds.
    pub const WINDOW: f64 = 180.0;
    /// Scale-down cooldown, seconds.
    pub const COOLDOWN: f64 = 300.0;

    /// With the target per pod.
    pub fn new(target: f64) -> Self {
        Self {
            target,
            history: VecDeque::new(),
            last_scale: f64::NEG_INFINITY,
        }
    }

    /// The formula alone.
    pub fn recommend(&self, current: u32, per_pod: f64) -> u32 {
        let cur = f64::from(current.max(1));
        let r = per_pod / self.target;
        let n = if r > 1.1 {
            (cur * r).ceil().min(2.0 * cur)
        } else if r < 0.9 {
            (cur * r).ceil().max((cur / 2.0).floor())
        } else {
            cur
        };
        n as u32
    }

    /// One evaluation at `now` from the 180 s average per pod.
    pub fn decide(&mut self, now: f64, current: u32, per_pod: Option<f64>) -> u32 {
        let Some(per_pod) = per_pod else {
            return current;
        };
        let rec = self.recommend(current, per_pod);
        self.history.push_back((now, rec));
        while self
            .history
            .front()
            .is_some_and(|(t, _)| *t < now - Self::WINDOW)
        {
            self.history.pop_front();
        }
        let out = if rec > current {
            rec
        } else if rec < current && now - self.last_scale >= Self::COOLDOWN {
            self.history
                .iter()
                .map(|(_, r)| *r)
                .min()
                .unwrap_or(rec)
                .min(current)
        } else {
            current
        };
        if out != current {
            self.last_scale = now;
        }
        out
    }
}

/// KubeAI: 10 min moving average of active requests over the target per replica; down only
/// after 3 consecutive lower decisions.
#[derive(Debug)]
pub struct Kubeai {
    target: f64,
    lower: u32,
}

impl Kubeai {
    /// Consecutive lower decisions before a scale-down.
    pub const CONSECUTIVE: u32 = 3;

    /// With `targetRequests`.
    pub fn new(target: f64) -> Self {
        Self { target, lower: 0 }
    }

    /// One decision from the 10 min average of active requests.
    pub fn decide(&mut self, current: u32, average: Option<f64>) -> u32 {
        let Some(avg) = average else {
            return current;
        };
        let want = (avg / self.target).ceil() as u32;
        if want < current {
            self.lower += 1;
            if self.lower >= Self::CONSECUTIVE {
                self.lower = 0;
                return want;
            }
            return current;
        }
        self.lower = 0;
        want
    }
}
