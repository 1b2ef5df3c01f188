//! e2e: pods of our images on fake nodes run as real local processes (the pod runner,
//! `e2e/src/bin/podrunner.rs`, started by `make cluster-up`). These tests use the `modelfleet-exec`
//! image, which runs the container's command from the host's PATH; the real runtime binary is
//! exercised by the runtime's own e2e test once `modelfleet-runtime` exists.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, PostParams},
    runtime::wait::conditions,
};
use modelfleet_e2e::{pod_condition, pod_phase_in, wait_for, with_temp_ns};

fn exec_pod(name: &str, restart: &str, script: &str, extra: serde_json::Value) -> Result<Pod> {
    let mut container = serde_json::json!({
        "name": "main", "image": "modelfleet-exec:local",
        "command": ["sh", "-c", script],
        "env": [{"name": "MY_POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
    });
    if let (Some(c), Some(e)) = (container.as_object_mut(), extra.as_object()) {
        c.extend(e.clone());
    }
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"restartPolicy": restart, "terminationGracePeriodSeconds": 5, "containers": [container]},
    }))?)
}

fn container_state(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

#[tokio::test]
async fn exited_process_reports_exit_code_and_termination_message() {
    with_temp_ns("pr-exit", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let script = "echo \"ip=$MY_POD_IP\" > /dev/termination-log; exit 3";
        pods.create(
            &PostParams::default(),
            &exec_pod("exits", "Never", script, serde_json::json!({}))?,
        )
        .await?;
        let pod = wait_for(
            pods,
            "exits",
            Duration::from_secs(60),
            pod_phase_in(&["Failed"]),
        )
        .await?;
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .context("no pod IP")?;
        ensure!(ip.starts_with("127."), "pod IP {ip} outside loopback");
        let t = container_state(&pod)
            .and_then(|c| c.state?.terminated)
            .context("not terminated")?;
        ensure!(t.exit_code == 3, "exit code {}", t.exit_code);
        ensure!(
            t.reason.as_deref() == Some("Error"),
            "reason {:?}",
            t.reason
        );
        ensure!(
            t.message.as_deref().map(str::trim) == Some(&*format!("ip={ip}")),
            "message {:?}",
            t.message
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn failing_process_restarts_on_failure() {
    with_temp_ns("pr-restart", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        pods.create(
            &PostParams::default(),
            &exec_pod("crashes", "OnFailure", "exit 7", serde_json::json!({}))?,
        )
        .await?;
        let pod = wait_for(
            pods,
            "crashes",
            Duration::from_secs(60),
            |p: Option<&Pod>| {
                p.and_then(container_state)
                    .is_some_and(|c| c.restart_count >= 2)
            },
        )
        .await?;
        let cs = container_state(&pod).context("no container status")?;
        let last = cs
            .last_state
            .and_then(|s| s.terminated)
            .context("no lastState.terminated")?;
        ensure!(last.exit_code == 7, "last exit code {}", last.exit_code);
        Ok(())
    })
    .await;
}

/// Starts `script` (restartPolicy Always, the given grace period), waits until Ready, deletes the
/// pod and returns how long its removal took.
async fn delete_running_pod(pods: &Api<Pod>, script: &str, grace: i64) -> Result<Duration> {
    let mut pod = exec_pod("long", "Always", script, serde_json::json!({}))?;
    if let Some(spec) = pod.spec.as_mut() {
        spec.termination_grace_period_seconds = Some(grace);
    }
    pods.create(&PostParams::default(), &pod).await?;
    let pod = wait_for(
        pods.clone(),
        "long",
        Duration::from_secs(60),
        |p: Option<&Pod>| {
            p.and_then(|p| pod_condition(p, "Ready"))
                .is_some_and(|c| c.status == "True")
        },
    )
    .await?;
    ensure!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"),
        "not Running"
    );
    let uid = pod.uid().context("no uid")?;
    let t0 = std::time::Instant::now();
    pods.delete("long", &DeleteParams::default()).await?;
    tokio::time::timeout(
        Duration::from_secs(60),
        kube::runtime::wait::await_condition(pods.clone(), "long", conditions::is_deleted(&uid)),
    )
    .await
    .context("pod not removed within 60s")??;
    Ok(t0.elapsed())
}

#[tokio::test]
async fn deleted_pod_gets_sigterm_and_is_removed() {
    with_temp_ns("pr-delete", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        // Exits at once on SIGTERM: removal must come well before the 30 s grace period.
        let took = delete_running_pod(
            &pods,
            "trap 'exit 0' TERM; while true; do sleep 0.2; done",
            30,
        )
        .await?;
        ensure!(
            took < Duration::from_secs(15),
            "removal took {took:?}: SIGTERM not delivered?"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn deleted_pod_ignoring_sigterm_is_killed_after_the_grace_period() {
    with_temp_ns("pr-kill", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let took =
            delete_running_pod(&pods, "trap '' TERM; while true; do sleep 0.2; done", 3).await?;
        ensure!(
            took >= Duration::from_secs(3),
            "removed after {took:?}, before the 3 s grace period"
        );
        ensure!(
            took < Duration::from_secs(20),
            "removal took {took:?}: SIGKILL not sent?"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn ready_follows_the_readiness_probe() {
    with_temp_ns("pr-ready", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        // Serves HTTP on the pod IP only after 4 s, like a runtime loading its weights.
        let script = "sleep 4; exec python3 -m http.server 8080 --bind \"$MY_POD_IP\"";
        let probe = serde_json::json!({
            "ports": [{"name": "http", "containerPort": 8080}],
            "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1},
        });
        pods.create(
            &PostParams::default(),
            &exec_pod("server", "Always", script, probe)?,
        )
        .await?;
        let running = wait_for(
            pods.clone(),
            "server",
            Duration::from_secs(60),
            pod_phase_in(&["Running"]),
        )
        .await?;
        let ready = pod_condition(&running, "Ready").context("no Ready condition")?;
        ensure!(ready.status == "False", "Ready before the server listens");
        let pod = wait_for(
            pods,
            "server",
            Duration::from_secs(60),
            |p: Option<&Pod>| {
                p.and_then(|p| pod_condition(p, "Ready"))
                    .is_some_and(|c| c.status == "True")
            },
        )
        .await?;
        let ip = pod.status.and_then(|s| s.pod_ip).context("no pod IP")?;
        let body = reqwest::get(format!("http://{ip}:8080/")).await?.status();
        ensure!(body.is_success(), "GET on the pod IP: {body}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn process_has_exactly_its_service_account_rbac() {
    with_temp_ns("pr-rbac", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client, &ns);
        let kubectl = modelfleet_e2e::kubectl_path().display().to_string();
        let script = format!("{kubectl} get pods -n {ns} && {kubectl} get secrets -n {ns}");
        let extra = serde_json::json!({"terminationMessagePolicy": "FallbackToLogsOnError"});
        pods.create(
            &PostParams::default(),
            &exec_pod("rbac", "Never", &script, extra)?,
        )
        .await?;
        let pod = wait_for(
            pods,
            "rbac",
            Duration::from_secs(60),
            pod_phase_in(&["Failed", "Succeeded"]),
        )
        .await?;
        let t = container_state(&pod)
            .and_then(|c| c.state?.terminated)
            .context("not terminated")?;
        let msg = t.message.unwrap_or_default();
        ensure!(
            t.exit_code != 0,
            "the default ServiceAccount could list pods: {msg}"
        );
        ensure!(
            msg.contains("forbidden")
                && msg.contains(&format!("system:serviceaccount:{ns}:default")),
            "message: {msg}"
        );
        Ok(())
    })
    .await;
}
