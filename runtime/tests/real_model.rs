//! End-to-end tests of the binary with the real SmolLM2-135M-Instruct Q4_1 weights (`make model`).
//!
//! Skipped when the model is missing unless `MODELFLEET_REQUIRE_MODEL=1` (as `make test-runtime`
//! sets). One process serves all API checks to keep the suite fast on two cores; the drain test
//! has its own process because it ends it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Runtime, model_path};
use serde_json::{Value, json};

const SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const MODEL: &str = "smollm2";

/// The two tests run one at a time: each runtime uses both cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn post(client: &reqwest::Client, base: &str, path: &str, body: &Value) -> (u16, Value) {
    let r = client
        .post(format!("{base}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn stream_text(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: &Value,
) -> (String, String) {
    let mut body = body.clone();
    body["stream"] = json!(true);
    let r = client
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut out = String::new();
    let mut finish = String::new();
    for data in text.lines().filter_map(|l| l.strip_prefix("data: ")) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(data).unwrap();
        let c = &v["choices"][0];
        if let Some(t) = c["text"]
            .as_str()
            .or_else(|| c["delta"]["content"].as_str())
        {
            out.push_str(t);
        }
        if let Some(f) = c["finish_reason"].as_str() {
            finish = f.to_string();
        }
    }
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    (out, finish)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_real_model() {
    let Some(model) = model_path() else { return };
    let _serial = SERIAL.lock().await;
    let mut rt = Runtime::spawn(
        &format!("file://{}", model.display()),
        &[
            "--sha256",
            SHA256,
            "--quantization",
            "Q4_1",
            "--served-name",
            MODEL,
            "--threads",
            "2",
            "--context-length",
            "512",
            "--max-concurrency",
            "4",
        ],
    );
    rt.wait_ready(Duration::from_secs(120)).await;
    let c = reqwest::Client::new();
    let base = rt.base.clone();

    // Greedy completion: deterministic and coherent English.
    let body = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 12, "temperature": 0});
    let (status, v) = post(&c, &base, "/v1/completions", &body).await;
    assert_eq!(status, 200, "{v}");
    let text = v["choices"][0]["text"].as_str().unwrap().to_string();
    eprintln!("completion: {text:?}");
    assert!(text.contains("Paris"), "{text:?}");
    assert_eq!(v["usage"]["completion_tokens"], 12);
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let (_, again) = post(&c, &base, "/v1/completions", &body).await;
    assert_eq!(
        again["choices"][0]["text"], v["choices"][0]["text"],
        "greedy must be deterministic"
    );

    // Streaming delivers the same text as non-streaming.
    let (streamed, finish) = stream_text(&c, &base, "/v1/completions", &body).await;
    assert_eq!(streamed, text);
    assert_eq!(finish, "length");

    // Continuous batching: concurrent greedy requests give the single-request answer.
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, base, body) = (c.clone(), base.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            post(&c, &base, "/v1/completions", &body).await
        }));
    }
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            v["choices"][0]["text"],
            text.as_str(),
            "batched output differs"
        );
    }

    // Chat with the model's template.
    let chat = json!({"model": MODEL, "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France? Answer in one sentence."}
    ], "max_tokens": 40, "temperature": 0});
    let (status, v) = post(&c, &base, "/v1/chat/completions", &chat).await;
    assert_eq!(status, 200, "{v}");
    let answer = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    eprintln!("chat: {answer:?}");
    assert!(answer.contains("Paris"), "{answer:?}");
    assert!(
        !answer.contains("<|im_end|>") && !answer.contains("<|im_start|>"),
        "{answer:?}"
    );
    let (streamed, _) = stream_text(&c, &base, "/v1/chat/completions", &chat).await;
    assert_eq!(streamed, answer);

    // max_tokens holds.
    let (_, v) = post(
        &c,
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "Once upon a time", "max_tokens": 3, "temperature": 0}),
    )
    .await;
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // stop holds: stop at the first word of the greedy answer after " Paris".
    let long = json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 30, "temperature": 0});
    let (_, full) = post(&c, &base, "/v1/completions", &long).await;
    let full = full["choices"][0]["text"].as_str().unwrap().to_string();
    let cut = full.find("Paris").unwrap();
    let mut stopped = long.clone();
    stopped["stop"] = json!(["Paris"]);
    let (_, v) = post(&c, &base, "/v1/completions", &stopped).await;
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), &full[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (streamed, finish) = stream_text(&c, &base, "/v1/completions", &stopped).await;
    assert_eq!(streamed, &full[..cut]);
    assert_eq!(finish, "stop");

    // Seeded sampling repeats; too-long prompts are refused with the limit.
    let seeded = json!({"model": MODEL, "prompt": "My favourite food is", "max_tokens": 10, "temperature": 0.9, "seed": 42});
    let (_, a) = post(&c, &base, "/v1/completions", &seeded).await;
    let (_, b) = post(&c, &base, "/v1/completions", &seeded).await;
    assert_eq!(a["choices"][0]["text"], b["choices"][0]["text"]);
    let (status, v) = post(
        &c,
        &base,
        "/v1/completions",
        &json!({"model": MODEL, "prompt": "word ".repeat(600)}),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["type"], "context_length_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the context length is 512 tokens"),
        "{v}"
    );

    let metrics = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("{name} missing in\n{metrics}"))
            .to_string()
    };
    let total = value("modelfleet_runtime_weight_bytes_total");
    assert_eq!(value("modelfleet_runtime_weight_bytes_loaded"), total);
    assert_eq!(total, std::fs::metadata(&model).unwrap().len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let Some(model) = model_path() else { return };
    let _serial = SERIAL.lock().await;
    let mut rt = Runtime::spawn(
        &model.display().to_string(),
        &[
            "--served-name",
            MODEL,
            "--threads",
            "2",
            "--context-length",
            "512",
            "--grace-period",
            "60s",
        ],
    );
    rt.wait_ready(Duration::from_secs(120)).await;
    let c = reqwest::Client::new();
    let base = rt.base.clone();
    let body = json!({"model": MODEL, "prompt": "Once upon a time, in a land far away, there lived a dragon who", "max_tokens": 100, "temperature": 0});
    let in_flight = {
        let (c, base, body) = (c.clone(), base.clone(), body.clone());
        tokio::spawn(async move { post(&c, &base, "/v1/completions", &body).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    rt.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = c.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "readyz must turn false at once");
    let (status, v) = post(&c, &base, "/v1/completions", &body).await;
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["message"], "the server is shutting down");

    let (status, v) = in_flight.await.unwrap();
    assert_eq!(status, 200, "{v}");
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "the in-flight request must complete: {v}"
    );
    let exit = tokio::task::spawn_blocking(move || {
        let s = rt.wait_exit(Duration::from_secs(30));
        (s, rt.stderr())
    })
    .await
    .unwrap();
    assert!(exit.0.success(), "exit {:?}\n{}", exit.0, exit.1);
    assert!(exit.1.contains("drained"), "{}", exit.1);
}
