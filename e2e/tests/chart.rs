//! e2e: the Helm chart against the local control plane. The operator installed by the chart runs
//! as a pod (the pod runner starts `target/debug/modelfleet-operator` with a kubeconfig holding a
//! token of the chart's ServiceAccount), so it has exactly the chart's RBAC.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_apiextensions::CustomResourceDefinition;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as k8s_apiextensions;
use kube::Api;
use modelfleet_crds::ModelService;
use modelfleet_e2e::{cache_dir, kubeconfig_path, kubectl, kubectl_ok, repo_root, with_temp_ns};

fn helm_path() -> PathBuf {
    let built = cache_dir().join("bin/current/helm");
    if built.exists() {
        built
    } else {
        PathBuf::from("helm")
    }
}

fn helm(args: &[&str]) -> Result<Output> {
    std::process::Command::new(helm_path())
        .args(args)
        .env("KUBECONFIG", kubeconfig_path())
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("modelfleet-helm/cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("modelfleet-helm/config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("modelfleet-helm/data"),
        )
        .output()
        .context("failed to run helm")
}

fn helm_ok(args: &[&str]) -> Result<String> {
    let o = helm(args)?;
    ensure!(
        o.status.success(),
        "helm {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn chart() -> PathBuf {
    repo_root().join("charts/modelfleet")
}

fn sample(name: &str) -> PathBuf {
    repo_root().join("crds/samples/valid").join(name)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap_or_default()
}

/// A copy of the chart whose CRD carries one more printer column: what a release that changes
/// the CRD looks like to `helm upgrade`.
fn chart_with_changed_crd(dir: &Path) -> Result<PathBuf> {
    let out = dir.join("modelfleet");
    let status = std::process::Command::new("cp")
        .args(["-r", p(&chart()), p(&out)])
        .status()?;
    ensure!(status.success(), "failed to copy the chart");
    let crd = out.join("templates/crd.yaml");
    let text = std::fs::read_to_string(&crd)?;
    let marker = "  - additionalPrinterColumns:\n";
    ensure!(
        text.contains(marker),
        "no printer columns in the CRD template"
    );
    let changed = text.replacen(
        marker,
        "  - additionalPrinterColumns:\n    - description: Added by the upgrade test\n      jsonPath: .spec.model.servedName\n      name: Served\n      priority: 2\n      type: string\n",
        1,
    );
    std::fs::write(&crd, changed)?;
    Ok(out)
}

async fn wait_ready(
    api: &Api<ModelService>,
    name: &str,
    timeout: Duration,
) -> Result<ModelService> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(ms) = api.get_opt(name).await?
            && ms.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        {
            return Ok(ms);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    bail!("{name} not Ready within {timeout:?}")
}

#[tokio::test]
async fn install_serve_upgrade_uninstall_with_the_charts_rbac() {
    with_temp_ns("chart", |client, ns| async move {
        let release = format!("mf-{}", &ns[ns.len().saturating_sub(6)..].replace('-', ""));
        // Lint and server-side validation first: what `make chart-check` does.
        helm_ok(&["lint", "--strict", p(&chart())])?;

        // The CRD may already be installed by other tests (kubectl apply): let this release adopt
        // it, as a user adopting an existing CRD would.
        if kubectl(&["get", "crd", "modelservices.modelfleet.dev"])?
            .status
            .success()
        {
            kubectl_ok(&[
                "annotate",
                "--overwrite",
                "crd",
                "modelservices.modelfleet.dev",
                &format!("meta.helm.sh/release-name={release}"),
                &format!("meta.helm.sh/release-namespace={ns}"),
            ])?;
            kubectl_ok(&[
                "label",
                "--overwrite",
                "crd",
                "modelservices.modelfleet.dev",
                "app.kubernetes.io/managed-by=Helm",
            ])?;
        }

        // Install: the operator watches only this namespace, so tests running side by side do
        // not reconcile each other's objects.
        helm_ok(&[
            "upgrade",
            "--install",
            &release,
            p(&chart()),
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "120s",
            "--set",
            "operator.watchReleaseNamespaceOnly=true",
            "--set",
            "operator.logFormat=text",
        ])?;
        let sa = format!("system:serviceaccount:{ns}:{release}-modelfleet");

        // The chart's RBAC allows what the operator needs and refuses the rest.
        let can = |args: &[&str]| -> Result<bool> {
            let mut all = vec!["auth", "can-i"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["--as", &sa]);
            let o = kubectl(&all)?;
            Ok(String::from_utf8_lossy(&o.stdout).trim() == "yes")
        };
        ensure!(
            can(&["patch", "deployments.apps", "-n", &ns])?,
            "operator must patch Deployments"
        );
        ensure!(
            can(&[
                "patch",
                "modelservices.modelfleet.dev",
                "--subresource=status",
                "-n",
                &ns
            ])?,
            "operator must patch status"
        );
        ensure!(
            !can(&["get", "secrets", "-n", "kube-system"])?,
            "operator must not read Secrets in another namespace"
        );
        ensure!(
            !can(&["list", "secrets", "-n", &ns])?,
            "operator needs no Secrets at all"
        );
        ensure!(!can(&["create", "pods/exec", "-n", &ns])?, "no pods/exec");
        ensure!(
            !can(&["update", "modelservices.modelfleet.dev", "-n", &ns])?,
            "the operator never writes spec"
        );

        // A sample becomes Ready, reconciled by the operator pod with the chart's credentials.
        let sample_path = sample("smollm2-cpu.yaml");
        kubectl_ok(&["apply", "--server-side", "-n", &ns, "-f", p(&sample_path)])?;
        let mss: Api<ModelService> = Api::namespaced(client.clone(), &ns);
        wait_ready(&mss, "smollm2", Duration::from_secs(240)).await?;

        // The operator's pod really is refused outside its rules: its own token, through the API.
        let denied = kubectl(&["get", "secrets", "-n", "kube-system", "--as", &sa])?;
        ensure!(
            !denied.status.success(),
            "reading Secrets in kube-system must be refused"
        );
        ensure!(
            String::from_utf8_lossy(&denied.stderr).contains("forbidden"),
            "{}",
            String::from_utf8_lossy(&denied.stderr)
        );

        // GitOps: applying the same manifest again, with the operator running, changes nothing,
        // and `kubectl diff` sees no difference: the operator never writes fields the user owns.
        let dry = kubectl_ok(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-n",
            &ns,
            "-f",
            p(&sample_path),
            "-o",
            "yaml",
        ])?;
        let live = kubectl_ok(&["get", "ms", "smollm2", "-n", &ns, "-o", "yaml"])?;
        let field = |y: &str, f: &str| -> Option<String> {
            let v: serde_yaml::Value = serde_yaml::from_str(y).ok()?;
            serde_yaml::to_string(&v[f]).ok()
        };
        let generation = |y: &str| -> Option<i64> {
            let v: serde_yaml::Value = serde_yaml::from_str(y).ok()?;
            v["metadata"]["generation"].as_i64()
        };
        ensure!(
            generation(&dry) == generation(&live),
            "a re-apply would change the spec: generation {:?} vs {:?}",
            generation(&dry),
            generation(&live)
        );
        ensure!(
            field(&dry, "spec") == field(&live, "spec"),
            "a re-apply would change the spec"
        );
        let diff = kubectl(&["diff", "--server-side", "-n", &ns, "-f", p(&sample_path)])?;
        ensure!(
            diff.status.success(),
            "kubectl diff found changes:\n{}",
            String::from_utf8_lossy(&diff.stdout)
        );

        // `helm upgrade` with a changed CRD field upgrades the CRD.
        let tmp = tempdir()?;
        let changed = chart_with_changed_crd(&tmp)?;
        helm_ok(&[
            "upgrade",
            &release,
            p(&changed),
            "-n",
            &ns,
            "--wait",
            "--timeout",
            "120s",
            "--set",
            "operator.watchReleaseNamespaceOnly=true",
            "--set",
            "operator.logFormat=text",
        ])?;
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd = crds.get("modelservices.modelfleet.dev").await?;
        let columns = crd.spec.versions[0]
            .additional_printer_columns
            .clone()
            .unwrap_or_default();
        ensure!(
            columns.iter().any(|c| c.name == "Served"),
            "the upgrade did not upgrade the CRD"
        );

        // `helm uninstall` leaves the CRD and the ModelServices in place.
        helm_ok(&["uninstall", &release, "-n", &ns, "--wait"])?;
        ensure!(
            crds.get_opt("modelservices.modelfleet.dev")
                .await?
                .is_some(),
            "the CRD was deleted by uninstall"
        );
        ensure!(
            mss.get_opt("smollm2").await?.is_some(),
            "the ModelService was deleted by uninstall"
        );

        // Put the repository's CRD back for the other tests.
        kubectl_ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            p(&repo_root().join("crds/modelservice.yaml")),
        ])?;
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(())
    })
    .await;
}

fn tempdir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("modelfleet-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
