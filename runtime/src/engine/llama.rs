//! The llama.cpp engine (through `llama-cpp-2`) with continuous batching.
//!
//! One scheduler thread owns the llama context. Every step it admits queued requests into free
//! sequence slots (`seq_id`), decodes the next token of every decoding sequence in one batch,
//! prefills prompt chunks of newly admitted ones in a second batch, and samples one token per
//! sequence that produced logits. A finished or cancelled sequence frees its KV cells and its
//! slot at once, so a waiting request joins the very next step. The thread is a plain OS thread
//! because `llama_decode` blocks for milliseconds and would starve the async runtime.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::text::TextAssembler;
use super::{
    Admission, ChatTurn, Engine, EngineError, Event, FinishReason, GenerateRequest, Output, TokenId,
};
use crate::metrics::Metrics;

/// Tokens one `llama_decode` call may hold: prompt chunks are cut to fit (llama.cpp's default).
const N_BATCH: u32 = 512;

/// The process-wide llama.cpp backend; llama.cpp allows one initialisation per process.
static BACKEND: Mutex<Option<&'static LlamaBackend>> = Mutex::new(None);

/// Initialises llama.cpp once (logs go to `tracing`, target `llama_cpp_2`).
pub fn backend() -> Result<&'static LlamaBackend, EngineError> {
    let mut guard = BACKEND
        .lock()
        .map_err(|_| EngineError::Load("llama.cpp backend lock poisoned".into()))?;
    if let Some(b) = *guard {
        return Ok(b);
    }
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
    let b: &'static LlamaBackend =
        Box::leak(Box::new(LlamaBackend::init().map_err(|e| {
            EngineError::Load(format!("failed to initialise llama.cpp: {e}"))
        })?));
    *guard = Some(b);
    Ok(b)
}

/// How to load and run the model.
#[derive(Debug, Clone)]
pub struct LlamaConfig {
    pub path: PathBuf,
    /// Tokens of context per sequence.
    pub context_length: u32,
    pub max_concurrency: u32,
    pub max_queue: u32,
    pub threads: u32,
}

/// Loads the weights with llama.cpp, reporting progress as bytes of `file_size`.
pub fn load_model(
    path: &Path,
    file_size: u64,
    metrics: &Arc<Metrics>,
) -> Result<LlamaModel, EngineError> {
    let backend = backend()?;
    metrics.weight_bytes_total.set(file_size);
    metrics.weight_bytes_loaded.set(0);
    let progress = metrics.clone();
    #[allow(unused_mut)]
    let mut params = LlamaModelParams::default().with_progress_callback(move |p: f32| {
        // Precision loss is fine: this is a progress gauge.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        progress
            .weight_bytes_loaded
            .set((f64::from(p) * file_size as f64) as u64);
        true
    });
    #[cfg(feature = "cuda")]
    {
        params = params.with_n_gpu_layers(u32::MAX);
    }
    let model = LlamaModel::load_from_file(backend, path, &params)
        .map_err(|e| EngineError::Load(format!("llama.cpp refused {}: {e}", path.display())))?;
    metrics.weight_bytes_loaded.set(file_size);
    Ok(model)
}

/// A queued generation.
#[derive(Debug)]
struct Job {
    request: GenerateRequest,
    events: mpsc::UnboundedSender<super::Event>,
    submitted: std::time::Instant,
}

/// The llama.cpp engine.
pub struct LlamaEngine {
    model: Arc<LlamaModel>,
    template: LlamaChatTemplate,
    jobs: mpsc::UnboundedSender<Job>,
    admission: Arc<Admission>,
    context_length: u32,
}

impl LlamaEngine {
    /// Creates the context on a new scheduler thread and returns once it is ready.
    pub fn start(
        model: LlamaModel,
        config: &LlamaConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, EngineError> {
        let backend = backend()?;
        let model = Arc::new(model);
        // SmolLM2 and most instruct models carry a template; ChatML is llama.cpp's usual fallback.
        let template = match model.chat_template(None) {
            Ok(t) => t,
            Err(_) => LlamaChatTemplate::new("chatml")
                .map_err(|e| EngineError::ChatTemplate(e.to_string()))?,
        };
        let admission = Arc::new(Admission::new(
            config.max_concurrency as usize,
            config.max_queue as usize,
            metrics,
        ));
        let (jobs, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_model = model.clone();
        let thread_admission = admission.clone();
        let cfg = config.clone();
        thread::Builder::new()
            .name("llama-scheduler".into())
            .spawn(move || {
                let params = context_params(&cfg);
                match thread_model.new_context(backend, params) {
                    Ok(ctx) => {
                        let _ = ready_tx.send(Ok(()));
                        Scheduler::new(&thread_model, ctx, &cfg, thread_admission).run(rx);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(EngineError::Context(e.to_string())));
                    }
                }
            })
            .map_err(|e| {
                EngineError::Context(format!("failed to spawn the scheduler thread: {e}"))
            })?;
        ready_rx.recv().map_err(|_| EngineError::Stopped)??;
        Ok(Self {
            model,
            template,
            jobs,
            admission,
            context_length: config.context_length,
        })
    }
}

impl std::fmt::Debug for LlamaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaEngine")
            .field("context_length", &self.context_length)
            .field("admission", &self.admission)
            .finish_non_exhaustive()
    }
}

/// Context parameters shared by the engine and the benchmark's direct baseline.
pub fn context_params(cfg: &LlamaConfig) -> LlamaContextParams {
    let threads = i32::try_from(cfg.threads).unwrap_or(1);
    LlamaContextParams::default()
        // One KV stream per sequence, each `context_length` cells: a sequence attends only to its own cells.
        .with_n_ctx(NonZeroU32::new(
            cfg.context_length.saturating_mul(cfg.max_concurrency),
        ))
        .with_n_seq_max(cfg.max_concurrency)
        .with_kv_unified(false)
        .with_n_batch(N_BATCH)
        .with_n_ubatch(N_BATCH)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
}

/// The sampler for one request: greedy at temperature 0, else top-p, temperature and a seeded draw
/// (llama.cpp's common sampler order).
pub fn sampler(s: &super::Sampling) -> LlamaSampler {
    if s.temperature <= 0.0 {
        LlamaSampler::greedy()
    } else {
        LlamaSampler::chain_simple([
            LlamaSampler::top_p(s.top_p, 1),
            LlamaSampler::temp(s.temperature),
            LlamaSampler::dist(s.seed),
        ])
    }
}

impl Engine for LlamaEngine {
    fn context_length(&self) -> u32 {
        self.context_length
    }

    fn tokenize(&self, text: &str, special: bool) -> Vec<TokenId> {
        self.model
            .vocab()
            .tokenize(text.as_bytes(), true, special)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    fn chat_prompt(&self, messages: &[ChatTurn]) -> Result<String, EngineError> {
        let chat = messages
            .iter()
            .map(|m| LlamaChatMessage::new(m.role.clone(), m.content.clone()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| EngineError::ChatTemplate(e.to_string()))?;
        self.model
            .apply_chat_template(&self.template, &chat, true)
            .map_err(|e| EngineError::ChatTemplate(e.to_string()))
    }

    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<Event>, EngineError> {
        self.admission.enter()?;
        let (events, rx) = mpsc::unbounded_channel();
        let job = Job {
            request,
            events,
            submitted: std::time::Instant::now(),
        };
        if self.jobs.send(job).is_err() {
            self.admission.finished(false);
            return Err(EngineError::Stopped);
        }
        Ok(rx)
    }
}

/// One sequence being prefilled or decoded.
struct Seq {
    seq_id: i32,
    request_id: String,
    out: Output,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens already in the KV cache.
    prefilled: usize,
    /// Position of the next token.
    pos: i32,
    /// The token sampled last step, to be decoded this step.
    next: Option<LlamaToken>,
    /// Index in this step's batch of the logits to sample from.
    logits_at: Option<i32>,
    generated: u32,
    max_tokens: u32,
    sampler: LlamaSampler,
    text: TextAssembler,
    done: bool,
}

struct Scheduler<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    free_ids: Vec<i32>,
    active: Vec<Seq>,
    max_concurrency: usize,
    admission: Arc<Admission>,
}

impl<'m> Scheduler<'m> {
    fn new(
        model: &'m LlamaModel,
        ctx: LlamaContext<'m>,
        cfg: &LlamaConfig,
        admission: Arc<Admission>,
    ) -> Self {
        let n = i32::try_from(cfg.max_concurrency).unwrap_or(1);
        Self {
            model,
            ctx,
            batch: LlamaBatch::new(N_BATCH as usize, n),
            free_ids: (0..n).rev().collect(),
            active: Vec::new(),
            max_concurrency: cfg.max_concurrency as usize,
            admission,
        }
    }

    fn run(mut self, mut jobs: mpsc::UnboundedReceiver<Job>) {
        let mut open = true;
        loop {
            if self.active.is_empty() {
                if !open {
                    return;
                }
                match jobs.blocking_recv() {
                    Some(job) => self.admit(job),
                    None => return,
                }
            }
            while open && self.active.len() < self.max_concurrency {
                match jobs.try_recv() {
                    Ok(job) => self.admit(job),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            // Cancelled requests (client gone) leave before costing a decode.
            for s in &mut self.active {
                if s.out.is_closed() {
                    tracing::debug!(request_id = %s.request_id, "generation cancelled");
                    s.done = true;
                }
            }
            self.reap();
            if self.active.is_empty() {
                continue;
            }
            self.step();
            self.reap();
        }
    }

    fn admit(&mut self, job: Job) {
        let out = Output::new(job.events, job.request.stream, job.submitted);
        if out.is_closed() {
            self.admission.finished(false);
            return;
        }
        let Some(seq_id) = self.free_ids.pop() else {
            // Cannot happen: admission is gated on `active.len() < max_concurrency`.
            out.failed("no free sequence slot".into());
            self.admission.finished(false);
            return;
        };
        self.admission.started();
        let r = job.request;
        self.active.push(Seq {
            seq_id,
            request_id: r.request_id,
            out,
            prompt: r.prompt_tokens.into_iter().map(LlamaToken::new).collect(),
            prefilled: 0,
            pos: 0,
            next: None,
            logits_at: None,
            generated: 0,
            max_tokens: r.max_tokens,
            sampler: sampler(&r.sampling),
            text: TextAssembler::new(r.stop),
            done: false,
        });
    }

    /// One scheduling step: a decode call with the next token of every decoding sequence, then a
    /// prefill call with prompt chunks of newly admitted ones.
    ///
    /// The two are separate `llama_decode` calls on purpose: with one KV stream per sequence,
    /// llama.cpp splits a batch into micro-batches holding the same number of tokens of each
    /// sequence (`split_equal`), so one decode token next to a 100-token prompt chunk would become
    /// ~100 micro-batches. Each call here holds equal counts per sequence: 1 each, then L each.
    fn step(&mut self) {
        self.batch.clear();
        for s in &mut self.active {
            s.logits_at = None;
            if let Some(tok) = s.next.take() {
                s.logits_at = Some(self.batch.n_tokens());
                let added = self.batch.add(tok, s.pos, &[s.seq_id], true);
                s.pos += 1;
                if let Err(e) = added {
                    s.out
                        .failed(format!("failed to add a token to the batch: {e}"));
                    s.done = true;
                }
            }
        }
        if self.batch.n_tokens() > 0 {
            self.decode_and_sample();
        }

        let prefilling: Vec<usize> = (0..self.active.len())
            .filter(|&i| {
                !self.active[i].done && self.active[i].prefilled < self.active[i].prompt.len()
            })
            .collect();
        if prefilling.is_empty() {
            return;
        }
        let per_seq = (N_BATCH as usize / prefilling.len()).max(1);
        let chunk = prefilling
            .iter()
            .map(|&i| self.active[i].prompt.len() - self.active[i].prefilled)
            .min()
            .unwrap_or(1)
            .min(per_seq);
        self.batch.clear();
        for s in &mut self.active {
            s.logits_at = None;
        }
        for &i in prefilling.iter().take(N_BATCH as usize) {
            let s = &mut self.active[i];
            for k in 0..chunk {
                let last = s.prefilled + k + 1 == s.prompt.len();
                if last {
                    s.logits_at = Some(self.batch.n_tokens());
                }
                let added = self
                    .batch
                    .add(s.prompt[s.prefilled + k], s.pos, &[s.seq_id], last);
                s.pos += 1;
                if let Err(e) = added {
                    s.out
                        .failed(format!("failed to add a prompt token to the batch: {e}"));
                    s.done = true;
                }
            }
            s.prefilled += chunk;
        }
        self.decode_and_sample();
    }

    /// Decodes `self.batch` and samples one token for every sequence with `logits_at` set.
    fn decode_and_sample(&mut self) {
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            tracing::error!(error = %e, "llama_decode failed; failing the sequences of this batch");
            for s in &mut self.active {
                if s.logits_at.is_some()
                    || (s.prefilled > 0 && s.prefilled <= s.prompt.len() && s.next.is_none())
                {
                    s.out.failed(format!("llama_decode failed: {e}"));
                    s.done = true;
                }
            }
            return;
        }
        let vocab = self.model.vocab();
        let mut piece = Vec::with_capacity(32);
        for s in &mut self.active {
            let Some(idx) = s.logits_at.take() else {
                continue;
            };
            if s.done {
                continue;
            }
            let tok = s.sampler.sample(&self.ctx, idx);
            if vocab.is_eog(tok) {
                finish_seq(s, FinishReason::Stop);
                continue;
            }
            s.generated += 1;
            s.out.token_generated(self.admission.metrics());
            piece.clear();
            vocab.token_to_piece_into(tok, &mut piece, false, None);
            let pushed = s.text.push(&piece);
            if !s.out.text(pushed.text, pushed.tokens) {
                s.done = true;
                continue;
            }
            if pushed.stopped {
                finish_seq(s, FinishReason::Stop);
            } else if s.generated >= s.max_tokens {
                finish_seq(s, FinishReason::Length);
            } else {
                s.next = Some(tok);
            }
        }
    }

    /// Frees the slots and KV cells of finished sequences.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].done {
                let s = self.active.swap_remove(i);
                if let Ok(id) = u32::try_from(s.seq_id)
                    && let Err(e) = self.ctx.clear_kv_cache_seq(Some(id), None, None)
                {
                    tracing::warn!(error = %e, "failed to clear a sequence's KV cells");
                }
                self.free_ids.push(s.seq_id);
                self.admission.finished(true);
            } else {
                i += 1;
            }
        }
    }
}

/// Flushes held text and sends `Done`.
fn finish_seq(s: &mut Seq, reason: FinishReason) {
    // After a stop string nothing is held; after EOG or the length limit the held tail is released.
    let rest = s.text.finish();
    s.out.text(rest.text, rest.tokens);
    s.out.done(
        reason,
        u32::try_from(s.prompt.len()).unwrap_or(u32::MAX),
        s.generated,
    );
    s.done = true;
}
