//! The engine trait the HTTP layer talks to, and the types that cross it.
//!
//! An engine tokenizes, renders chat prompts and runs generations; `submit` hands back a channel of
//! events so the HTTP layer can stream. Admission control (the concurrency and queue bounds) is
//! shared by every engine through [`Admission`], so the 429 behaviour is the same for the fake
//! engine the HTTP tests use and for llama.cpp.

pub mod fake;
pub mod llama;
pub mod text;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::sync::mpsc;

use crate::metrics::Metrics;

/// A token id in the model's vocabulary.
pub type TokenId = i32;

/// How the next token is chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// 0 means greedy.
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u32,
}

/// A validated generation request.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub request_id: String,
    pub prompt_tokens: Vec<TokenId>,
    pub max_tokens: u32,
    pub sampling: Sampling,
    /// Generation stops before the first occurrence of any of these; it is not returned.
    pub stop: Vec<String>,
    /// Send text as it is generated; otherwise one `Text` event comes right before `Done`, which
    /// spares a wake-up of the HTTP task per token (it competes with the decode threads for CPU).
    pub stream: bool,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context length was reached.
    Length,
}

impl FinishReason {
    /// The OpenAI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Length => "length",
        }
    }
}

/// What an engine sends back for one request.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Text of one or more new tokens (never empty); `tokens` is how many tokens it covers.
    Text { text: String, tokens: u32 },
    /// The generation ended normally.
    Done {
        reason: FinishReason,
        prompt_tokens: u32,
        completion_tokens: u32,
    },
    /// The generation failed; the detail is for the log, not for the client.
    Failed(String),
}

/// A chat message after validation.
#[derive(Debug, Clone)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

/// Why the engine could not do something.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("server overloaded: {outstanding} requests running or queued")]
    Overloaded { outstanding: usize },
    #[error("engine stopped")]
    Stopped,
    #[error("failed to apply the chat template: {0}")]
    ChatTemplate(String),
    #[error("failed to load the model: {0}")]
    Load(String),
    #[error("failed to create the inference context: {0}")]
    Context(String),
}

impl EngineError {
    /// A bounded label for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Overloaded { .. } => "overloaded",
            Self::Stopped => "stopped",
            Self::ChatTemplate(_) => "chat_template",
            Self::Load(_) => "load",
            Self::Context(_) => "context",
        }
    }
}

/// An inference engine.
pub trait Engine: Send + Sync + fmt::Debug {
    /// Tokens of context available to one request (prompt plus completion).
    fn context_length(&self) -> u32;
    /// Tokenizes `text`; `special` parses control tokens such as `<|im_start|>` (for chat prompts).
    fn tokenize(&self, text: &str, special: bool) -> Vec<TokenId>;
    /// Renders `messages` with the model's chat template, ending with the assistant's turn.
    fn chat_prompt(&self, messages: &[ChatTurn]) -> Result<String, EngineError>;
    /// Queues a generation; fails with [`EngineError::Overloaded`] beyond the queue bound.
    /// Dropping the receiver cancels the generation.
    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, EngineError>;
}

/// Where one request's events go; shared by the engines so streaming and buffering behave alike.
#[derive(Debug)]
pub struct Output {
    tx: mpsc::UnboundedSender<Event>,
    stream: bool,
    buffered: String,
    buffered_tokens: u32,
    submitted: Instant,
    last_token: Option<Instant>,
}

impl Output {
    pub fn new(tx: mpsc::UnboundedSender<Event>, stream: bool, submitted: Instant) -> Self {
        Self {
            tx,
            stream,
            buffered: String::new(),
            buffered_tokens: 0,
            submitted,
            last_token: None,
        }
    }

    /// The client went away.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    /// Records one generated token in the time-to-first-token or inter-token histogram.
    pub fn token_generated(&mut self, metrics: &Metrics) {
        let now = Instant::now();
        match self.last_token {
            None => metrics
                .time_to_first_token
                .observe(now.duration_since(self.submitted).as_secs_f64()),
            Some(prev) => metrics
                .inter_token_latency
                .observe(now.duration_since(prev).as_secs_f64()),
        }
        self.last_token = Some(now);
    }

    /// Sends (or buffers) text; returns false when the receiver is gone.
    pub fn text(&mut self, text: String, tokens: u32) -> bool {
        if text.is_empty() {
            return !self.tx.is_closed();
        }
        if self.stream {
            self.tx.send(Event::Text { text, tokens }).is_ok()
        } else {
            self.buffered.push_str(&text);
            self.buffered_tokens += tokens;
            !self.tx.is_closed()
        }
    }

    /// Sends buffered text, then `Done`.
    pub fn done(&mut self, reason: FinishReason, prompt_tokens: u32, completion_tokens: u32) {
        if !self.buffered.is_empty() {
            let text = std::mem::take(&mut self.buffered);
            let _ = self.tx.send(Event::Text {
                text,
                tokens: self.buffered_tokens,
            });
        }
        let _ = self.tx.send(Event::Done {
            reason,
            prompt_tokens,
            completion_tokens,
        });
    }

    /// Reports a failure (detail for the log).
    pub fn failed(&self, detail: String) {
        let _ = self.tx.send(Event::Failed(detail));
    }
}

/// Counts requests admitted to an engine and enforces `max_concurrency + max_queue`.
#[derive(Debug)]
pub struct Admission {
    outstanding: AtomicUsize,
    active: AtomicUsize,
    max_concurrency: usize,
    limit: usize,
    metrics: Arc<Metrics>,
}

impl Admission {
    pub fn new(max_concurrency: usize, max_queue: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            outstanding: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            max_concurrency,
            limit: max_concurrency + max_queue,
            metrics,
        }
    }

    /// The metrics the engine reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Slots decoded together.
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// Takes a place in the queue, or refuses when the bound is reached.
    pub fn enter(&self) -> Result<(), EngineError> {
        self.outstanding
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map_err(|outstanding| EngineError::Overloaded { outstanding })?;
        self.publish();
        Ok(())
    }

    /// A queued request started decoding.
    pub fn started(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.publish();
    }

    /// A request left: `was_active` tells whether it had started decoding.
    pub fn finished(&self, was_active: bool) {
        if was_active {
            self.active.fetch_sub(1, Ordering::AcqRel);
        }
        self.outstanding.fetch_sub(1, Ordering::AcqRel);
        self.publish();
    }

    fn publish(&self) {
        let active = self.active.load(Ordering::Acquire);
        let outstanding = self.outstanding.load(Ordering::Acquire);
        self.metrics
            .requests_in_flight
            .set(i64::try_from(active).unwrap_or(i64::MAX));
        self.metrics
            .requests_queued
            .set(i64::try_from(outstanding.saturating_sub(active)).unwrap_or(i64::MAX));
    }
}
