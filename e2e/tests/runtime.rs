//! e2e: a runtime pod on a fake GPU node runs the real `modelfleet-runtime` binary (through the
//! pod runner), fetches the SmolLM2 weights from the local model store, and becomes Ready only
//! once its `/readyz` answers; then it serves `/v1/models` on its pod IP.
//!
//! Needs `target/debug/modelfleet-runtime` (or `$MODELFLEET_BIN_DIR/modelfleet-runtime`, the
//! directory the pod runner uses; `make e2e` builds it) and the model in
//! `$MODELFLEET_CACHE/models/` (`make model`). Skipped without them unless the e2e tests are required.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use modelfleet_e2e::fixtures::{MODEL_FILE, MODEL_URI, SHA256};
use modelfleet_e2e::{
    bin_dir, cache_dir, pod_condition, pod_phase_in, required, wait_for, with_temp_ns,
};

fn prerequisites() -> Result<(), String> {
    let bin = bin_dir().join("modelfleet-runtime");
    if !bin.exists() {
        return Err(format!(
            "{} is missing (cargo build -p modelfleet-runtime)",
            bin.display()
        ));
    }
    let model = cache_dir().join("models").join(MODEL_FILE);
    if !model.exists() {
        return Err(format!("{} is missing (make model)", model.display()));
    }
    Ok(())
}

fn runtime_pod() -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": "runtime", "labels": {"app": "runtime"}},
        "spec": {
            "terminationGracePeriodSeconds": 10,
            "volumes": [{"name": "cache", "emptyDir": {}}],
            "containers": [{
                "name": "runtime",
                "image": "ghcr.io/modelfleet/modelfleet-runtime:dev",
                "args": ["serve"],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "MODELFLEET_HOST", "value": "$(POD_IP)"},
                    {"name": "MODELFLEET_PORT", "value": "8080"},
                    {"name": "MODELFLEET_MODEL_URI", "value": MODEL_URI},
                    {"name": "MODELFLEET_MODEL_SHA256", "value": SHA256},
                    {"name": "MODELFLEET_CACHE_DIR", "value": "/var/cache/modelfleet"},
                    {"name": "MODELFLEET_THREADS", "value": "1"},
                ],
                "ports": [{"name": "http", "containerPort": 8080}],
                "volumeMounts": [{"name": "cache", "mountPath": "/var/cache/modelfleet"}],
                "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
                "resources": {"limits": {"nvidia.com/gpu": "1"}},
            }],
        },
    }))?)
}

#[tokio::test]
async fn runtime_pod_runs_the_real_binary_and_is_ready_after_readyz() {
    if let Err(why) = prerequisites() {
        assert!(!required(), "runtime e2e prerequisites missing: {why}");
        eprintln!("SKIPPED: {why}");
        return;
    }
    with_temp_ns("runtime", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        pods.create(&PostParams::default(), &runtime_pod()?).await?;
        let t0 = Instant::now();
        // The first status the runner writes for a running process has Ready=False: the probe has
        // not answered yet (the weights are still being fetched and loaded).
        let running = wait_for(
            pods.clone(),
            "runtime",
            Duration::from_secs(60),
            pod_phase_in(&["Running"]),
        )
        .await?;
        let ready = pod_condition(&running, "Ready").context("no Ready condition")?;
        ensure!(
            ready.status == "False",
            "Ready as soon as the process started"
        );
        let pod = wait_for(
            pods.clone(),
            "runtime",
            Duration::from_secs(180),
            |p: Option<&Pod>| {
                p.and_then(|p| pod_condition(p, "Ready"))
                    .is_some_and(|c| c.status == "True")
            },
        )
        .await?;
        eprintln!("runtime pod Ready after {:?}", t0.elapsed());
        let status = pod.status.context("no status")?;
        let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
        ensure!(node.starts_with("gpu-node-"), "scheduled on {node}");
        let ip = status.pod_ip.context("no pod IP")?;
        ensure!(ip.starts_with("127.0.20."), "pod IP {ip}");
        let ready = reqwest::get(format!("http://{ip}:8080/readyz")).await?;
        ensure!(ready.status().is_success(), "/readyz: {}", ready.status());
        let models: serde_json::Value = reqwest::get(format!("http://{ip}:8080/v1/models"))
            .await?
            .json()
            .await?;
        ensure!(
            models.to_string().contains("SmolLM2"),
            "/v1/models: {models}"
        );
        // Deleting the pod drains the runtime on SIGTERM and removes the pod.
        pods.delete("runtime", &DeleteParams::default()).await?;
        let gone = tokio::time::timeout(Duration::from_secs(30), async {
            while pods.get_opt("runtime").await.ok().flatten().is_some() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        ensure!(
            gone.is_ok(),
            "runtime pod not removed within 30s of deletion"
        );
        Ok(())
    })
    .await;
}
