//! HTTP API tests against the deterministic fake engine: shapes, validation, errors, streaming,
//! overload, readiness and drain. Fast, no model needed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use modelfleet_runtime::api::{AppState, router};
use modelfleet_runtime::engine::fake::FakeEngine;
use modelfleet_runtime::metrics::Metrics;
use serde_json::{Value, json};

struct Server {
    base: String,
    state: Arc<AppState>,
    client: reqwest::Client,
}

/// Serves the router with a fake engine: context 64 tokens.
async fn server(max_concurrency: usize, max_queue: usize, delay_ms: u64, ready: bool) -> Server {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AppState::new("fake".into(), metrics.clone()));
    if ready {
        let engine = FakeEngine::new(
            64,
            max_concurrency,
            max_queue,
            Duration::from_millis(delay_ms),
            metrics,
        );
        state.set_ready(Arc::new(engine));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = router(state.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Server {
        base: format!("http://{addr}"),
        state,
        client: reqwest::Client::new(),
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        self.post_raw(path, body.to_string()).await
    }

    async fn post_raw(&self, path: &str, body: String) -> (u16, Value, reqwest::header::HeaderMap) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v, headers)
    }

    /// Sends a streaming request and returns the `data:` payloads.
    async fn stream(&self, path: &str, body: Value) -> Vec<String> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream"),
            "{:?}",
            r.headers()
        );
        let text = r.text().await.unwrap();
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(str::to_string)
            .collect()
    }
}

fn error_of(v: &Value) -> (&str, &str) {
    (
        v["error"]["type"].as_str().unwrap_or_default(),
        v["error"]["message"].as_str().unwrap_or_default(),
    )
}

#[tokio::test]
async fn lists_the_model() {
    let s = server(2, 4, 0, true).await;
    let v: Value = s
        .client
        .get(format!("{}/v1/models", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "fake");
    assert_eq!(v["data"][0]["object"], "model");
}

#[tokio::test]
async fn completes_deterministically_with_usage_and_length() {
    let s = server(2, 4, 0, true).await;
    let body = json!({"model": "fake", "prompt": "a b c", "max_tokens": 5, "temperature": 0});
    let (status, v, headers) = s.post("/v1/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], " the quick brown fox jumps");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
    );
    let (_, again, _) = s.post("/v1/completions", body).await;
    assert_eq!(again["choices"], v["choices"]);
}

#[tokio::test]
async fn default_max_tokens_is_16() {
    let s = server(2, 4, 0, true).await;
    let (status, v, _) = s
        .post(
            "/v1/completions",
            json!({"model": "fake", "prompt": "x", "temperature": 0}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(v["usage"]["completion_tokens"], 16);
}

#[tokio::test]
async fn stop_strings_end_the_text_and_are_not_returned() {
    let s = server(2, 4, 0, true).await;
    let (status, v, _) = s
        .post(
            "/v1/completions",
            json!({"model": "fake", "prompt": "x", "max_tokens": 20, "temperature": 0, "stop": [" fox", "zzz"]}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"], " the quick brown");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn chat_and_streaming_match() {
    let s = server(2, 4, 0, true).await;
    let body = json!({"model": "fake", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 7, "temperature": 0});
    let (status, v, _) = s.post("/v1/chat/completions", body.clone()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let full = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(full, " the quick brown fox jumps over the");

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let events = s.stream("/v1/chat/completions", sbody).await;
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, full);
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0).map(|c| &c["finish_reason"]))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("length")]);
    assert_eq!(chunks.last().unwrap()["usage"]["completion_tokens"], 7);
}

#[tokio::test]
async fn completion_streaming_matches() {
    let s = server(2, 4, 0, true).await;
    let body =
        json!({"model": "fake", "prompt": "x", "max_tokens": 9, "temperature": 0, "stop": "lazy"});
    let (_, v, _) = s.post("/v1/completions", body.clone()).await;
    let mut sbody = body;
    sbody["stream"] = json!(true);
    let events = s.stream("/v1/completions", sbody).await;
    let streamed: String = events
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(streamed, v["choices"][0]["text"].as_str().unwrap());
    assert_eq!(streamed, " the quick brown fox jumps over the ");
}

#[tokio::test]
async fn bad_inputs_are_refused_with_field_and_limit() {
    let s = server(2, 4, 0, true).await;
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!({"model": "fake", "prompt": "x", "bogus": 1}),
            400,
            "invalid_request_error",
            "unknown field `bogus`",
        ),
        (
            json!({"model": "fake", "prompt": "x", "temperature": 2.5}),
            400,
            "invalid_request_error",
            "temperature: must be between 0 and 2, got 2.5",
        ),
        (
            json!({"model": "fake", "prompt": "x", "top_p": 0}),
            400,
            "invalid_request_error",
            "top_p: must be greater than 0 and at most 1",
        ),
        (
            json!({"model": "fake", "prompt": "x", "max_tokens": 0}),
            400,
            "invalid_request_error",
            "max_tokens: must be between 1 and 64",
        ),
        (
            json!({"model": "fake", "prompt": "x", "max_tokens": 100000}),
            400,
            "invalid_request_error",
            "max_tokens: must be between 1 and 64",
        ),
        (
            json!({"model": "fake", "prompt": "x", "n": 2}),
            400,
            "invalid_request_error",
            "n: only 1 is supported",
        ),
        (
            json!({"model": "fake", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
            400,
            "invalid_request_error",
            "stop: at most 4 sequences, got 5",
        ),
        (
            json!({"model": "fake", "prompt": ""}),
            400,
            "invalid_request_error",
            "prompt: must not be empty",
        ),
        (
            json!({"model": "fake", "prompt": "x", "max_tokens": "ten"}),
            400,
            "invalid_request_error",
            "invalid type: string \"ten\"",
        ),
        (
            json!({"model": "other", "prompt": "x"}),
            404,
            "model_not_found",
            "the model \"other\" does not exist",
        ),
        (
            json!({"prompt": "x"}),
            400,
            "invalid_request_error",
            "missing field `model`",
        ),
        (
            json!({"model": "fake", "prompt": "x ".repeat(64)}),
            400,
            "context_length_exceeded",
            "prompt: the prompt is 64 tokens but the context length is 64 tokens",
        ),
        (
            json!({"model": "fake", "prompt": "x ".repeat(60), "max_tokens": 10}),
            400,
            "context_length_exceeded",
            "max_tokens: the prompt (60 tokens) plus 10 tokens exceeds the context length of 64 tokens; at most 4 can be generated",
        ),
    ];
    for (body, status, kind, message) in cases {
        let (got, v, _) = s.post("/v1/completions", body.clone()).await;
        assert_eq!(got, status, "{body} -> {v}");
        let (k, m) = error_of(&v);
        assert_eq!(k, kind, "{body} -> {v}");
        assert!(
            m.contains(message),
            "{body}: {m:?} does not contain {message:?}"
        );
    }
    let (got, v, _) = s.post_raw("/v1/completions", "{\"model\": ".into()).await;
    assert_eq!(got, 400);
    assert!(
        error_of(&v).1.starts_with("the body is not valid JSON"),
        "{v}"
    );

    let chat_cases: Vec<(Value, &str)> = vec![
        (
            json!({"model": "fake", "messages": []}),
            "messages: must hold at least one message",
        ),
        (
            json!({"model": "fake", "messages": [{"role": "robot", "content": "x"}]}),
            "unknown variant `robot`",
        ),
        (
            json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -1}),
            "max_completion_tokens: must be between 1 and 64",
        ),
        (
            json!({"model": "fake", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": true}}),
            "stream_options: only allowed when stream is true",
        ),
    ];
    for (body, message) in chat_cases {
        let (got, v, _) = s.post("/v1/chat/completions", body.clone()).await;
        assert_eq!(got, 400, "{body} -> {v}");
        assert!(error_of(&v).1.contains(message), "{body}: {v}");
    }
}

#[tokio::test]
async fn overload_answers_429_with_retry_after() {
    // One slot, one queue place, 50 ms per token: the third concurrent request must be refused.
    let s = Arc::new(server(1, 1, 50, true).await);
    let body = json!({"model": "fake", "prompt": "x", "max_tokens": 10});
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let s = s.clone();
        let b = body.clone();
        tasks.push(tokio::spawn(
            async move { s.post("/v1/completions", b).await.0 },
        ));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, v, headers) = s.post("/v1/completions", body.clone()).await;
    assert_eq!(status, 429, "{v}");
    assert_eq!(error_of(&v).0, "overloaded");
    assert_eq!(headers["retry-after"], "1");
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    // Once the queue has emptied, requests are accepted again.
    assert_eq!(s.post("/v1/completions", body).await.0, 200);
    let metrics = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("modelfleet_runtime_requests_rejected_total{reason=\"overloaded\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn not_ready_until_an_engine_is_set() {
    let s = server(1, 1, 0, false).await;
    let r = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let r = s
        .client
        .get(format!("{}/livez", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, v, headers) = s
        .post("/v1/completions", json!({"model": "fake", "prompt": "x"}))
        .await;
    assert_eq!(status, 503);
    assert_eq!(error_of(&v), ("unavailable", "the model is still loading"));
    assert!(headers.contains_key("retry-after"));
}

#[tokio::test]
async fn drain_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let s = Arc::new(server(2, 2, 30, true).await);
    let body =
        json!({"model": "fake", "prompt": "x", "max_tokens": 10, "temperature": 0, "stream": true});
    // A streaming request in flight when the drain starts.
    let r = s
        .client
        .post(format!("{}/v1/completions", s.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    let mut bytes = r.bytes_stream();
    let first = bytes.next().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: "));
    assert_eq!(s.state.in_flight(), 1);

    s.state.start_draining();
    let ready = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let (status, v, _) = s
        .post("/v1/completions", json!({"model": "fake", "prompt": "x"}))
        .await;
    assert_eq!(status, 503);
    assert_eq!(error_of(&v).1, "the server is shutting down");

    let waiter = {
        let s = s.clone();
        tokio::spawn(async move { s.state.wait_idle(Duration::from_secs(5)).await })
    };
    let mut rest = String::from_utf8_lossy(&first).into_owned();
    while let Some(chunk) = bytes.next().await {
        rest.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    assert!(rest.contains("\"finish_reason\":\"length\""), "{rest}");
    assert!(
        waiter.await.unwrap(),
        "wait_idle must see the request finish"
    );
}

#[tokio::test]
async fn metrics_are_exported_with_bounded_labels() {
    let s = server(2, 4, 0, true).await;
    s.post(
        "/v1/completions",
        json!({"model": "fake", "prompt": "a b", "max_tokens": 3}),
    )
    .await;
    s.client
        .get(format!("{}/no/such/route", s.base))
        .send()
        .await
        .unwrap();
    let text = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "modelfleet_runtime_request_duration_seconds_count{route=\"/v1/completions\",status=\"200\"} 1",
        "modelfleet_runtime_request_duration_seconds_count{route=\"unmatched\",status=\"404\"} 1",
        "modelfleet_runtime_time_to_first_token_seconds_count 1",
        "modelfleet_runtime_inter_token_latency_seconds_count 2",
        "modelfleet_runtime_prompt_tokens_total 2",
        "modelfleet_runtime_generated_tokens_total 3",
        "modelfleet_runtime_requests_in_flight 0",
        "modelfleet_runtime_requests_queued 0",
        "modelfleet_runtime_weight_bytes_total",
        "modelfleet_runtime_ready 1",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
}
