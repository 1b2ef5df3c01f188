//! e2e: the operator against the local control plane, with real runtime pods on fake GPU nodes.
//!
//! Each test starts its own operator process (`target/debug/modelfleet-operator`, built by
//! `make e2e`) watching only its namespace, with the admin kubeconfig; the chart's RBAC is tested
//! by the chart's own e2e. Runtime pods run the real `modelfleet-runtime` binary through the pod
//! runner, and load the real SmolLM2 weights from the model store on 127.0.0.1:18080.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use modelfleet_crds::ModelService;
use modelfleet_e2e::fixtures::{
    MODEL_URI, Operator, READY_TIMEOUT, SHA256, condition, enforce_restricted, install_crd,
    is_ready, model_service, wait_ms, wait_until,
};
use modelfleet_e2e::{kubectl, kubectl_ok, with_temp_ns};

/// The SmolLM2 sample on one fake H100 per replica.
fn smollm2_spec(sha256: &str) -> serde_json::Value {
    serde_json::json!({
        "model": {"uri": MODEL_URI, "sha256": sha256, "quantization": "Q4_1", "servedName": "smollm2"},
        "runtime": {"maxConcurrency": 2, "contextLength": 1024},
        "resources": {"accelerator": {"count": 1, "product": "NVIDIA-H100-80GB-HBM3"}, "cpu": "1", "memory": "1Gi"},
        "replicas": 1,
    })
}

#[tokio::test]
async fn sample_serves_scales_rolls_idles_and_is_collected() {
    with_temp_ns("op-life", |client, ns| async move {
        install_crd()?;
        enforce_restricted(&client, &ns).await?;
        let op = Operator::start(&ns, &[]).await?;
        let mss: Api<ModelService> = Api::namespaced(client.clone(), &ns);
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        mss.create(
            &PostParams::default(),
            &model_service("smollm2", smollm2_spec(SHA256))?,
        )
        .await?;

        // Ready once the runtime pod is; `kubectl wait` agrees.
        let ms = wait_ms(&mss, "smollm2", READY_TIMEOUT, "Ready=True", is_ready).await?;
        let status = ms.status.clone().context("status")?;
        assert_eq!(status.ready_replicas, 1);
        assert_eq!(status.observed_generation, ms.metadata.generation);
        assert_eq!(
            status.selector.as_deref(),
            Some("app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=modelfleet-runtime")
        );
        kubectl_ok(&[
            "wait",
            "-n",
            &ns,
            "--for=condition=Ready",
            "ms/smollm2",
            "--timeout=10s",
        ])?;
        // What the runtime read in the GGUF header reaches status.model.
        let ms = wait_ms(
            &mss,
            "smollm2",
            Duration::from_secs(30),
            "status.model",
            |m| {
                m.status
                    .as_ref()
                    .and_then(|s| s.model.as_ref())
                    .is_some_and(|m| m.quantization.as_deref() == Some("Q4_1"))
            },
        )
        .await?;
        let model = ms.status.and_then(|s| s.model).context("model")?;
        assert_eq!(model.architecture.as_deref(), Some("llama"));
        assert_eq!(model.weight_bytes, Some(98_362_432));
        assert!(
            model.parameter_count.is_some_and(|p| p > 100_000_000),
            "{model:?}"
        );
        let table = kubectl_ok(&["get", "ms", "-n", &ns])?;
        eprintln!("{table}");
        let header: Vec<_> = table
            .lines()
            .next()
            .context("header")?
            .split_whitespace()
            .collect();
        assert_eq!(
            &header[..6],
            ["NAME", "READY", "REPLICAS", "DESIRED", "QUANT", "P95"]
        );
        let row: Vec<_> = table
            .lines()
            .nth(1)
            .context("row")?
            .split_whitespace()
            .collect();
        assert_eq!(&row[..5], ["smollm2", "True", "1", "1", "Q4_1"], "{table}");

        // The pod runs on a fake GPU node with one GPU, and the Service selects it.
        let pod_list = pods
            .list(&ListParams::default().labels("app.kubernetes.io/instance=smollm2"))
            .await?;
        let pod = pod_list.items.first().context("a runtime pod")?;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .context("scheduled")?;
        let node = Api::<k8s_openapi::api::core::v1::Node>::all(client.clone())
            .get(&node)
            .await?;
        assert_eq!(
            node.labels()
                .get("nvidia.com/gpu.product")
                .map(String::as_str),
            Some("NVIDIA-H100-80GB-HBM3"),
            "on a fake GPU node of the requested product"
        );
        let svc = Api::<Service>::namespaced(client.clone(), &ns)
            .get("smollm2")
            .await?;
        assert_eq!(svc.owner_references()[0].kind, "ModelService");

        // The pod answers the OpenAI API on its own address.
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("pod IP")?;
        let models: serde_json::Value = reqwest::get(format!("http://{ip}:8080/v1/models"))
            .await?
            .json()
            .await?;
        assert_eq!(models["data"][0]["id"], "smollm2", "{models}");

        // Idle: no write request at all over a minute.
        let before = op.writes().await?;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let after = op.writes().await?;
        assert_eq!(before, after, "the operator wrote while idle");

        // `kubectl scale` goes through the scale subresource to spec.replicas, then the Deployment;
        // a PodDisruptionBudget appears with the second replica.
        kubectl_ok(&["scale", "-n", &ns, "ms/smollm2", "--replicas=2"])?;
        let d = deployments.clone();
        wait_until(Duration::from_secs(30), "Deployment scaled to 2", || {
            let d = d.clone();
            async move { Ok(d.get("smollm2").await?.spec.and_then(|s| s.replicas) == Some(2)) }
        })
        .await?;
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        let p = pdbs.clone();
        wait_until(Duration::from_secs(30), "PDB created", || {
            let p = p.clone();
            async move { Ok(p.get_opt("smollm2").await?.is_some()) }
        })
        .await?;
        wait_ms(&mss, "smollm2", READY_TIMEOUT, "2 replicas ready", |m| {
            is_ready(m) && m.status.as_ref().is_some_and(|s| s.ready_replicas == 2)
        })
        .await?;

        // A spec change rolls the Deployment (a new pod template).
        let generation = deployments.get("smollm2").await?.metadata.generation;
        let patch = serde_json::json!({"spec": {"runtime": {"maxConcurrency": 3}}});
        mss.patch("smollm2", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        let d = deployments.clone();
        wait_until(
            Duration::from_secs(30),
            "Deployment template updated",
            || {
                let d = d.clone();
                async move {
                    let dep = d.get("smollm2").await?;
                    let args = dep
                        .spec
                        .and_then(|s| s.template.spec)
                        .map(|p| p.containers[0].args.clone().unwrap_or_default())
                        .unwrap_or_default();
                    Ok(dep.metadata.generation > generation
                        && args
                            .windows(2)
                            .any(|w| w[0] == "--max-concurrency" && w[1] == "3"))
                }
            },
        )
        .await?;
        let ms = wait_ms(
            &mss,
            "smollm2",
            READY_TIMEOUT,
            "Ready after the rollout",
            |m| {
                is_ready(m)
                    && m.status.as_ref().and_then(|s| s.observed_generation)
                        == m.metadata.generation
            },
        )
        .await?;
        assert_eq!(ms.status.map(|s| s.ready_replicas), Some(2));

        // Deleting the ModelService deletes its children (owner references, garbage collector).
        mss.delete("smollm2", &DeleteParams::foreground()).await?;
        let (d, s, p) = (
            deployments.clone(),
            Api::<Service>::namespaced(client.clone(), &ns),
            pdbs.clone(),
        );
        wait_until(
            Duration::from_secs(60),
            "children garbage-collected",
            || {
                let (d, s, p) = (d.clone(), s.clone(), p.clone());
                async move {
                    Ok(d.get_opt("smollm2").await?.is_none()
                        && s.get_opt("smollm2").await?.is_none()
                        && p.get_opt("smollm2").await?.is_none())
                }
            },
        )
        .await?;
        drop(op);
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn more_gpus_than_any_node_reports_unschedulable_within_30s() {
    with_temp_ns("op-gpu", |client, ns| async move {
        install_crd()?;
        let _op = Operator::start(&ns, &[]).await?;
        let mss: Api<ModelService> = Api::namespaced(client.clone(), &ns);
        let mut spec = smollm2_spec(SHA256);
        spec["resources"]["accelerator"]["count"] = serde_json::json!(16);
        mss.create(&PostParams::default(), &model_service("too-big", spec)?)
            .await?;
        let ms = wait_ms(
            &mss,
            "too-big",
            Duration::from_secs(30),
            "Unschedulable",
            |m| condition(m, "Ready").is_some_and(|(s, r, _)| s == "False" && r == "Unschedulable"),
        )
        .await?;
        let (status, reason, message) = condition(&ms, "Stalled").context("Stalled")?;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "Unschedulable")
        );
        assert!(message.contains("Insufficient nvidia.com/gpu"), "{message}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn wrong_digest_stalls_with_the_runtime_words_and_never_serves() {
    with_temp_ns("op-digest", |client, ns| async move {
        install_crd()?;
        let _op = Operator::start(&ns, &[]).await?;
        let mss: Api<ModelService> = Api::namespaced(client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let wrong = "0".repeat(64);
        mss.create(
            &PostParams::default(),
            &model_service("bad-digest", smollm2_spec(&wrong))?,
        )
        .await?;
        // Watch readiness the whole time: no pod of it may ever be Ready.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            ensure!(
                Instant::now() < deadline,
                "no DigestMismatch within {READY_TIMEOUT:?}"
            );
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/instance=bad-digest"))
                .await?;
            for p in &list.items {
                let ready =
                    modelfleet_e2e::pod_condition(p, "Ready").is_some_and(|c| c.status == "True");
                ensure!(
                    !ready,
                    "pod {} became Ready with weights that fail their digest",
                    p.name_any()
                );
            }
            let ms = mss.get("bad-digest").await?;
            if let Some((status, reason, message)) = condition(&ms, "Stalled")
                && status == "True"
            {
                assert_eq!(reason, "DigestMismatch", "{message}");
                assert!(
                    message.contains(&wrong[..16]) || message.to_lowercase().contains("digest"),
                    "{message}"
                );
                assert_eq!(
                    ms.status.and_then(|s| s.weights).map(|w| w.phase),
                    Some(modelfleet_crds::WeightsPhase::Failed)
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    })
    .await;
}

/// Waits until `id` holds the operator's leader-election Lease.
async fn wait_for_leader(leases: &Api<Lease>, id: &str, timeout: Duration) -> anyhow::Result<()> {
    wait_until(timeout, &format!("{id} holds the lease"), || async move {
        Ok(leases
            .get_opt("modelfleet-operator")
            .await?
            .and_then(|l| l.spec?.holder_identity)
            .as_deref()
            == Some(id))
    })
    .await
}

#[tokio::test]
async fn a_second_operator_takes_over_the_lease_within_17s() {
    with_temp_ns("op-lease", |client, ns| async move {
        install_crd()?;
        let lease_args = |id: &str| {
            vec![
                "--leader-election-namespace".to_owned(),
                ns.clone(),
                "--pod-name".to_owned(),
                id.to_owned(),
            ]
        };
        let a_args = lease_args("operator-a");
        let a =
            Operator::start(&ns, &a_args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        wait_for_leader(&leases, "operator-a", Duration::from_secs(20)).await?;
        let b_args = lease_args("operator-b");
        let _b =
            Operator::start(&ns, &b_args.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        let mss: Api<ModelService> = Api::namespaced(client.clone(), &ns);
        let mut spec = smollm2_spec(SHA256);
        spec["replicas"] = serde_json::json!(0);
        mss.create(&PostParams::default(), &model_service("leased", spec)?)
            .await?;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let d = deployments.clone();
        wait_until(Duration::from_secs(20), "the leader reconciles", || {
            let d = d.clone();
            async move { Ok(d.get_opt("leased").await?.is_some()) }
        })
        .await?;

        // Kill the leader without letting it release anything; B must lead within 17 s.
        let mut a = a;
        a.kill().await?;
        let killed = Instant::now();
        wait_for_leader(&leases, "operator-b", Duration::from_secs(17)).await?;
        eprintln!(
            "operator-b took over {:?} after operator-a was killed",
            killed.elapsed()
        );
        // B reconciles: a change reaches the Deployment, and there is still exactly one of each child.
        let patch = serde_json::json!({"spec": {"replicas": 1}});
        mss.patch("leased", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        let d = deployments.clone();
        wait_until(
            Duration::from_secs(20),
            "operator-b applies the change",
            || {
                let d = d.clone();
                async move { Ok(d.get("leased").await?.spec.and_then(|s| s.replicas) == Some(1)) }
            },
        )
        .await?;
        assert_eq!(
            deployments.list(&ListParams::default()).await?.items.len(),
            1
        );
        assert_eq!(
            Api::<Service>::namespaced(client.clone(), &ns)
                .list(&ListParams::default())
                .await?
                .items
                .len(),
            1
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn kubectl_explain_documents_the_spec() {
    // Skips with the harness when there is no control plane.
    if modelfleet_e2e::client().await.is_none() {
        return;
    }
    install_crd().unwrap();
    let out = kubectl(&["explain", "modelservice.spec.model.sha256"]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SHA-256"), "{text}");
}

#[tokio::test]
async fn an_hpa_drives_the_replica_count_through_the_scale_subresource() {
    with_temp_ns("op-hpa", |client, ns| async move {
        install_crd()?;
        let _op = Operator::start(&ns, &[]).await?;
        let mss: Api<ModelService> = Api::namespaced(client.clone(), &ns);
        // Pods that stay Pending (more GPUs than a node has) keep the CPUs free for the tests
        // running beside this one; the replica count is all this test is about.
        let mut spec = smollm2_spec(SHA256);
        spec["resources"]["accelerator"]["count"] = serde_json::json!(9);
        mss.create(&PostParams::default(), &model_service("hpa-driven", spec)?)
            .await?;
        // A real HorizontalPodAutoscaler of kube-controller-manager on the ModelService. There
        // is no metrics API here, so its CPU metric cannot be read; but the HPA controller raises
        // a target below minReplicas before it looks at metrics, through the scale subresource.
        let hpa: HorizontalPodAutoscaler = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hpa-driven"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "modelfleet.dev/v1alpha1", "kind": "ModelService", "name": "hpa-driven"},
                "minReplicas": 2,
                "maxReplicas": 3,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}],
            },
        }))?;
        let hpas: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
        hpas.create(&PostParams::default(), &hpa).await?;

        // The HPA controller syncs every 15 s.
        let ms = wait_ms(
            &mss,
            "hpa-driven",
            Duration::from_secs(60),
            "spec.replicas 2 from the HPA",
            |m| m.spec.replicas == Some(2),
        )
        .await?;
        let managers: Vec<_> = ms
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|f| f.subresource.as_deref() == Some("scale"))
            .filter_map(|f| f.manager.clone())
            .collect();
        ensure!(
            managers.iter().any(|m| m == "kube-controller-manager"),
            "spec.replicas should be written by the HPA through /scale; managers: {managers:?}"
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_until(
            Duration::from_secs(30),
            "the Deployment follows the HPA",
            || {
                let d = deployments.clone();
                async move {
                    Ok(d.get_opt("hpa-driven")
                        .await?
                        .and_then(|d| d.spec?.replicas)
                        == Some(2))
                }
            },
        )
        .await?;
        let status = hpas.get("hpa-driven").await?.status.context("HPA status")?;
        let able = status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "AbleToScale")
            .context("AbleToScale condition")?;
        assert_eq!(able.status, "True", "{able:?}");
        Ok(())
    })
    .await;
}
