//! Helpers shared by the integration tests: the real model's path, spawning the binary, HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The SmolLM2 GGUF from `make model`, or `None` (the test is skipped) unless
/// `MODELFLEET_REQUIRE_MODEL=1`, in which case a missing model fails the test.
pub fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("MODELFLEET_MODEL_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("MODELFLEET_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/modelfleet")
                });
            cache.join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("MODELFLEET_REQUIRE_MODEL").as_deref() != Ok("1"),
        "the real model is required but {} is missing: run `make model`",
        path.display()
    );
    eprintln!("skipping: {} is missing (run `make model`)", path.display());
    None
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `modelfleet-runtime serve`.
pub struct Runtime {
    pub child: Child,
    pub port: u16,
    pub base: String,
    pub termination: PathBuf,
    _dir: tempfile::TempDir,
}

impl Runtime {
    /// Starts the binary with `extra` flags on a free port.
    pub fn spawn(model_uri: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let termination = dir.path().join("termination-log");
        let child = Command::new(env!("CARGO_BIN_EXE_modelfleet-runtime"))
            .args([
                "serve",
                "--model-uri",
                model_uri,
                "--host",
                "127.0.0.1",
                "--port",
            ])
            .arg(port.to_string())
            .arg("--termination-message-path")
            .arg(&termination)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .args(extra)
            .env("RUST_LOG", "info,llama-cpp-2=warn")
            // Tests share two cores with builds: sleeping, not spinning, OpenMP threads keep them fair.
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            termination,
            _dir: dir,
        }
    }

    /// Waits for `/readyz` to answer 200; panics with the log if the process exits first.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "runtime exited with {status} before ready:\n{}",
                    self.stderr()
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "runtime not ready after {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("runtime did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Everything the process wrote to stderr (call after it exited).
    pub fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }

    pub fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM failed");
    }

    pub fn termination_message(&self) -> String {
        std::fs::read_to_string(&self.termination).unwrap_or_default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary to completion (for inputs that must be refused) and returns (status, stderr, termination message).
pub fn run_to_exit(model_uri: &str, extra: &[&str]) -> (ExitStatus, String, String) {
    let mut rt = Runtime::spawn(model_uri, extra);
    let status = rt.wait_exit(Duration::from_secs(60));
    let stderr = rt.stderr();
    let msg = rt.termination_message();
    (status, stderr, msg)
}
