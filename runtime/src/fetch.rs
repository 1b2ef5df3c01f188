//! Fetches the weights named by `--model-uri` to a local file and verifies their SHA-256.
//!
//! Downloads stream to `<cache>/models/<name>.partial` while hashing, and are renamed into place
//! only when complete and (if a digest was given) verified, so a crash never leaves a file that
//! looks complete. Progress goes to the `fetch_bytes_*` gauges and to the log every few seconds.
//! Local files are used in place; with a digest they are hashed before anything loads them.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::metrics::Metrics;

/// How often download and hashing progress is logged.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Why the weights could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "model URI scheme {scheme}:// is not supported yet; use https://, http://, file:// or a local path"
    )]
    Unsupported { scheme: String },
    #[error("model URI {0:?} is not valid: {1}")]
    InvalidUri(String, &'static str),
    #[error("model file {path} does not exist or cannot be read")]
    Missing {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to download {url}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("failed to download {url}: the server answered {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("failed to download {url}: got {got} bytes, the server announced {expected}")]
    ShortDownload {
        url: String,
        got: u64,
        expected: u64,
    },
    #[error("failed to write {path}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sha256 mismatch for {path}: expected {expected}, got {actual}")]
    DigestMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

impl FetchError {
    /// A bounded label for metrics and the reason shown by the operator.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Unsupported { .. } => "unsupported_uri",
            Self::InvalidUri(..) => "invalid_uri",
            Self::Missing { .. } => "missing",
            Self::Http { .. } | Self::HttpStatus { .. } | Self::ShortDownload { .. } => "download",
            Self::Write { .. } => "write",
            Self::DigestMismatch { .. } => "digest_mismatch",
        }
    }
}

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Http(String),
    Local(PathBuf),
}

impl ModelSource {
    /// Parses `--model-uri`.
    pub fn parse(uri: &str) -> Result<Self, FetchError> {
        if uri.is_empty() {
            return Err(FetchError::InvalidUri(uri.into(), "it is empty"));
        }
        if let Some(path) = uri.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(FetchError::InvalidUri(
                    uri.into(),
                    "file:// URIs need an absolute path",
                ));
            }
            return Ok(Self::Local(PathBuf::from(path)));
        }
        if uri.starts_with("https://") || uri.starts_with("http://") {
            return Ok(Self::Http(uri.to_string()));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            return Err(FetchError::Unsupported {
                scheme: scheme.to_string(),
            });
        }
        Ok(Self::Local(PathBuf::from(uri)))
    }

    /// The last path segment without `.gguf`: the default served model name.
    pub fn default_name(&self) -> String {
        let last = match self {
            Self::Http(url) => url
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_string(),
            Self::Local(p) => p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        let name = last.strip_suffix(".gguf").unwrap_or(&last);
        if name.is_empty() {
            "model".to_string()
        } else {
            name.to_string()
        }
    }
}

/// Makes the weights available as a local, verified file and returns its path.
pub async fn fetch(
    source: &ModelSource,
    sha256: Option<&str>,
    cache_dir: &Path,
    metrics: &Arc<Metrics>,
) -> Result<PathBuf, FetchError> {
    match source {
        ModelSource::Local(path) => {
            let meta = std::fs::metadata(path).map_err(|source| FetchError::Missing {
                path: path.display().to_string(),
                source,
            })?;
            if !meta.is_file() {
                return Err(FetchError::Missing {
                    path: path.display().to_string(),
                    source: std::io::Error::other("not a regular file"),
                });
            }
            if let Some(expected) = sha256 {
                let path_owned = path.clone();
                let m = metrics.clone();
                let actual = tokio::task::spawn_blocking(move || hash_file(&path_owned, &m))
                    .await
                    .map_err(|e| FetchError::Write {
                        path: path.display().to_string(),
                        source: std::io::Error::other(e),
                    })??;
                check_digest(path, expected, &actual)?;
            }
            Ok(path.clone())
        }
        ModelSource::Http(url) => download(url, sha256, cache_dir, metrics).await,
    }
}

fn check_digest(path: &Path, expected: &str, actual: &str) -> Result<(), FetchError> {
    if expected.eq_ignore_ascii_case(actual) {
        tracing::info!(path = %path.display(), sha256 = actual, "sha256 verified");
        Ok(())
    } else {
        Err(FetchError::DigestMismatch {
            path: path.display().to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// Hashes a file, reporting progress on the fetch gauges.
pub fn hash_file(path: &Path, metrics: &Metrics) -> Result<String, FetchError> {
    let io_err = |source| FetchError::Missing {
        path: path.display().to_string(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(io_err)?;
    let total = f.metadata().map_err(io_err)?.len();
    metrics
        .fetch_bytes_total
        .set(i64::try_from(total).unwrap_or(i64::MAX));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let mut last_log = Instant::now();
    loop {
        let n = f.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        metrics
            .fetch_bytes_done
            .set(i64::try_from(done).unwrap_or(i64::MAX));
        if last_log.elapsed() >= LOG_EVERY {
            tracing::info!(bytes_done = done, bytes_total = total, "hashing weights");
            last_log = Instant::now();
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

async fn download(
    url: &str,
    sha256: Option<&str>,
    cache_dir: &Path,
    metrics: &Arc<Metrics>,
) -> Result<PathBuf, FetchError> {
    let dir = cache_dir.join("models");
    let write_err = |p: &Path| {
        let p = p.display().to_string();
        move |source| FetchError::Write { path: p, source }
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(write_err(&dir))?;
    // Named by digest when known, so a restart reuses a verified file; else by the URL's hash.
    let name = match sha256 {
        Some(d) => format!("{d}.gguf"),
        None => format!(
            "url-{}.gguf",
            &hex::encode(Sha256::digest(url.as_bytes()))[..16]
        ),
    };
    let target = dir.join(&name);
    if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        tracing::info!(path = %target.display(), "reusing cached weights");
        if let Some(expected) = sha256 {
            let (t, m) = (target.clone(), metrics.clone());
            let actual = tokio::task::spawn_blocking(move || hash_file(&t, &m))
                .await
                .map_err(|e| FetchError::Write {
                    path: target.display().to_string(),
                    source: std::io::Error::other(e),
                })??;
            if expected.eq_ignore_ascii_case(&actual) {
                return Ok(target);
            }
            tracing::warn!(path = %target.display(), "cached weights do not match the digest; downloading again");
        } else {
            return Ok(target);
        }
    }
    let partial = dir.join(format!("{name}.partial"));
    let http_err = |source| FetchError::Http {
        url: url.to_string(),
        source,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .build()
        .map_err(http_err)?;
    let resp = client.get(url).send().await.map_err(http_err)?;
    if !resp.status().is_success() {
        return Err(FetchError::HttpStatus {
            url: url.to_string(),
            status: resp.status().as_u16(),
        });
    }
    let total = resp.content_length();
    metrics
        .fetch_bytes_total
        .set(total.map_or(0, |t| i64::try_from(t).unwrap_or(i64::MAX)));
    tracing::info!(url, bytes_total = total, path = %partial.display(), "downloading weights");
    let mut file = tokio::fs::File::create(&partial)
        .await
        .map_err(write_err(&partial))?;
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    let mut last_log = Instant::now();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(http_err)?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(write_err(&partial))?;
        done += chunk.len() as u64;
        metrics
            .fetch_bytes_done
            .set(i64::try_from(done).unwrap_or(i64::MAX));
        if last_log.elapsed() >= LOG_EVERY {
            tracing::info!(
                bytes_done = done,
                bytes_total = total,
                "downloading weights"
            );
            last_log = Instant::now();
        }
    }
    file.flush().await.map_err(write_err(&partial))?;
    file.sync_all().await.map_err(write_err(&partial))?;
    drop(file);
    if let Some(expected) = total
        && expected != done
    {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(FetchError::ShortDownload {
            url: url.to_string(),
            got: done,
            expected,
        });
    }
    let actual = hex::encode(hasher.finalize());
    if let Some(expected) = sha256
        && let Err(e) = check_digest(&partial, expected, &actual)
    {
        let _ = tokio::fs::remove_file(&partial).await;
        return Err(match e {
            FetchError::DigestMismatch {
                expected, actual, ..
            } => FetchError::DigestMismatch {
                path: url.to_string(),
                expected,
                actual,
            },
            other => other,
        });
    }
    tokio::fs::rename(&partial, &target)
        .await
        .map_err(write_err(&target))?;
    tracing::info!(bytes = done, sha256 = %actual, path = %target.display(), "weights downloaded");
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        assert_eq!(
            ModelSource::parse("file:///m/a.gguf").unwrap(),
            ModelSource::Local("/m/a.gguf".into())
        );
        assert_eq!(
            ModelSource::parse("rel/a.gguf").unwrap(),
            ModelSource::Local("rel/a.gguf".into())
        );
        assert!(matches!(
            ModelSource::parse("https://x/y.gguf").unwrap(),
            ModelSource::Http(_)
        ));
        let err = ModelSource::parse("hf://org/repo/file.gguf").unwrap_err();
        assert_eq!(
            err.to_string(),
            "model URI scheme hf:// is not supported yet; use https://, http://, file:// or a local path"
        );
        assert!(matches!(
            ModelSource::parse("s3://b/k").unwrap_err(),
            FetchError::Unsupported { .. }
        ));
        assert_eq!(
            ModelSource::parse("https://h/p/SmolLM2.Q4_1.gguf?x=1")
                .unwrap()
                .default_name(),
            "SmolLM2.Q4_1"
        );
    }
}
