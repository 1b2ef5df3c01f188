//! The binary refuses bad weights before serving: each case asserts a non-zero exit and the
//! message in the log and in the termination-message file. Tiny GGUF files are written here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;

use common::run_to_exit;
use modelfleet_runtime::gguf::write::{Tensor, Value, gguf};
use sha2::{Digest, Sha256};

fn tiny_gguf() -> Vec<u8> {
    gguf(
        &[
            ("general.architecture", Value::Str("llama".into())),
            ("general.file_type", Value::U32(2)),
            ("llama.context_length", Value::U32(128)),
        ],
        &[Tensor {
            name: "token_embd.weight".into(),
            dims: vec![64, 8],
            ggml_type: 2,
            data: vec![0; 18 * 2 * 8],
        }],
    )
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().write_all(bytes).unwrap();
    p.display().to_string()
}

fn assert_refused(uri: &str, extra: &[&str], expected: &str) {
    let (status, stderr, msg) = run_to_exit(uri, extra);
    assert!(
        !status.success(),
        "{uri} must be refused; stderr:\n{stderr}"
    );
    assert!(
        msg.contains(expected),
        "termination message {msg:?} lacks {expected:?}; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(expected),
        "stderr lacks {expected:?}:\n{stderr}"
    );
}

#[test]
fn refuses_a_file_that_is_not_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "model.gguf",
        b"PK\x03\x04this is a zip archive, not weights",
    );
    assert_refused(
        &p,
        &[],
        "model file is not GGUF: it starts with \"PK\\u{3}\\u{4}\"",
    );
}

#[test]
fn refuses_a_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let full = tiny_gguf();
    let p = write(dir.path(), "cut-data.gguf", &full[..full.len() - 10]);
    assert_refused(
        &p,
        &[],
        "model file is truncated: data of tensor \"token_embd.weight\" ends at byte",
    );
    let p = write(dir.path(), "cut-header.gguf", &full[..66]);
    assert_refused(
        &p,
        &[],
        "model file is truncated: metadata value \"general.architecture\" ends at byte",
    );
}

#[test]
fn refuses_a_corrupt_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = tiny_gguf();
    // Tensor count 2^40: far beyond any model.
    bytes[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let p = write(dir.path(), "corrupt.gguf", &bytes);
    assert_refused(
        &p,
        &[],
        "model file is corrupt: tensor count 1099511627776 exceeds 1048576",
    );
    let mut bytes = tiny_gguf();
    bytes[4] = 1;
    let p = write(dir.path(), "v1.gguf", &bytes);
    assert_refused(&p, &[], "unsupported GGUF version 1");
}

#[test]
fn refuses_a_digest_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = tiny_gguf();
    let p = write(dir.path(), "m.gguf", &bytes);
    let wrong = "0".repeat(64);
    let actual = hex::encode(Sha256::digest(&bytes));
    assert_refused(
        &p,
        &["--sha256", &wrong],
        &format!("sha256 mismatch for {p}: expected {wrong}, got {actual}"),
    );
}

#[test]
fn refuses_a_quantization_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "m.gguf", &tiny_gguf());
    assert_refused(
        &p,
        &["--quantization", "Q4_1"],
        "quantization mismatch: asked for Q4_1, the file holds Q4_0",
    );
}

#[test]
fn refuses_unsupported_and_missing_uris() {
    assert_refused(
        "hf://HuggingFaceTB/SmolLM2-135M-Instruct",
        &[],
        "model URI scheme hf:// is not supported yet",
    );
    assert_refused(
        "s3://bucket/model.gguf",
        &[],
        "model URI scheme s3:// is not supported yet",
    );
    assert_refused(
        "/nonexistent/model.gguf",
        &[],
        "model file /nonexistent/model.gguf does not exist",
    );
}

#[test]
fn refuses_a_file_llama_cpp_cannot_load() {
    // A well-formed container that is not a usable model (no tokenizer, no layers).
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "empty-model.gguf", &tiny_gguf());
    assert_refused(
        &p,
        &[],
        "failed to start the engine: failed to load the model: llama.cpp refused",
    );
}

#[test]
fn refuses_a_truncated_real_model() {
    let Some(model) = common::model_path() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(model).unwrap();
    let p = write(dir.path(), "half.gguf", &bytes[..bytes.len() / 2]);
    assert_refused(&p, &[], "model file is truncated: data of tensor");
}
