//! Observe: read what exists (the Deployment, the runtime pods, how far each loading replica
//! is) and what the weights are (their size, from the model store), before deciding anything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::Api;
use kube::api::ListParams;

use crate::build::PORT_NAME;

/// Failures while observing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to read the {0} {1}")]
    Child(&'static str, String, #[source] kube::Error),
    #[error("failed to list the runtime pods of {0}")]
    Pods(String, #[source] kube::Error),
}

/// What exists for one ModelService.
#[derive(Debug, Default, Clone)]
pub struct Observed {
    pub deployment: Option<Deployment>,
    pub service: Option<Service>,
    pub pdb: Option<PodDisruptionBudget>,
    pub pods: Vec<Pod>,
    /// Download and load progress of replicas that are running but not ready yet.
    pub progress: Vec<RuntimeProgress>,
    /// What a replica read in the weights' GGUF header.
    pub model: Option<modelfleet_crds::ModelInfo>,
}

/// A replica's cold-start progress, read from its `/metrics`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RuntimeProgress {
    pub pod: String,
    pub fetch_done: u64,
    pub fetch_total: Option<u64>,
    pub load_done: u64,
    pub load_total: u64,
    pub ready: bool,
}

/// Reads the children and the runtime pods of the ModelService `name`.
pub async fn children(
    client: &kube::Client,
    ns: &str,
    name: &str,
    selector: &str,
) -> Result<Observed, Error> {
    let deployment = Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::Child("Deployment", name.to_owned(), e))?;
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::Child("Service", name.to_owned(), e))?;
    let pdb = Api::<PodDisruptionBudget>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| Error::Child("PodDisruptionBudget", name.to_owned(), e))?;
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| Error::Pods(name.to_owned(), e))?
        .items;
    Ok(Observed {
        deployment,
        service,
        pdb,
        pods,
        progress: Vec::new(),
        model: None,
    })
}

/// The `/metrics` URL of a runtime pod (its IP and the container port named `http`), with the
/// pod's name; `None` before the pod has an IP.
pub fn metrics_url(p: &Pod) -> Option<(String, String)> {
    let ip = p.status.as_ref()?.pod_ip.as_deref()?;
    let port = p
        .spec
        .as_ref()?
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .find(|port| port.name.as_deref() == Some(PORT_NAME))?
        .container_port;
    Some((
        p.metadata.name.clone().unwrap_or_default(),
        format!("http://{ip}:{port}/metrics"),
    ))
}

/// Whether the pod's phase is `Running`.
pub fn is_running(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// Whether the pod is Ready and not terminating.
pub fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The body of a GET on `url`, or `None` when it does not answer within 2 s.
async fn fetch_text(http: &reqwest::Client, url: &str) -> Option<String> {
    let response = http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    response.text().await.ok()
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (metric, value) = l.rsplit_once(' ')?;
        (metric == name).then(|| value.parse::<f64>().ok())?
    })
}

/// Scrapes each running runtime pod this reconcile needs, once: the loading ones (running, not
/// yet ready, not terminating) for their cold-start progress, and, while the model's header is
/// not known (`with_model`), every running one for it. Returns the loading pods' progress (a pod
/// that does not answer is left out, its phase then taken from the pod status, never counted as
/// zero) and the model information of the first pod, in pod order, that has read the header.
pub async fn scrape_runtimes(
    http: &reqwest::Client,
    pods: &[Pod],
    with_model: bool,
) -> (Vec<RuntimeProgress>, Option<modelfleet_crds::ModelInfo>) {
    let targets = pods.iter().filter(|p| is_running(p)).filter_map(|p| {
        let loading = !is_ready(p) && p.metadata.deletion_timestamp.is_none();
        (loading || with_model)
            .then(|| metrics_url(p))
            .flatten()
            .map(|(pod, url)| (pod, url, loading))
    });
    let scrapes = targets.map(|(pod, url, loading)| async move {
        let text = fetch_text(http, &url).await?;
        Some((pod, loading, text))
    });
    let answers: Vec<_> = futures::future::join_all(scrapes)
        .await
        .into_iter()
        .flatten()
        .collect();
    let progress = answers
        .iter()
        .filter(|(_, loading, _)| *loading)
        .map(|(pod, _, text)| parse_progress(pod.clone(), text))
        .collect();
    let model = with_model
        .then(|| {
            answers
                .iter()
                .find_map(|(_, _, text)| parse_model_info(text))
        })
        .flatten();
    (progress, model)
}

/// Reads `modelfleet_runtime_model_info{architecture=..,quantization=..} 1` and the model gauges.
pub fn parse_model_info(text: &str) -> Option<modelfleet_crds::ModelInfo> {
    let line = text
        .lines()
        .find(|l| l.starts_with("modelfleet_runtime_model_info{"))?;
    let label = |name: &str| -> Option<String> {
        let start = line.find(&format!("{name}=\""))? + name.len() + 2;
        let end = line[start..].find('"')? + start;
        Some(line[start..end].to_owned())
    };
    let positive = |name: &str| gauge(text, name).map(|v| v as i64).filter(|v| *v > 0);
    Some(modelfleet_crds::ModelInfo {
        quantization: label("quantization"),
        architecture: label("architecture"),
        weight_bytes: positive("modelfleet_runtime_weight_bytes_total"),
        parameter_count: positive("modelfleet_runtime_model_parameters"),
        context_length: positive("modelfleet_runtime_model_context_length"),
    })
}

/// Reads the runtime's cold-start gauges from Prometheus text.
pub fn parse_progress(pod: String, text: &str) -> RuntimeProgress {
    let bytes = |name: &str| gauge(text, name).map(|v| v.max(0.0) as u64);
    RuntimeProgress {
        pod,
        fetch_done: bytes("modelfleet_runtime_fetch_bytes_done").unwrap_or(0),
        fetch_total: bytes("modelfleet_runtime_fetch_bytes_total").filter(|t| *t > 0),
        load_done: bytes("modelfleet_runtime_weight_bytes_loaded").unwrap_or(0),
        load_total: bytes("modelfleet_runtime_weight_bytes_total").unwrap_or(0),
        ready: bytes("modelfleet_runtime_ready") == Some(1),
    }
}

/// Sizes of weights by URI, asked once of the model store (`HEAD`, `Content-Length`).
#[derive(Debug, Default)]
pub struct WeightSizes(Mutex<HashMap<String, u64>>);

impl WeightSizes {
    /// The size of the weights at `uri`, when the store says. Unknown sizes are asked again at the
    /// next reconcile; known ones are kept (a URI names one file: pin it with `sha256`).
    pub async fn get(&self, http: &reqwest::Client, uri: &str) -> Option<u64> {
        if let Some(size) = self.0.lock().ok()?.get(uri) {
            return Some(*size);
        }
        if !(uri.starts_with("http://") || uri.starts_with("https://")) {
            return None;
        }
        let response = http
            .head(uri)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        let size = response
            .error_for_status()
            .ok()?
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()?;
        self.0.lock().ok()?.insert(uri.to_owned(), size);
        Some(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_info_from_runtime_metrics() {
        let text = "# HELP modelfleet_runtime_model_info 1\n\
                    modelfleet_runtime_model_info{architecture=\"llama\",quantization=\"Q4_1\"} 1\n\
                    modelfleet_runtime_model_parameters 134515008\n\
                    modelfleet_runtime_model_context_length 8192\n\
                    modelfleet_runtime_weight_bytes_total 98362432\n";
        let info = parse_model_info(text).expect("info");
        assert_eq!(info.quantization.as_deref(), Some("Q4_1"));
        assert_eq!(info.architecture.as_deref(), Some("llama"));
        assert_eq!(info.parameter_count, Some(134_515_008));
        assert_eq!(info.context_length, Some(8192));
        assert_eq!(info.weight_bytes, Some(98_362_432));
        assert!(
            parse_model_info("modelfleet_runtime_ready 0\n").is_none(),
            "not verified yet"
        );
    }

    #[test]
    fn progress_from_runtime_metrics() {
        let text = "# HELP modelfleet_runtime_fetch_bytes_done Bytes\n\
                    modelfleet_runtime_fetch_bytes_done 1000\n\
                    modelfleet_runtime_fetch_bytes_total 4000\n\
                    modelfleet_runtime_weight_bytes_loaded 0\n\
                    modelfleet_runtime_weight_bytes_total 0\n\
                    modelfleet_runtime_ready 0\n";
        let p = parse_progress("p".into(), text);
        assert_eq!(p.fetch_done, 1000);
        assert_eq!(p.fetch_total, Some(4000));
        assert!(!p.ready);
        assert_eq!(p.phase(), modelfleet_crds::WeightsPhase::Downloading);
        let loaded = parse_progress(
            "p".into(),
            "modelfleet_runtime_fetch_bytes_done 4000\nmodelfleet_runtime_fetch_bytes_total 4000\n\
             modelfleet_runtime_weight_bytes_loaded 2000\nmodelfleet_runtime_weight_bytes_total 4000\n",
        );
        assert_eq!(loaded.phase(), modelfleet_crds::WeightsPhase::Loading);
    }
}
