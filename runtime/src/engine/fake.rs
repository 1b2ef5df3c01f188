//! A deterministic engine for HTTP tests: no model, words instead of tokens, a fixed output.
//!
//! It shares admission control and text assembly with the real engine, so queueing, 429s, stop
//! strings, streaming and drain can be tested in milliseconds. Each generated token is one word of
//! [`WORDS`] with a leading space, produced every `token_delay`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};

use super::text::TextAssembler;
use super::{
    Admission, ChatTurn, Engine, EngineError, Event, FinishReason, GenerateRequest, Output, TokenId,
};
use crate::metrics::Metrics;

/// The fake model's output, cycled.
pub const WORDS: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "and", "runs", "away",
];

/// The fake engine.
#[derive(Debug)]
pub struct FakeEngine {
    context_length: u32,
    token_delay: Duration,
    admission: Arc<Admission>,
    slots: Arc<Semaphore>,
}

impl FakeEngine {
    pub fn new(
        context_length: u32,
        max_concurrency: usize,
        max_queue: usize,
        token_delay: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            context_length,
            token_delay,
            admission: Arc::new(Admission::new(max_concurrency, max_queue, metrics)),
            slots: Arc::new(Semaphore::new(max_concurrency)),
        }
    }
}

impl Engine for FakeEngine {
    fn context_length(&self) -> u32 {
        self.context_length
    }

    fn tokenize(&self, text: &str, _special: bool) -> Vec<TokenId> {
        text.split_whitespace()
            .map(|w| {
                w.bytes()
                    .fold(0i32, |h, b| h.wrapping_mul(31).wrapping_add(i32::from(b)))
            })
            .collect()
    }

    fn chat_prompt(&self, messages: &[ChatTurn]) -> Result<String, EngineError> {
        let mut out = String::new();
        for m in messages {
            out.push_str(&format!("{}: {}\n", m.role, m.content));
        }
        out.push_str("assistant:");
        Ok(out)
    }

    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        self.admission.enter()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let admission = self.admission.clone();
        let slots = self.slots.clone();
        let delay = self.token_delay;
        let mut out = Output::new(tx, request.stream, std::time::Instant::now());
        tokio::spawn(async move {
            let Ok(_permit) = slots.acquire_owned().await else {
                admission.finished(false);
                return;
            };
            admission.started();
            let start = if request.sampling.temperature > 0.0 {
                request.sampling.seed as usize
            } else {
                0
            };
            let mut text = TextAssembler::new(request.stop.clone());
            let mut reason = FinishReason::Length;
            let mut generated = 0u32;
            while generated < request.max_tokens {
                tokio::time::sleep(delay).await;
                let word = WORDS[(start + generated as usize) % WORDS.len()];
                generated += 1;
                out.token_generated(admission.metrics());
                let pushed = text.push(format!(" {word}").as_bytes());
                if !out.text(pushed.text, pushed.tokens) {
                    admission.finished(true);
                    return;
                }
                if pushed.stopped {
                    reason = FinishReason::Stop;
                    break;
                }
            }
            let rest = text.finish();
            out.text(rest.text, rest.tokens);
            out.done(
                reason,
                u32::try_from(request.prompt_tokens.len()).unwrap_or(u32::MAX),
                generated,
            );
            admission.finished(true);
        });
        Ok(rx)
    }
}
