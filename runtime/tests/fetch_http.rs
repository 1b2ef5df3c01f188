//! Downloads over HTTP from a local server: streamed to the cache, verified, reused, refused on a
//! digest mismatch (leaving nothing behind) and on an error status.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use modelfleet_runtime::fetch::{FetchError, ModelSource, fetch};
use modelfleet_runtime::metrics::Metrics;
use sha2::{Digest, Sha256};

async fn serve(body: Vec<u8>) -> String {
    let app = Router::new().route("/weights/m.gguf", get(move || async move { body.clone() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/weights/m.gguf")
}

#[tokio::test]
async fn downloads_verifies_and_reuses() {
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let digest = hex::encode(Sha256::digest(&body));
    let url = serve(body.clone()).await;
    let cache = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let source = ModelSource::parse(&url).unwrap();
    assert_eq!(source.default_name(), "m");

    let path = fetch(&source, Some(&digest), cache.path(), &metrics)
        .await
        .unwrap();
    assert_eq!(path, cache.path().join(format!("models/{digest}.gguf")));
    assert_eq!(std::fs::read(&path).unwrap(), body);
    assert_eq!(metrics.fetch_bytes_done.get(), 3_000_000);
    assert_eq!(metrics.fetch_bytes_total.get(), 3_000_000);
    // A second fetch reuses the verified file.
    let again = fetch(&source, Some(&digest), cache.path(), &metrics)
        .await
        .unwrap();
    assert_eq!(again, path);

    // Without a digest the file is named after the URL.
    let unverified = fetch(&source, None, cache.path(), &metrics).await.unwrap();
    assert!(
        unverified
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("url-")
    );
}

#[tokio::test]
async fn refuses_a_digest_mismatch_and_leaves_nothing() {
    let url = serve(b"not the weights you expected".to_vec()).await;
    let cache = tempfile::tempdir().unwrap();
    let wrong = "a".repeat(64);
    let err = fetch(
        &ModelSource::parse(&url).unwrap(),
        Some(&wrong),
        cache.path(),
        &Arc::new(Metrics::new()),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, FetchError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "sha256 mismatch for {url}: expected {wrong}, got "
        )),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(cache.path().join("models"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[tokio::test]
async fn refuses_an_error_status() {
    let url = serve(Vec::new()).await.replace("m.gguf", "missing.gguf");
    let cache = tempfile::tempdir().unwrap();
    let err = fetch(
        &ModelSource::parse(&url).unwrap(),
        None,
        cache.path(),
        &Arc::new(Metrics::new()),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("failed to download {url}: the server answered 404")
    );
}
