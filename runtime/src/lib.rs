//! `modelfleet-runtime`: the inference server every Modelfleet replica runs.
//!
//! Layers, outside in: [`args`] (flags), [`server`] (the serve lifecycle), [`api`] (the
//! OpenAI-compatible HTTP surface, validation and errors), [`engine`] (the engine trait, the
//! llama.cpp engine with continuous batching and a fake engine for tests), [`fetch`] and [`gguf`]
//! (getting and checking the weights), [`metrics`].
#![forbid(unsafe_code)]

pub mod api;
pub mod args;
pub mod engine;
pub mod fetch;
pub mod gguf;
pub mod metrics;
pub mod server;
