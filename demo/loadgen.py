#!/usr/bin/env python3
"""Load generator, live view and plot of `make demo`.

Sends an open-loop (Poisson) stream of OpenAI completions to the ready runtime pods of one
ModelService, following a schedule (ramp up, plateau above one replica's capacity, ramp down,
quiet), and prints one compact line per second: request rate, p95 latency against the objective,
desired and ready replicas, and the autoscaler's last reason, read from the ModelService's status.
At the end it writes the raw figures (CSV), a plot (PNG) and a short summary.

There is no kube-proxy on the local control plane, so the generator is its own client-side load
balancer: it lists the ready pods every second (kubectl) and spreads requests over them.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai

# A prompt SmolLM2 continues for the whole max_tokens (some prompts end at once with EOS).
PROMPT = "Once upon a time, in a small village by the sea, there lived"


@dataclass
class Sample:
    start: float
    latency: float | None
    ttft: float | None
    status: str
    pod: str


@dataclass
class Tick:
    t: float
    offered: float
    completed: float
    p95: float | None
    desired: int | None
    ready: int | None
    reason: str


@dataclass
class State:
    pods: list[str] = field(default_factory=list)
    status: dict = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    ticks: list[Tick] = field(default_factory=list)
    next_pod: int = 0
    t0: float = field(default_factory=time.monotonic)
    # Each change of the autoscaler's conditions seen: (seconds, type, status, reason, message).
    conditions: list[tuple[float, str, str, str, str]] = field(default_factory=list)


AUTOSCALER_CONDITIONS = ("ScalingActive", "ScalingLimited")


def note_conditions(state: State) -> None:
    """Records the autoscaler's conditions whose status or reason changed since last seen."""
    for c in state.status.get("conditions", []):
        if c["type"] not in AUTOSCALER_CONDITIONS:
            continue
        last = next((k for k in reversed(state.conditions) if k[1] == c["type"]), None)
        if last is None or (last[2], last[3]) != (c["status"], c["reason"]):
            state.conditions.append(
                (time.monotonic() - state.t0, c["type"], c["status"], c["reason"], c.get("message", ""))
            )


def kubectl(*args: str) -> str:
    out = subprocess.run(["kubectl", *args], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def parse_duration(s: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    total, num = 0.0, ""
    i = 0
    while i < len(s):
        if s[i].isdigit() or s[i] == ".":
            num += s[i]
            i += 1
            continue
        unit = "ms" if s[i : i + 2] == "ms" else s[i]
        total += float(num) * units[unit]
        num = ""
        i += len(unit)
    return total


def rate_at(t: float, phases: list[tuple[float, float, float]]) -> float | None:
    """Offered rate (requests/s) at time t; None once the schedule is over."""
    start = 0.0
    for duration, r0, r1 in phases:
        if t < start + duration:
            return r0 + (r1 - r0) * (t - start) / duration
        start += duration
    return None


def parse_schedule(spec: str) -> list[tuple[float, float, float]]:
    """`60:0-2,180:2,60:2-0.2,150:0.2`: seconds:rate or seconds:from-to, comma separated."""
    phases = []
    for part in spec.split(","):
        seconds, rates = part.split(":")
        lo, _, hi = rates.partition("-")
        phases.append((float(seconds), float(lo), float(hi or lo)))
    return phases


async def refresh(args: argparse.Namespace, state: State, stop: asyncio.Event) -> None:
    """Every second: the ready pods, and the ModelService's status."""
    while not stop.is_set():
        try:
            pods = json.loads(
                await asyncio.to_thread(
                    kubectl, "get", "pods", "-n", args.namespace, "-l",
                    f"app.kubernetes.io/instance={args.name}", "-o", "json",
                )
            )
            ready = []
            for p in pods["items"]:
                conds = p.get("status", {}).get("conditions", [])
                ip = p.get("status", {}).get("podIP")
                deleting = p["metadata"].get("deletionTimestamp") is not None
                if ip and not deleting and any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                    ready.append(ip)
            state.pods = sorted(ready)
            ms = json.loads(await asyncio.to_thread(kubectl, "get", "ms", args.name, "-n", args.namespace, "-o", "json"))
            state.status = ms.get("status", {})
            note_conditions(state)
        except Exception as e:  # the view goes on; the next refresh may succeed
            print(f"  (refresh failed: {e})", file=sys.stderr)
        try:
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        except asyncio.TimeoutError:
            pass


async def one_request(args: argparse.Namespace, state: State, clients: dict, t0: float) -> None:
    if not state.pods:
        state.samples.append(Sample(time.monotonic() - t0, None, None, "no-ready-pod", ""))
        return
    pod = state.pods[state.next_pod % len(state.pods)]
    state.next_pod += 1
    client = clients.setdefault(
        pod, openai.AsyncOpenAI(base_url=f"http://{pod}:{args.port}/v1", api_key="none", max_retries=0, timeout=120)
    )
    start = time.monotonic()
    ttft = None
    try:
        stream = await client.completions.create(
            model=args.served_name, prompt=PROMPT, max_tokens=args.max_tokens, temperature=0, stream=True
        )
        async for chunk in stream:
            if ttft is None and chunk.choices and chunk.choices[0].text:
                ttft = time.monotonic() - start
        state.samples.append(Sample(start - t0, time.monotonic() - start, ttft, "ok", pod))
    except openai.RateLimitError:
        state.samples.append(Sample(start - t0, None, None, "429", pod))
    except Exception as e:  # a pod going away mid-request, a timeout
        state.samples.append(Sample(start - t0, None, None, type(e).__name__, pod))


def p95(values: list[float]) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, math.ceil(0.95 * len(v)) - 1)]


def view_line(t: float, offered: float, state: State, objective: float) -> Tick:
    window = [s for s in state.samples if s.latency is not None and t - 15 <= s.start + s.latency <= t]
    done = [s for s in state.samples if s.latency is not None and t - 5 <= s.start + s.latency <= t]
    latency = p95([s.latency for s in window])
    st = state.status
    decisions = (st.get("autoscaling") or {}).get("lastDecisions") or []
    reason = decisions[-1]["reason"] if decisions else ""
    tick = Tick(t, offered, len(done) / 5.0, latency, st.get("desiredReplicas"), st.get("readyReplicas"), reason)
    lat = f"{latency:5.2f}s" if latency is not None else "   - "
    mark = "!" if latency is not None and latency > objective else " "
    print(
        f"t={t:5.0f}s  offered {offered:4.2f}/s  done {tick.completed:4.2f}/s  p95 {lat}{mark}(obj {objective:g}s)  "
        f"replicas {tick.desired if tick.desired is not None else '-'} desired / {tick.ready if tick.ready is not None else '-'} ready"
        f"  {reason[:70]}",
        flush=True,
    )
    return tick


async def run(args: argparse.Namespace) -> int:
    phases = parse_schedule(args.schedule)
    objective = parse_duration(args.objective)
    state = State()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    refresher = asyncio.create_task(refresh(args, state, stop))
    clients: dict = {}
    rng = random.Random(args.seed)
    t0 = state.t0 = time.monotonic()
    inflight: set[asyncio.Task] = set()
    next_arrival = 0.0
    last_tick = 0.0
    print(f"load: {args.schedule} (seconds:requests/s), {args.max_tokens} tokens each, objective p95 {args.objective}")
    while not stop.is_set():
        t = time.monotonic() - t0
        offered = rate_at(t, phases)
        if offered is None:
            break
        while next_arrival <= t:
            rate = max(rate_at(next_arrival, phases) or 0.0, 1e-3)
            if rate_at(next_arrival, phases):
                task = asyncio.create_task(one_request(args, state, clients, t0))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            next_arrival += rng.expovariate(rate) if rate > 1e-3 else 1.0
        if t - last_tick >= 1.0:
            last_tick = t
            state.ticks.append(view_line(t, offered, state, objective))
        await asyncio.sleep(0.05)
    interrupted = stop.is_set()
    stop.set()
    for task in list(inflight):
        task.cancel()
    await asyncio.gather(*inflight, return_exceptions=True)
    await refresher
    write_results(args, state, objective)
    return 130 if interrupted else 0


def write_results(args: argparse.Namespace, state: State, objective: float) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "requests.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["start_s", "latency_s", "ttft_s", "status", "pod"])
        for s in state.samples:
            w.writerow([f"{s.start:.3f}", "" if s.latency is None else f"{s.latency:.3f}",
                        "" if s.ttft is None else f"{s.ttft:.3f}", s.status, s.pod])
    with open(out / "timeline.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "offered_rps", "completed_rps", "p95_s", "desired", "ready", "reason"])
        for k in state.ticks:
            w.writerow([f"{k.t:.1f}", f"{k.offered:.3f}", f"{k.completed:.3f}",
                        "" if k.p95 is None else f"{k.p95:.3f}", k.desired, k.ready, k.reason])
    ok = [s for s in state.samples if s.latency is not None]
    met = [s for s in ok if s.latency <= objective]
    desired = [k.desired for k in state.ticks if k.desired is not None]
    ups = sum(1 for a, b in zip(desired, desired[1:]) if b > a)
    downs = sum(1 for a, b in zip(desired, desired[1:]) if b < a)
    lines = [
        f"requests sent: {len(state.samples)}, completed: {len(ok)}, "
        f"refused (429): {sum(1 for s in state.samples if s.status == '429')}, "
        f"failed: {sum(1 for s in state.samples if s.status not in ('ok', '429'))}",
        f"requests within the objective ({objective:g}s): {len(met)}/{len(ok)}"
        + (f" ({100 * len(met) / len(ok):.1f} %)" if ok else ""),
        f"p95 latency over the run: {p95([s.latency for s in ok]) or 0:.2f}s",
        f"replicas: max {max(desired, default=0)}, scale-outs {ups}, scale-ins {downs}",
    ]
    decisions = (state.status.get("autoscaling") or {}).get("lastDecisions") or []
    if decisions:
        lines.append("last decisions (status.autoscaling.lastDecisions):")
        lines += [f"  {d['time']}: {d['from']} -> {d['to']}: {d['reason']}" for d in decisions]
    if state.conditions:
        lines.append("autoscaler conditions, as they changed:")
        lines += [f"  t={t:4.0f}s {kind}={status} ({reason}): {message}" for t, kind, status, reason, message in state.conditions]
    (out / "summary.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(out, state, objective)


def plot(out: Path, state: State, objective: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [k.t for k in state.ticks]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(9, 7.5), sharex=True, constrained_layout=True)
    ax1.plot(t, [k.p95 if k.p95 is not None else float("nan") for k in state.ticks], label="p95 latency (15 s window)")
    ax1.axhline(objective, color="red", linestyle="--", label=f"objective {objective:g}s")
    ax1.set_ylabel("seconds")
    ax1.legend(loc="upper left")
    ax1.set_title("Modelfleet: scaling SmolLM2-135M (Q4_1, CPU) to a p95 latency objective")
    ax2.plot(t, [k.offered for k in state.ticks], label="offered")
    ax2.plot(t, [k.completed for k in state.ticks], label="completed")
    ax2.set_ylabel("requests/s")
    ax2.legend(loc="upper left")
    ax3.step(t, [k.desired if k.desired is not None else float("nan") for k in state.ticks], where="post", label="desired")
    ax3.step(t, [k.ready if k.ready is not None else float("nan") for k in state.ticks], where="post", label="ready")
    ax3.set_ylabel("replicas")
    ax3.set_xlabel("seconds")
    ax3.yaxis.get_major_locator().set_params(integer=True)
    ax3.legend(loc="upper left")
    fig.savefig(out / "demo.png", dpi=80)
    print(f"wrote {out / 'demo.png'}, {out / 'summary.txt'}, {out / 'timeline.csv'}, {out / 'requests.csv'}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--namespace", required=True)
    p.add_argument("--name", required=True, help="the ModelService")
    p.add_argument("--served-name", default="smollm2")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--objective", default="3s")
    p.add_argument("--schedule", default=os.environ.get("DEMO_SCHEDULE", "40:0.2-1.0,180:1.0,40:1.0-0.2,150:0.2"))
    p.add_argument("--max-tokens", type=int, default=int(os.environ.get("DEMO_MAX_TOKENS", "64")))
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default="target/demo")
    return asyncio.run(run(p.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
