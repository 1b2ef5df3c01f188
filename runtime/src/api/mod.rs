//! The HTTP server: OpenAI-compatible routes, probes, metrics, and the drain state.
//!
//! Every request runs in a span with its route and request id. Generation requests hold an
//! [`InFlight`] guard for as long as they run (for streams: until the last event is sent), which is
//! what the SIGTERM drain waits for.

pub mod error;
pub mod types;
pub mod validation;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::engine::{Engine, Event, FinishReason};
use crate::metrics::{Metrics, ReasonLabels, RouteLabels};
use error::ApiError;
use types::{ChatRequest, CompletionRequest, ModelCard, ModelList, Usage};

/// Largest request body accepted; a 4096-token prompt is ~20 KB, chat histories more.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// State shared by the handlers.
#[derive(Debug)]
pub struct AppState {
    /// Set once the model is loaded and warmed up.
    pub engine: OnceLock<Arc<dyn Engine>>,
    pub served_name: String,
    pub metrics: Arc<Metrics>,
    /// Unix time the model was loaded (`created` in `/v1/models`).
    pub created: AtomicU64,
    ready: AtomicBool,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    next_id: AtomicU64,
}

impl AppState {
    pub fn new(served_name: String, metrics: Arc<Metrics>) -> Self {
        Self {
            engine: OnceLock::new(),
            served_name,
            metrics,
            created: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Installs the engine and turns `/readyz` true.
    pub fn set_ready(&self, engine: Arc<dyn Engine>) {
        let _ = self.engine.set(engine);
        let now = chrono::Utc::now().timestamp();
        self.created
            .store(u64::try_from(now).unwrap_or(0), Ordering::Release);
        if !self.draining.load(Ordering::Acquire) {
            self.ready.store(true, Ordering::Release);
            self.metrics.ready.set(1);
        }
    }

    /// Turns `/readyz` false and refuses new generations; returns at once.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.ready.store(false, Ordering::Release);
        self.metrics.ready.set(0);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Generation requests still running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Waits until no generation request runs, or `timeout` passes; returns whether it emptied.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    fn request_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{n}", std::process::id())
    }

    /// The engine, or why a generation cannot start now.
    fn engine_for_generation(&self) -> Result<Arc<dyn Engine>, ApiError> {
        if self.draining.load(Ordering::Acquire) {
            self.reject("draining");
            return Err(ApiError::Unavailable("the server is shutting down"));
        }
        match self.engine.get() {
            Some(e) if self.is_ready() => Ok(e.clone()),
            _ => {
                self.reject("not_ready");
                Err(ApiError::Unavailable("the model is still loading"))
            }
        }
    }

    fn reject(&self, reason: &'static str) {
        self.metrics
            .requests_rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
}

/// Held while a generation request runs.
#[derive(Debug)]
struct InFlight(Arc<AppState>);

impl InFlight {
    fn new(state: &Arc<AppState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// The request id, set by the middleware.
#[derive(Debug, Clone)]
struct RequestId(String);

/// Marks a streamed response: its duration is recorded when the stream ends, not here.
#[derive(Debug, Clone, Copy)]
struct Streamed;

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Assigns the request id, opens the span and records the duration.
async fn observe(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    // A caller-supplied id is kept if it is short and plain, so it can be followed across services.
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map_or_else(|| state.request_id(), str::to_string);
    req.extensions_mut().insert(RequestId(id.clone()));
    let span =
        tracing::info_span!("request", method = %req.method(), route = %route, request_id = %id);
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16();
    if resp.extensions().get::<Streamed>().is_none() {
        state
            .metrics
            .request_duration
            .get_or_create(&RouteLabels {
                route: route.clone(),
                status,
            })
            .observe(start.elapsed().as_secs_f64());
        span.in_scope(|| {
            tracing::debug!(
                status,
                elapsed_ms = start.elapsed().as_millis() as u64,
                "request done"
            )
        });
    }
    resp
}

async fn livez() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    if state.is_ready() {
        "ok".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match state.metrics.encode() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(e) => ApiError::Internal(format!("failed to encode metrics: {e}")).into_response(),
    }
}

async fn models(State(state): State<Arc<AppState>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: state.served_name.clone(),
            object: "model",
            created: i64::try_from(state.created.load(Ordering::Acquire)).unwrap_or(0),
            owned_by: "modelfleet",
        }],
    })
}

/// Parses a JSON body, turning serde's message (which names the field) into a 400.
fn parse_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let message = if e.is_syntax() || e.is_eof() {
            format!("the body is not valid JSON: {e}")
        } else {
            format!("the body does not match the request schema: {e}")
        };
        ApiError::Invalid {
            param: None,
            message,
        }
    })
}

/// Which endpoint a generation answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

impl Kind {
    fn route(self) -> &'static str {
        match self {
            Self::Completion => "/v1/completions",
            Self::Chat => "/v1/chat/completions",
        }
    }
}

async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(id)): Extension<RequestId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let guard = InFlight::new(&state);
    let engine = state.engine_for_generation()?;
    let raw: CompletionRequest = parse_json(&body)?;
    let v = validation::completion(&raw, &state.served_name, engine.as_ref(), id.clone())
        .inspect_err(|_| state.reject("invalid"))?;
    generate(state, engine, guard, v, Kind::Completion, id).await
}

async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(RequestId(id)): Extension<RequestId>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let guard = InFlight::new(&state);
    let engine = state.engine_for_generation()?;
    let raw: ChatRequest = parse_json(&body)?;
    let v = validation::chat(&raw, &state.served_name, engine.as_ref(), id.clone())
        .inspect_err(|_| state.reject("invalid"))?;
    generate(state, engine, guard, v, Kind::Chat, id).await
}

/// When the request started (for the duration of streamed responses); token timing is recorded
/// by the engine, which sees each token as it is sampled.
#[derive(Debug)]
struct Timing {
    start: Instant,
}

async fn generate(
    state: Arc<AppState>,
    engine: Arc<dyn Engine>,
    guard: InFlight,
    v: validation::Validated,
    kind: Kind,
    id: String,
) -> Result<Response, ApiError> {
    let timing = Timing {
        start: Instant::now(),
    };
    let rx = engine.submit(v.generate).map_err(|e| {
        if matches!(e, crate::engine::EngineError::Overloaded { .. }) {
            state.reject("overloaded");
        }
        ApiError::from(e)
    })?;
    let prefix = match kind {
        Kind::Completion => "cmpl",
        Kind::Chat => "chatcmpl",
    };
    let ctx = Reply {
        id: format!("{prefix}-{id}"),
        created: chrono::Utc::now().timestamp(),
        model: state.served_name.clone(),
        kind,
    };
    if v.stream {
        Ok(stream(state, rx, guard, timing, ctx, v.include_usage))
    } else {
        collect(state, rx, guard, timing, ctx).await
    }
}

/// What every response object repeats.
#[derive(Debug, Clone)]
struct Reply {
    id: String,
    created: i64,
    model: String,
    kind: Kind,
}

impl Reply {
    fn full(&self, text: &str, reason: FinishReason, usage: Usage) -> serde_json::Value {
        match self.kind {
            Kind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text, "finish_reason": reason.as_str(), "logprobs": null}],
                "usage": usage,
            }),
            Kind::Chat => json!({
                "id": self.id, "object": "chat.completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": reason.as_str(), "logprobs": null}],
                "usage": usage,
            }),
        }
    }

    fn chunk(
        &self,
        text: Option<&str>,
        first: bool,
        reason: Option<FinishReason>,
    ) -> serde_json::Value {
        let reason = reason.map(FinishReason::as_str);
        match self.kind {
            Kind::Completion => json!({
                "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
                "choices": [{"index": 0, "text": text.unwrap_or(""), "finish_reason": reason, "logprobs": null}],
            }),
            Kind::Chat => {
                let delta = match (first, text) {
                    (true, t) => json!({"role": "assistant", "content": t.unwrap_or("")}),
                    (false, Some(t)) => json!({"content": t}),
                    (false, None) => json!({}),
                };
                json!({
                    "id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": null}],
                })
            }
        }
    }

    fn usage_chunk(&self, usage: Usage) -> serde_json::Value {
        let object = match self.kind {
            Kind::Completion => "text_completion",
            Kind::Chat => "chat.completion.chunk",
        };
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
               "choices": [], "usage": usage})
    }
}

fn count_done(metrics: &Metrics, prompt_tokens: u32, completion_tokens: u32) {
    metrics.prompt_tokens.inc_by(u64::from(prompt_tokens));
    metrics
        .generated_tokens
        .inc_by(u64::from(completion_tokens));
}

async fn collect(
    state: Arc<AppState>,
    mut rx: mpsc::UnboundedReceiver<Event>,
    guard: InFlight,
    _timing: Timing,
    reply: Reply,
) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text { text: t, .. }) => text.push_str(&t),
            Some(Event::Done {
                reason,
                prompt_tokens,
                completion_tokens,
            }) => {
                count_done(&state.metrics, prompt_tokens, completion_tokens);
                drop(guard);
                let usage = Usage::new(prompt_tokens, completion_tokens);
                return Ok(Json(reply.full(&text, reason, usage)).into_response());
            }
            Some(Event::Failed(detail)) => return Err(ApiError::Internal(detail)),
            None => return Err(ApiError::Internal("the engine dropped the request".into())),
        }
    }
}

/// State of one SSE stream.
struct StreamState {
    state: Arc<AppState>,
    rx: mpsc::UnboundedReceiver<Event>,
    pending: VecDeque<SseEvent>,
    finished: bool,
    first: bool,
    timing: Timing,
    reply: Reply,
    include_usage: bool,
    span: tracing::Span,
    _guard: InFlight,
}

fn data(v: &serde_json::Value) -> SseEvent {
    SseEvent::default().data(v.to_string())
}

fn stream(
    state: Arc<AppState>,
    rx: mpsc::UnboundedReceiver<Event>,
    guard: InFlight,
    timing: Timing,
    reply: Reply,
    include_usage: bool,
) -> Response {
    let st = StreamState {
        state,
        rx,
        pending: VecDeque::new(),
        finished: false,
        first: true,
        timing,
        reply,
        include_usage,
        span: tracing::Span::current(),
        _guard: guard,
    };
    let events = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(ev), st));
            }
            if st.finished {
                let labels = RouteLabels {
                    route: st.reply.kind.route().to_string(),
                    status: 200,
                };
                st.state
                    .metrics
                    .request_duration
                    .get_or_create(&labels)
                    .observe(st.timing.start.elapsed().as_secs_f64());
                return None;
            }
            match st.rx.recv().await {
                Some(Event::Text { text, .. }) => {
                    let chunk = st.reply.chunk(Some(&text), st.first, None);
                    st.first = false;
                    st.pending.push_back(data(&chunk));
                }
                Some(Event::Done {
                    reason,
                    prompt_tokens,
                    completion_tokens,
                }) => {
                    count_done(&st.state.metrics, prompt_tokens, completion_tokens);
                    let chunk = st.reply.chunk(None, st.first, Some(reason));
                    st.pending.push_back(data(&chunk));
                    if st.include_usage {
                        let usage = st
                            .reply
                            .usage_chunk(Usage::new(prompt_tokens, completion_tokens));
                        st.pending.push_back(data(&usage));
                    }
                    st.pending.push_back(SseEvent::default().data("[DONE]"));
                    st.finished = true;
                }
                failure => {
                    let detail = match failure {
                        Some(Event::Failed(d)) => d,
                        _ => "the engine dropped the request".to_string(),
                    };
                    st.span.in_scope(
                        || tracing::error!(error = %detail, "generation failed mid-stream"),
                    );
                    st.pending
                        .push_back(data(&ApiError::Internal(String::new()).body()));
                    st.pending.push_back(SseEvent::default().data("[DONE]"));
                    st.finished = true;
                }
            }
        }
    });
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    resp.extensions_mut().insert(Streamed);
    resp
}
