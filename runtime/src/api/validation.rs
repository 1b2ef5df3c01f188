//! The one place raw API requests become validated generation requests.
//!
//! Every error names the field and the limit. Limits follow OpenAI's documented ranges where they
//! exist (temperature 0–2, top_p 0–1, at most 4 stop sequences, n = 1 here); the context-length
//! checks use the engine's tokenizer so they count real tokens.

use crate::engine::{ChatTurn, Engine, GenerateRequest, Sampling, TokenId};

use super::error::ApiError;
use super::types::{ChatRequest, CompletionRequest, MessageContent, Prompt, Stop};

/// Most stop sequences per request (OpenAI's limit).
pub const MAX_STOP: usize = 4;
/// Longest stop sequence in bytes; longer ones would make text hold-back unbounded.
pub const MAX_STOP_BYTES: usize = 64;
/// Most messages per chat request.
pub const MAX_MESSAGES: usize = 1024;
/// Default `max_tokens` of `/v1/completions` (OpenAI's default).
pub const DEFAULT_COMPLETION_MAX_TOKENS: u32 = 16;
/// Default temperature (OpenAI's default).
pub const DEFAULT_TEMPERATURE: f32 = 1.0;

/// A request ready for the engine, plus how to answer it.
#[derive(Debug)]
pub struct Validated {
    pub generate: GenerateRequest,
    pub stream: bool,
    pub include_usage: bool,
}

/// Knobs shared by both endpoints.
struct Common<'a> {
    model: &'a str,
    max_tokens: Option<i64>,
    max_tokens_param: &'static str,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<&'a Stop>,
    seed: Option<i64>,
    n: Option<i64>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    stream: Option<bool>,
    include_usage: bool,
}

/// Validates `POST /v1/completions`.
pub fn completion(
    raw: &CompletionRequest,
    served_name: &str,
    engine: &dyn Engine,
    request_id: String,
) -> Result<Validated, ApiError> {
    let prompt = match &raw.prompt {
        Prompt::Text(s) => s.clone(),
        Prompt::Many(items) => match items.as_slice() {
            [serde_json::Value::String(s)] => s.clone(),
            _ => {
                return Err(ApiError::invalid(
                    "prompt",
                    "prompt: must be a string or an array of exactly one string",
                ));
            }
        },
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "prompt: must not be empty"));
    }
    if raw.echo == Some(true) {
        return Err(ApiError::invalid("echo", "echo: only false is supported"));
    }
    if raw.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::invalid(
            "logprobs",
            "logprobs: not supported; omit it or send null",
        ));
    }
    let common = Common {
        model: &raw.model,
        max_tokens: raw.max_tokens,
        max_tokens_param: "max_tokens",
        temperature: raw.temperature,
        top_p: raw.top_p,
        stop: raw.stop.as_ref(),
        seed: raw.seed,
        n: raw.n,
        presence_penalty: raw.presence_penalty,
        frequency_penalty: raw.frequency_penalty,
        stream: raw.stream,
        include_usage: raw.stream_options.as_ref().is_some_and(|o| o.include_usage),
    };
    check_common(&common, served_name)?;
    let tokens = engine.tokenize(&prompt, false);
    finish(
        common,
        tokens,
        "prompt",
        Some(DEFAULT_COMPLETION_MAX_TOKENS),
        engine,
        request_id,
    )
}

/// Validates `POST /v1/chat/completions`.
pub fn chat(
    raw: &ChatRequest,
    served_name: &str,
    engine: &dyn Engine,
    request_id: String,
) -> Result<Validated, ApiError> {
    if raw.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "messages: must hold at least one message",
        ));
    }
    if raw.messages.len() > MAX_MESSAGES {
        return Err(ApiError::invalid(
            "messages",
            format!(
                "messages: at most {MAX_MESSAGES} messages, got {}",
                raw.messages.len()
            ),
        ));
    }
    if raw.logprobs == Some(true) {
        return Err(ApiError::invalid(
            "logprobs",
            "logprobs: only false is supported",
        ));
    }
    let (max_tokens, max_tokens_param) = match (raw.max_completion_tokens, raw.max_tokens) {
        (Some(m), _) => (Some(m), "max_completion_tokens"),
        (None, m) => (m, "max_tokens"),
    };
    let common = Common {
        model: &raw.model,
        max_tokens,
        max_tokens_param,
        temperature: raw.temperature,
        top_p: raw.top_p,
        stop: raw.stop.as_ref(),
        seed: raw.seed,
        n: raw.n,
        presence_penalty: raw.presence_penalty,
        frequency_penalty: raw.frequency_penalty,
        stream: raw.stream,
        include_usage: raw.stream_options.as_ref().is_some_and(|o| o.include_usage),
    };
    check_common(&common, served_name)?;
    let mut turns = Vec::with_capacity(raw.messages.len());
    for (i, m) in raw.messages.iter().enumerate() {
        let content = match &m.content {
            MessageContent::Text(s) => s.clone(),
            MessageContent::Parts(parts) => {
                let mut text = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push_str(t),
                        _ => {
                            return Err(ApiError::invalid(
                                &format!("messages[{i}].content"),
                                format!(
                                    "messages[{i}].content: only parts of type \"text\" with a \"text\" field are supported"
                                ),
                            ));
                        }
                    }
                }
                text
            }
        };
        if content.contains('\0') {
            return Err(ApiError::invalid(
                &format!("messages[{i}].content"),
                format!("messages[{i}].content: must not contain NUL characters"),
            ));
        }
        turns.push(ChatTurn {
            role: m.role.template_name().to_string(),
            content,
        });
    }
    let prompt = engine
        .chat_prompt(&turns)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let tokens = engine.tokenize(&prompt, true);
    finish(common, tokens, "messages", None, engine, request_id)
}

fn check_common(c: &Common<'_>, served_name: &str) -> Result<(), ApiError> {
    if c.model != served_name {
        return Err(ApiError::ModelNotFound(c.model.to_string()));
    }
    if let Some(t) = c.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature: must be between 0 and 2, got {t}"),
        ));
    }
    if let Some(p) = c.top_p
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p: must be greater than 0 and at most 1, got {p}"),
        ));
    }
    if let Some(n) = c.n
        && n != 1
    {
        return Err(ApiError::invalid(
            "n",
            format!("n: only 1 is supported, got {n}"),
        ));
    }
    for (name, v) in [
        ("presence_penalty", c.presence_penalty),
        ("frequency_penalty", c.frequency_penalty),
    ] {
        if let Some(v) = v
            && v != 0.0
        {
            return Err(ApiError::invalid(
                name,
                format!("{name}: only 0 is supported, got {v}"),
            ));
        }
    }
    if c.include_usage && c.stream != Some(true) {
        return Err(ApiError::invalid(
            "stream_options",
            "stream_options: only allowed when stream is true",
        ));
    }
    if let Some(stop) = c.stop {
        let list: Vec<&String> = match stop {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v.iter().collect(),
        };
        if list.len() > MAX_STOP {
            return Err(ApiError::invalid(
                "stop",
                format!("stop: at most {MAX_STOP} sequences, got {}", list.len()),
            ));
        }
        for s in list {
            if s.is_empty() || s.len() > MAX_STOP_BYTES {
                return Err(ApiError::invalid(
                    "stop",
                    format!(
                        "stop: each sequence must be 1 to {MAX_STOP_BYTES} bytes, got {}",
                        s.len()
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn finish(
    c: Common<'_>,
    tokens: Vec<TokenId>,
    prompt_param: &str,
    default_max_tokens: Option<u32>,
    engine: &dyn Engine,
    request_id: String,
) -> Result<Validated, ApiError> {
    let ctx = engine.context_length();
    let n = u32::try_from(tokens.len()).unwrap_or(u32::MAX);
    if n >= ctx {
        return Err(ApiError::ContextLengthExceeded {
            param: prompt_param.to_string(),
            message: format!(
                "{prompt_param}: the prompt is {n} tokens but the context length is {ctx} tokens, \
                 which must also leave room for at least 1 generated token"
            ),
        });
    }
    let room = ctx - n;
    let max_tokens = match c.max_tokens {
        None => default_max_tokens.map_or(room, |d| d.min(room)),
        Some(m) if m < 1 || m > i64::from(ctx) => {
            return Err(ApiError::invalid(
                c.max_tokens_param,
                format!(
                    "{}: must be between 1 and {ctx} (the context length), got {m}",
                    c.max_tokens_param
                ),
            ));
        }
        Some(m) => {
            let m = u32::try_from(m).unwrap_or(u32::MAX);
            if m > room {
                return Err(ApiError::ContextLengthExceeded {
                    param: c.max_tokens_param.to_string(),
                    message: format!(
                        "{}: the prompt ({n} tokens) plus {m} tokens exceeds the context length of {ctx} tokens; \
                         at most {room} can be generated",
                        c.max_tokens_param
                    ),
                });
            }
            m
        }
    };
    let stop = match c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.clone()],
        Some(Stop::Many(v)) => v.clone(),
    };
    #[allow(clippy::cast_possible_truncation)]
    let sampling = Sampling {
        temperature: c.temperature.map_or(DEFAULT_TEMPERATURE, |t| t as f32),
        top_p: c.top_p.map_or(1.0, |p| p as f32),
        // Without a seed every request draws differently; with one, results repeat.
        seed: c
            .seed
            .map_or_else(random_seed, |s| (s as u64 ^ ((s as u64) >> 32)) as u32),
    };
    Ok(Validated {
        generate: GenerateRequest {
            request_id,
            prompt_tokens: tokens,
            max_tokens,
            sampling,
            stop,
            stream: c.stream.unwrap_or(false),
        },
        stream: c.stream.unwrap_or(false),
        include_usage: c.include_usage,
    })
}

fn random_seed() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    #[allow(clippy::cast_possible_truncation)]
    let s = RandomState::new().hash_one(std::time::SystemTime::now()) as u32;
    s
}
