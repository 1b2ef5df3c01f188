//! The `serve` command: fetch → verify → inspect → load → warm up → serve → drain.
//!
//! The HTTP listener starts first so `/livez`, `/readyz` (false) and `/metrics` (download and load
//! progress) answer while the weights arrive. Any failure before serving ends the process with a
//! message for the termination-message file; SIGTERM turns `/readyz` false at once, lets in-flight
//! generations finish within the grace period, then stops the listener and returns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

use crate::api::{self, AppState};
use crate::args::ServeArgs;
use crate::engine::llama::{LlamaConfig, LlamaEngine, load_model};
use crate::engine::{Engine, EngineError, Event, GenerateRequest, Sampling};
use crate::fetch::{self, FetchError, ModelSource};
use crate::gguf::{self, GgufError};
use crate::metrics::Metrics;

/// Context length used when the flag is absent: the trained length, capped here to bound KV memory.
const DEFAULT_CONTEXT_CAP: u32 = 4096;
/// How long the listener may take to close connections once in-flight generations are done.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why `serve` stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to fetch the model")]
    Fetch(#[from] FetchError),
    #[error("failed to verify the model file")]
    Gguf(#[from] GgufError),
    #[error("failed to start the engine")]
    Engine(#[from] EngineError),
    #[error("failed to listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to install the signal handler")]
    Signal(#[source] std::io::Error),
    #[error("failed to warm up the model: {0}")]
    WarmUp(String),
    #[error("failed to run a blocking task")]
    Join(#[source] tokio::task::JoinError),
}

impl ServeError {
    /// A bounded label for metrics and the reason shown by the operator.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Fetch(e) => e.category(),
            Self::Gguf(e) => e.category(),
            Self::Engine(e) => e.category(),
            Self::Bind { .. } => "bind",
            Self::Signal(_) => "signal",
            Self::WarmUp(_) => "warm_up",
            Self::Join(_) => "join",
        }
    }
}

/// Renders an error and its sources on one line: "a: b: c".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Runs the server until SIGTERM (or SIGINT) and the drain are done.
pub async fn run(args: ServeArgs) -> Result<(), ServeError> {
    let metrics = Arc::new(Metrics::new());
    let source = ModelSource::parse(&args.model_uri)?;
    let served_name = args
        .served_name
        .clone()
        .unwrap_or_else(|| source.default_name());
    let state = Arc::new(AppState::new(served_name.clone(), metrics.clone()));
    let addr = SocketAddr::new(args.host, args.port);
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let mut term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let app = api::router(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stop_rx.await;
            })
            .await
    });
    tracing::info!(%addr, model = %served_name, "listening; loading the model");

    tokio::select! {
        loaded = load(&args, &source, &metrics) => {
            let engine = loaded?;
            state.set_ready(engine);
            tracing::info!("ready");
        }
        _ = term.recv() => {
            tracing::info!("SIGTERM while loading; exiting");
            return Ok(());
        }
        _ = int.recv() => {
            tracing::info!("SIGINT while loading; exiting");
            return Ok(());
        }
    }

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; draining"),
        _ = int.recv() => tracing::info!("SIGINT received; draining"),
    }
    state.start_draining();
    let in_flight = state.in_flight();
    let drained = state.wait_idle(args.grace_period).await;
    if drained {
        tracing::info!(requests = in_flight, "drained");
    } else {
        tracing::warn!(
            still_running = state.in_flight(),
            grace_period_s = args.grace_period.as_secs_f64(),
            "grace period over; exiting with requests still running"
        );
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(CLOSE_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server ended with an error"),
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("connections still open after the drain; closing them"),
    }
    Ok(())
}

/// Fetches, verifies, inspects, loads and warms up the model.
async fn load(
    args: &ServeArgs,
    source: &ModelSource,
    metrics: &Arc<Metrics>,
) -> Result<Arc<dyn Engine>, ServeError> {
    let started = Instant::now();
    let path = fetch::fetch(source, args.sha256.as_deref(), &args.cache_dir, metrics).await?;
    let p = path.clone();
    let summary = tokio::task::spawn_blocking(move || gguf::read_summary(&p))
        .await
        .map_err(ServeError::Join)??;
    gguf::check_quantization(&summary, &args.quantization)?;
    metrics
        .model_info
        .get_or_create(&crate::metrics::ModelLabels {
            architecture: summary.architecture.clone(),
            quantization: summary.quantization(),
        })
        .set(1);
    metrics.model_parameters.set(
        summary
            .tensors
            .iter()
            .map(|t| t.dims.iter().product::<u64>())
            .sum(),
    );
    metrics
        .model_context_length
        .set(summary.context_length.unwrap_or(0));
    let trained = summary
        .context_length
        .and_then(|c| u32::try_from(c).ok())
        .unwrap_or(DEFAULT_CONTEXT_CAP);
    let context_length = args
        .context_length
        .unwrap_or(trained.min(DEFAULT_CONTEXT_CAP));
    if context_length > trained {
        tracing::warn!(
            context_length,
            trained,
            "context length exceeds the trained context; quality may drop"
        );
    }
    tracing::info!(
        path = %path.display(),
        architecture = %summary.architecture,
        quantization = %summary.quantization(),
        tensors = summary.tensors.len(),
        gguf_version = summary.version,
        context_length,
        "weights verified"
    );
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok())
            .unwrap_or(1)
    });
    let config = LlamaConfig {
        path: path.clone(),
        context_length,
        max_concurrency: args.max_concurrency,
        max_queue: args.max_queue,
        threads,
    };
    let m = metrics.clone();
    let size = summary.file_size;
    let engine = tokio::task::spawn_blocking(move || {
        let model = load_model(&config.path, size, &m)?;
        LlamaEngine::start(model, &config, m)
    })
    .await
    .map_err(ServeError::Join)??;
    let engine: Arc<dyn Engine> = Arc::new(engine);
    warm_up(engine.as_ref()).await?;
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        threads,
        "model loaded and warmed up"
    );
    Ok(engine)
}

/// Generates one token, so the first real request does not pay for lazy initialisation.
pub async fn warm_up(engine: &dyn Engine) -> Result<(), ServeError> {
    let request = GenerateRequest {
        request_id: "warm-up".into(),
        prompt_tokens: engine.tokenize("Hello", false),
        max_tokens: 1,
        sampling: Sampling {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        },
        stop: Vec::new(),
        stream: false,
    };
    let mut rx = engine.submit(request)?;
    loop {
        match rx.recv().await {
            Some(Event::Text { .. }) => {}
            Some(Event::Done { .. }) => return Ok(()),
            Some(Event::Failed(e)) => return Err(ServeError::WarmUp(e)),
            None => return Err(ServeError::WarmUp("the engine stopped".into())),
        }
    }
}

/// Writes `message` to the termination-message file; failures are logged, not fatal.
pub fn write_termination_message(path: &std::path::Path, message: &str) {
    // Kubernetes reads at most 4096 bytes.
    let mut msg = message.to_string();
    if msg.len() > 4000 {
        let mut cut = 4000;
        while !msg.is_char_boundary(cut) {
            cut -= 1;
        }
        msg.truncate(cut);
    }
    if let Err(e) = std::fs::write(path, msg) {
        tracing::warn!(path = %path.display(), error = %e, "failed to write the termination message");
    }
}
