//! `make bench-runtime`: our runtime (through HTTP) against llama.cpp driven directly, same run.
//!
//! Both sides use the same GGUF, thread count, prompt and greedy sampling, and the same llama.cpp
//! build and context parameters (`engine::llama::context_params`), so the ratio measures what our
//! layer (HTTP, validation, scheduler, channels) costs. Runs are interleaved (direct, ours, ours,
//! direct, …) and each side runs in its own process, so load time and peak RSS are per process.
//! Prints a table of medians with min–max and writes `target/bench/runtime.json` with the raw
//! figures and `decode_ratio`, `prompt_ratio`, `batch4_ratio` (ours / llama.cpp, of the medians).
//!
//! Environment: MODELFLEET_MODEL_PATH, MODELFLEET_RUNTIME_BIN (default: the binary cargo built
//! for the bench), BENCH_RUNS (5),
//! BENCH_THREADS (2), BENCH_NEW_TOKENS (128).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;
use modelfleet_runtime::engine::Sampling;
use modelfleet_runtime::engine::llama::{LlamaConfig, backend, context_params, sampler};
use serde_json::{Value, json};

/// About 128 tokens of plain English for SmolLM2's tokenizer; the exact count is reported.
const PROMPT: &str = "The old lighthouse keeper climbed the spiral stairs every evening, carrying a lantern and a \
small notebook. He wrote down the colour of the sky, the direction of the wind, and the names of the ships \
that passed the rocky point. The villagers thought he was strange, but the children loved his stories about \
storms, sea monsters and lost treasure. One night, a thick fog rolled in from the ocean and the great lamp at \
the top of the tower flickered and went dark. The keeper knew that a fishing boat was still out at sea, so he \
picked up his lantern and";
const CONTEXT: u32 = 512;
const MAX_CONCURRENCY: u32 = 8;
const CLIENTS: [usize; 3] = [1, 4, 8];

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--direct-worker") {
        direct_worker();
        return;
    }
    if args.iter().any(|a| a == "--list") {
        return;
    }
    orchestrate();
}

/// llama.cpp through `llama-cpp-2`, no server: one process, prints one JSON line.
fn direct_worker() {
    let start = Instant::now();
    let model_path = std::env::var("MODELFLEET_MODEL_PATH").unwrap();
    let threads: u32 = env_or("BENCH_THREADS", 2);
    let new_tokens: u32 = env_or("BENCH_NEW_TOKENS", 128);
    let backend = backend().unwrap();
    let model =
        LlamaModel::load_from_file(backend, &model_path, &LlamaModelParams::default()).unwrap();
    let prompt: Vec<LlamaToken> = model.vocab().tokenize(PROMPT.as_bytes(), true, false);
    let cfg = |n: u32| LlamaConfig {
        path: PathBuf::from(&model_path),
        context_length: CONTEXT,
        max_concurrency: n,
        max_queue: 0,
        threads,
    };
    // The server's context holds MAX_CONCURRENCY sequences; the direct single stream uses the
    // context llama.cpp would use for one sequence, the fastest setting for it.
    let mut ctx = model.new_context(backend, context_params(&cfg(1))).unwrap();
    let greedy = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };
    // Warm-up: one token, like the runtime does before it reports ready.
    {
        let mut b = LlamaBatch::new(512, 1);
        b.add(prompt[0], 0, &[0], true).unwrap();
        ctx.decode(&mut b).unwrap();
        let mut s = sampler(&greedy);
        let _ = s.sample(&ctx, 0);
        ctx.clear_kv_cache_seq(Some(0), None, None).unwrap();
    }
    let load_s = start.elapsed().as_secs_f64();

    // Single stream: prompt pass, then one token per decode.
    let vocab = model.vocab();
    let mut piece = Vec::new();
    let mut b = LlamaBatch::new(512, 1);
    let t0 = Instant::now();
    for (i, t) in prompt.iter().enumerate() {
        b.add(*t, i as i32, &[0], i + 1 == prompt.len()).unwrap();
    }
    ctx.decode(&mut b).unwrap();
    let mut s = sampler(&greedy);
    let mut tok = s.sample(&ctx, b.n_tokens() - 1);
    let t_first = Instant::now();
    let mut generated = 1u32;
    let mut pos = prompt.len() as i32;
    while generated < new_tokens && !vocab.is_eog(tok) {
        piece.clear();
        vocab.token_to_piece_into(tok, &mut piece, false, None);
        b.clear();
        b.add(tok, pos, &[0], true).unwrap();
        pos += 1;
        ctx.decode(&mut b).unwrap();
        tok = s.sample(&ctx, 0);
        generated += 1;
    }
    let t_last = Instant::now();
    drop(ctx);
    let prompt_s = t_first.duration_since(t0).as_secs_f64();
    let decode_s = t_last.duration_since(t_first).as_secs_f64();

    // n sequences decoded together in one batch, prompts prefilled together.
    let mut batch = BTreeMap::new();
    for n in CLIENTS {
        let mut ctx = model
            .new_context(backend, context_params(&cfg(n as u32)))
            .unwrap();
        let mut b = LlamaBatch::new(512, n as i32);
        let mut samplers: Vec<_> = (0..n).map(|_| sampler(&greedy)).collect();
        let t0 = Instant::now();
        let mut next = vec![None; n];
        // Prefill in chunks of the batch size, as a server would.
        let mut queued: Vec<(usize, usize)> = (0..n)
            .flat_map(|s| (0..prompt.len()).map(move |i| (s, i)))
            .collect();
        let mut logits_at = vec![None; n];
        while !queued.is_empty() {
            b.clear();
            let take = queued.len().min(512);
            for (k, (s, i)) in queued.drain(..take).enumerate() {
                let last = i + 1 == prompt.len();
                if last {
                    logits_at[s] = Some(k as i32);
                }
                b.add(prompt[i], i as i32, &[s as i32], last).unwrap();
            }
            ctx.decode(&mut b).unwrap();
            for s in 0..n {
                if let Some(idx) = logits_at[s].take() {
                    next[s] = Some(samplers[s].sample(&ctx, idx));
                }
            }
        }
        let mut total = n as u64;
        let mut pos = vec![prompt.len() as i32; n];
        let mut count = vec![1u32; n];
        loop {
            b.clear();
            let mut idx = vec![None; n];
            for s in 0..n {
                if let Some(t) = next[s] {
                    if count[s] >= new_tokens || vocab.is_eog(t) {
                        next[s] = None;
                        continue;
                    }
                    piece.clear();
                    vocab.token_to_piece_into(t, &mut piece, false, None);
                    idx[s] = Some(b.n_tokens());
                    b.add(t, pos[s], &[s as i32], true).unwrap();
                    pos[s] += 1;
                }
            }
            if b.n_tokens() == 0 {
                break;
            }
            ctx.decode(&mut b).unwrap();
            for s in 0..n {
                if let Some(i) = idx[s] {
                    next[s] = Some(samplers[s].sample(&ctx, i));
                    count[s] += 1;
                    total += 1;
                }
            }
        }
        let wall = t0.elapsed().as_secs_f64();
        batch.insert(
            n.to_string(),
            json!({"tokens": total, "seconds": wall, "tokens_per_s": total as f64 / wall}),
        );
    }
    let out = json!({
        "load_s": load_s,
        "prompt_tokens": prompt.len(),
        "prompt_tok_s": prompt.len() as f64 / prompt_s,
        "generated": generated,
        "decode_tok_s": f64::from(generated - 1) / decode_s,
        "peak_rss_kib": peak_rss_kib(std::process::id()),
        "batch": batch,
    });
    println!("{out}");
}

fn run_direct() -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .arg("--direct-worker")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "direct worker failed");
    let line = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(line.lines().last().unwrap()).unwrap()
}

/// One streamed completion: (prompt tokens/s, decode tokens/s, completion tokens).
async fn streamed(client: &reqwest::Client, base: &str, new_tokens: u32) -> (f64, f64, u32, u32) {
    let body = json!({"model": "bench", "prompt": PROMPT, "max_tokens": new_tokens, "temperature": 0,
                      "stream": true, "stream_options": {"include_usage": true}});
    let t0 = Instant::now();
    let r = client
        .post(format!("{base}/v1/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut buf = String::new();
    let (mut first, mut last) = (None, None);
    let mut usage = Value::Null;
    while let Some(chunk) = stream.next().await {
        let now = Instant::now();
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let Some(data) = event.trim().strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                continue;
            }
            let v: Value = serde_json::from_str(data).unwrap();
            if v["choices"][0]["text"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                first.get_or_insert(now);
                last = Some(now);
            }
            if !v["usage"].is_null() {
                usage = v["usage"].clone();
            }
        }
    }
    let (first, last) = (first.unwrap(), last.unwrap());
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap() as u32;
    let completion = usage["completion_tokens"].as_u64().unwrap() as u32;
    let prompt_tok_s = f64::from(prompt_tokens) / first.duration_since(t0).as_secs_f64();
    let decode_tok_s = f64::from(completion - 1) / last.duration_since(first).as_secs_f64();
    (prompt_tok_s, decode_tok_s, completion, prompt_tokens)
}

async fn concurrent(client: &reqwest::Client, base: &str, n: usize, new_tokens: u32) -> Value {
    let body =
        json!({"model": "bench", "prompt": PROMPT, "max_tokens": new_tokens, "temperature": 0});
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (c, url, body) = (
                client.clone(),
                format!("{base}/v1/completions"),
                body.clone(),
            );
            tokio::spawn(async move {
                let v: Value = c
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                // Each request's prompt token counts too: the direct batch also counts its first token.
                v["usage"]["completion_tokens"].as_u64().unwrap()
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let wall = t0.elapsed().as_secs_f64();
    json!({"tokens": total, "seconds": wall, "tokens_per_s": total as f64 / wall})
}

fn run_ours(rt: &tokio::runtime::Runtime) -> Value {
    // The binary cargo built for this bench (same profile), unless one is named.
    let bin = std::env::var("MODELFLEET_RUNTIME_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_modelfleet-runtime").to_string());
    let model = std::env::var("MODELFLEET_MODEL_PATH").unwrap();
    let threads: u32 = env_or("BENCH_THREADS", 2);
    let new_tokens: u32 = env_or("BENCH_NEW_TOKENS", 128);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = std::env::temp_dir().join(format!("mf-bench-{}", std::process::id()));
    let start = Instant::now();
    let mut child = Command::new(bin)
        .args([
            "serve",
            "--model-uri",
            &model,
            "--served-name",
            "bench",
            "--host",
            "127.0.0.1",
        ])
        .args([
            "--port",
            &port.to_string(),
            "--threads",
            &threads.to_string(),
        ])
        .args([
            "--context-length",
            &CONTEXT.to_string(),
            "--max-concurrency",
            &MAX_CONCURRENCY.to_string(),
        ])
        .arg("--cache-dir")
        .arg(&dir)
        .arg("--termination-message-path")
        .arg(dir.join("termination-log"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let result = rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(16).build().unwrap();
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status() == 200
            {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "runtime exited");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let load_s = start.elapsed().as_secs_f64();
        let (prompt_tok_s, decode_tok_s, generated, prompt_tokens) = streamed(&client, &base, new_tokens).await;
        let mut batch = serde_json::Map::new();
        for n in CLIENTS {
            batch.insert(n.to_string(), concurrent(&client, &base, n, new_tokens).await);
        }
        json!({"load_s": load_s, "prompt_tokens": prompt_tokens, "prompt_tok_s": prompt_tok_s, "generated": generated,
               "decode_tok_s": decode_tok_s, "batch": batch})
    });
    let rss = peak_rss_kib(child.id());
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let mut result = result;
    result["peak_rss_kib"] = json!(rss);
    result
}

fn stats(values: &[f64]) -> Value {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    json!({"median": median, "min": v[0], "max": v[v.len() - 1]})
}

fn pick(runs: &[Value], path: &[&str]) -> Vec<f64> {
    runs.iter()
        .map(|r| {
            let mut v = r;
            for p in path {
                v = &v[*p];
            }
            v.as_f64().unwrap()
        })
        .collect()
}

fn orchestrate() {
    let runs: usize = env_or("BENCH_RUNS", 5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut direct, mut ours) = (Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternate which side goes first so drift (thermal, page cache) hits both alike.
        if i % 2 == 0 {
            direct.push(run_direct());
            ours.push(run_ours(&rt));
        } else {
            ours.push(run_ours(&rt));
            direct.push(run_direct());
        }
        eprintln!(
            "run {}/{runs}: direct {} | ours {}",
            i + 1,
            direct[i],
            ours[i]
        );
    }
    let metrics: Vec<(&str, Vec<&str>)> = vec![
        ("load_s", vec!["load_s"]),
        ("prompt_tok_s", vec!["prompt_tok_s"]),
        ("decode_tok_s", vec!["decode_tok_s"]),
        ("peak_rss_mib", vec!["peak_rss_kib"]),
        ("batch1_tok_s", vec!["batch", "1", "tokens_per_s"]),
        ("batch4_tok_s", vec!["batch", "4", "tokens_per_s"]),
        ("batch8_tok_s", vec!["batch", "8", "tokens_per_s"]),
    ];
    let mut summary = serde_json::Map::new();
    println!(
        "\nSmolLM2-135M-Instruct Q4_1, {} threads, {} prompt tokens, {} new tokens, {runs} interleaved runs (median [min-max])",
        env_or("BENCH_THREADS", 2u32),
        direct[0]["prompt_tokens"],
        env_or("BENCH_NEW_TOKENS", 128u32)
    );
    println!(
        "{:<16} {:>28} {:>28} {:>8}",
        "metric", "llama.cpp direct", "modelfleet (HTTP)", "ratio"
    );
    for (name, path) in &metrics {
        let scale = if *name == "peak_rss_mib" {
            1.0 / 1024.0
        } else {
            1.0
        };
        let d: Vec<f64> = pick(&direct, path).iter().map(|v| v * scale).collect();
        let o: Vec<f64> = pick(&ours, path).iter().map(|v| v * scale).collect();
        let (ds, os) = (stats(&d), stats(&o));
        let ratio = os["median"].as_f64().unwrap() / ds["median"].as_f64().unwrap();
        let fmt = |s: &Value| {
            format!(
                "{:.2} [{:.2}-{:.2}]",
                s["median"].as_f64().unwrap(),
                s["min"].as_f64().unwrap(),
                s["max"].as_f64().unwrap()
            )
        };
        println!("{name:<16} {:>28} {:>28} {ratio:>8.3}", fmt(&ds), fmt(&os));
        summary.insert(
            name.to_string(),
            json!({"direct": ds, "ours": os, "ratio": ratio}),
        );
    }
    let ratio = |k: &str| summary[k]["ratio"].clone();
    let report = json!({
        "decode_ratio": ratio("decode_tok_s"),
        "prompt_ratio": ratio("prompt_tok_s"),
        "batch4_ratio": ratio("batch4_tok_s"),
        "batch1_ratio": ratio("batch1_tok_s"),
        "batch8_ratio": ratio("batch8_tok_s"),
        "load_ratio": ratio("load_s"),
        "rss_ratio": ratio("peak_rss_mib"),
        "summary": summary,
        "config": {"threads": env_or("BENCH_THREADS", 2u32), "new_tokens": env_or("BENCH_NEW_TOKENS", 128u32),
                   "runs": runs, "context_length": CONTEXT, "server_max_concurrency": MAX_CONCURRENCY,
                   "model": std::env::var("MODELFLEET_MODEL_PATH").unwrap_or_default()},
        "runs": {"direct": direct, "ours": ours},
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runtime.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("\nwrote {}", path.display());
}
