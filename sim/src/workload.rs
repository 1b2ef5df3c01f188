//! Request streams: the Azure conversation trace as recorded, and synthetic arrival processes
//! (steady, step, bursty Markov-modulated, diurnal, on/off) whose token counts are sampled
//! jointly from the trace's (prompt, output) pairs, so their correlation is kept.
//!
//! The synthetic processes follow `/work/shared/traces/README.md` (copied next to the trace in
//! `sim/traces/`): a burst state at ≈6.7× the mean rate for ≈2.3 s and a calm state at ≈0.4× for
//! ≈23 s; a diurnal envelope `1 + A·sin(2πt/T)`, time-compressed.

use std::path::Path;

use crate::{Rng, SimError};

/// One request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Arrival, seconds from the start.
    pub at: f64,
    /// Prompt tokens.
    pub prompt: u32,
    /// Generated tokens.
    pub output: u32,
}

/// Reads `TIMESTAMP,ContextTokens,GeneratedTokens` (timestamps `YYYY-MM-DD HH:MM:SS.fffffff`)
/// into requests timed from the first one.
pub fn read_trace(path: &Path) -> Result<Vec<Request>, SimError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SimError::ReadTrace(path.display().to_string(), e))?;
    parse_trace(&text)
}

/// Parses the trace text (see [`read_trace`]).
pub fn parse_trace(text: &str) -> Result<Vec<Request>, SimError> {
    let mut out = Vec::new();
    let mut first = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("TIMESTAMP")) {
            continue;
        }
        let bad = |reason: &str| SimError::ParseTrace {
            line: i + 1,
            reason: reason.to_string(),
        };
        let mut cols = line.split(',');
        let (Some(ts), Some(ctx), Some(gen_tokens)) = (cols.next(), cols.next(), cols.next())
        else {
            return Err(bad("expected 3 columns"));
        };
        let t = seconds_of_day(ts).ok_or_else(|| bad("bad timestamp"))?;
        let prompt = ctx.trim().parse().map_err(|_| bad("bad ContextTokens"))?;
        let output = gen_tokens
            .trim()
            .parse()
            .map_err(|_| bad("bad GeneratedTokens"))?;
        let t0 = *first.get_or_insert(t);
        // The trace spans one hour of one day; a wrap past midnight would add a day.
        let at = if t >= t0 { t - t0 } else { t + 86_400.0 - t0 };
        out.push(Request { at, prompt, output });
    }
    if out.is_empty() {
        return Err(SimError::EmptyTrace);
    }
    out.sort_by(|a, b| a.at.total_cmp(&b.at));
    Ok(out)
}

fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.trim().split(' ').nth(1)?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The standard synthetic workloads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synthetic {
    /// Poisson at the mean rate.
    Steady,
    /// Half the mean rate, then 1.5× from a third of the run to two thirds, then half again.
    Step,
    /// Two-state Markov-modulated Poisson: calm 0.4× for ≈23 s, burst 6.7× for ≈2.3 s.
    Bursty,
    /// `1 + 0.6·sin(2πt/T)` over the run (one compressed day).
    Diurnal,
    /// 1.5× the mean rate for 10 min, nothing for 10 min, repeated.
    OnOff,
}

impl Synthetic {
    /// Every synthetic workload.
    pub const ALL: [Synthetic; 5] = [
        Synthetic::Steady,
        Synthetic::Step,
        Synthetic::Bursty,
        Synthetic::Diurnal,
        Synthetic::OnOff,
    ];

    /// The name in the JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::Step => "step",
            Self::Bursty => "bursty",
            Self::Diurnal => "diurnal",
            Self::OnOff => "onoff",
        }
    }

    /// Arrival rate at `t` for a run of `duration` seconds after `warmup`, `mean` req/s
    /// (`None` for the bursty process, which has state).
    fn rate(self, t: f64, warmup: f64, duration: f64, mean: f64) -> f64 {
        let u = (t - warmup).max(0.0);
        match self {
            Self::Steady | Self::Bursty => mean,
            Self::Step => {
                if t >= warmup && u >= duration / 3.0 && u < 2.0 * duration / 3.0 {
                    1.5 * mean
                } else {
                    0.5 * mean
                }
            }
            Self::Diurnal => mean * (1.0 + 0.6 * (2.0 * std::f64::consts::PI * u / duration).sin()),
            Self::OnOff => {
                if t < warmup || ((u / 600.0) as u64).is_multiple_of(2) {
                    1.5 * mean
                } else {
                    0.0
                }
            }
        }
    }

    /// Generates the requests of `warmup + duration` seconds at a mean of `mean` req/s.
    pub fn generate(
        self,
        pairs: &[(u32, u32)],
        mean: f64,
        warmup: f64,
        duration: f64,
        seed: u64,
    ) -> Vec<Request> {
        let mut rng = Rng::new(seed);
        let end = warmup + duration;
        let mut out = Vec::new();
        let mut t = 0.0;
        // Thinning: draw at the peak rate and keep with probability rate(t)/peak.
        let peak = match self {
            Self::Bursty => 6.7 * mean,
            _ => 1.6 * mean,
        };
        let mut burst = false;
        let mut state_end = rng.exp(23.0);
        while t < end && !pairs.is_empty() {
            t += rng.exp(1.0 / peak);
            let rate = if self == Self::Bursty {
                while t >= state_end {
                    burst = !burst;
                    state_end += rng.exp(if burst { 2.3 } else { 23.0 });
                }
                if burst { 6.7 * mean } else { 0.4 * mean }
            } else {
                self.rate(t, warmup, duration, mean)
            };
            if t < end && rng.uniform() * peak < rate {
                let (prompt, output) = pairs[rng.below(pairs.len())];
                out.push(Request {
                    at: t,
                    prompt,
                    output,
                });
            }
        }
        out
    }
}

/// (prompt, output) pairs of a trace, cut to fit `context` tokens as the runtime would refuse
/// longer ones: the prompt is cut, the output kept.
pub fn token_pairs(trace: &[Request], context: u32) -> Vec<(u32, u32)> {
    trace
        .iter()
        .map(|r| {
            let output = r.output.min(context / 2);
            (r.prompt.min(context - output), output)
        })
        .collect()
}

/// A step up of the load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepUp {
    /// When, seconds.
    pub at: f64,
    /// New rate over old rate.
    pub ratio: f64,
    /// When the new level ends (the next change or the end of the stream).
    pub until: f64,
}

/// Steps up of at least 1.5× between consecutive 60 s arrival counts after `warmup`, found from
/// the stream itself so that every workload (and a trace) is treated alike.
pub fn steps_up(requests: &[Request], warmup: f64) -> Vec<StepUp> {
    let Some(last) = requests.last() else {
        return Vec::new();
    };
    let bins = (last.at / 60.0) as usize + 1;
    let mut counts = vec![0u32; bins];
    for r in requests {
        counts[(r.at / 60.0) as usize] += 1;
    }
    let first = (warmup / 60.0).ceil() as usize;
    let mut out: Vec<StepUp> = Vec::new();
    let mut i = first.max(2);
    while i + 1 < bins {
        // Compare the two minutes before with the two minutes after, so that Poisson noise at a
        // few requests per second does not look like a step.
        let before = f64::from(counts[i - 2] + counts[i - 1]).max(1.0);
        let after = f64::from(counts[i] + counts[i + 1]);
        if after >= 1.5 * before && after >= 60.0 {
            out.push(StepUp {
                at: i as f64 * 60.0,
                ratio: after / before,
                until: last.at,
            });
            i += 5;
        } else {
            i += 1;
        }
    }
    let n = out.len();
    for k in 0..n.saturating_sub(1) {
        out[k].until = out[k + 1].at;
    }
    out
}

/// The seconds the stream lasts.
pub fn duration(requests: &[Request]) -> f64 {
    requests.last().map_or(0.0, |r| r.at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_trace_format() {
        let t = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n";
        let r = parse_trace(t).unwrap();
        assert_eq!(r.len(), 2);
        assert!((r[1].at - 4.314579).abs() < 1e-6);
        assert_eq!((r[1].prompt, r[1].output), (396, 109));
        assert!(parse_trace("TIMESTAMP,a,b\nx,1\n").is_err());
    }

    #[test]
    fn synthetic_rates_are_as_specified() {
        let pairs = vec![(100, 10)];
        for w in Synthetic::ALL {
            let r = w.generate(&pairs, 2.0, 0.0, 3600.0, 7);
            let mean = r.len() as f64 / 3600.0;
            let expect = match w {
                Synthetic::Step => 2.0 * (0.5 * 2.0 + 1.5) / 3.0,
                Synthetic::OnOff => 1.5,
                _ => 2.0,
            };
            assert!((mean / expect - 1.0).abs() < 0.15, "{w:?}: {mean}");
            assert_eq!(r, w.generate(&pairs, 2.0, 0.0, 3600.0, 7), "deterministic");
        }
    }

    #[test]
    fn steps_are_found_in_the_step_workload() {
        let r = Synthetic::Step.generate(&[(100, 10)], 3.0, 0.0, 3600.0, 1);
        let s = steps_up(&r, 0.0);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!((s[0].at - 1200.0).abs() <= 60.0, "{s:?}");
    }
}
