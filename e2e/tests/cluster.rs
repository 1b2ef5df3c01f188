//! e2e: the local control plane itself: versions, the fake GPU nodes, and `nvidia.com/gpu`
//! scheduling decided by the real kube-scheduler.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use modelfleet_e2e::{kubectl_ok, pod_condition, wait_for, with_temp_ns};

/// A simulated pod (kwok runs it: the image is not one of ours) asking for `gpus` GPUs.
fn gpu_pod(name: &str, gpus: u32) -> Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"containers": [{
            "name": "main", "image": "registry.example/sim:1",
            "resources": {"limits": {"nvidia.com/gpu": gpus.to_string()}},
        }]},
    }))?)
}

#[tokio::test]
async fn kubectl_reports_server_v1_36() {
    with_temp_ns("version", |_, _| async {
        let out = kubectl_ok(&["version", "-o", "json"])?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        let server = v["serverVersion"]["gitVersion"]
            .as_str()
            .context("no serverVersion")?;
        ensure!(server.starts_with("v1.36."), "server version {server}");
        let client = v["clientVersion"]["gitVersion"]
            .as_str()
            .context("no clientVersion")?;
        ensure!(client.starts_with("v1.36."), "client version {client}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn nodes_have_gpu_capacity() {
    with_temp_ns("nodes", |client, _| async move {
        let nodes = Api::<Node>::all(client)
            .list(&ListParams::default().labels("nvidia.com/gpu.present=true"))
            .await?;
        ensure!(
            nodes.items.len() >= 4,
            "expected 4 fake GPU nodes, found {}",
            nodes.items.len()
        );
        for n in nodes {
            let status = n.status.context("node without status")?;
            for q in [&status.capacity, &status.allocatable] {
                let gpus = q
                    .as_ref()
                    .and_then(|c| c.get("nvidia.com/gpu"))
                    .map(|q| q.0.clone());
                ensure!(
                    gpus.as_deref() == Some("8"),
                    "node {:?}: nvidia.com/gpu = {gpus:?}",
                    n.metadata.name
                );
            }
            let ready = status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            ensure!(ready, "node {:?} is not Ready", n.metadata.name);
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn pod_needing_more_gpus_than_any_node_stays_pending() {
    with_temp_ns("gpu-unfit", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        pods.create(&PostParams::default(), &gpu_pod("too-big", 9)?)
            .await?;
        let pod = wait_for(
            pods.clone(),
            "too-big",
            Duration::from_secs(30),
            |p: Option<&Pod>| {
                p.and_then(|p| pod_condition(p, "PodScheduled"))
                    .is_some_and(|c| c.status == "False")
            },
        )
        .await?;
        let cond = pod_condition(&pod, "PodScheduled").context("no PodScheduled condition")?;
        let msg = cond.message.unwrap_or_default();
        ensure!(
            cond.reason.as_deref() == Some("Unschedulable"),
            "reason {:?}",
            cond.reason
        );
        ensure!(
            msg.contains("Insufficient nvidia.com/gpu"),
            "scheduler message: {msg}"
        );
        ensure!(
            pod.spec.and_then(|s| s.node_name).is_none(),
            "pod was bound"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn pod_that_fits_is_scheduled_on_a_gpu_node() {
    with_temp_ns("gpu-fit", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        pods.create(&PostParams::default(), &gpu_pod("fits", 8)?)
            .await?;
        let pod = wait_for(pods, "fits", Duration::from_secs(30), |p: Option<&Pod>| {
            p.and_then(|p| pod_condition(p, "PodScheduled"))
                .is_some_and(|c| c.status == "True")
        })
        .await?;
        let node = pod.spec.and_then(|s| s.node_name).context("not bound")?;
        ensure!(node.starts_with("gpu-node-"), "bound to {node}");
        Ok(())
    })
    .await;
}
