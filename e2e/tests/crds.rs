//! e2e: the generated ModelService CRD against the real apiserver: it installs, every sample in
//! `crds/samples/valid/` is accepted and every sample in `crds/samples/invalid/` is refused with
//! the message its `# expect: <substring>` comment line names (`kubectl apply --dry-run=server`,
//! so schemas, CEL rules and strict field validation are all the apiserver's).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use modelfleet_e2e::fixtures::install_crd;
use modelfleet_e2e::{kubectl, kubectl_ok, repo_root, with_temp_ns};

/// The sample files of one kind, sorted; an empty list is a failure (the samples are part of
/// the foundation issue).
fn samples(kind: &str) -> Result<Vec<PathBuf>> {
    let dir = repo_root().join("crds/samples").join(kind);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("failed to read {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no samples in {}", dir.display());
    Ok(files)
}

/// The `# expect: <substring>` lines of a sample (all must appear in the refusal).
fn expectations(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| {
            l.trim_start()
                .strip_prefix('#')?
                .trim_start()
                .strip_prefix("expect:")
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

#[tokio::test]
async fn crd_installs() {
    with_temp_ns("crd", |_, _| async {
        install_crd()?;
        let out = kubectl_ok(&[
            "get",
            "crd",
            "modelservices.modelfleet.dev",
            "-o",
            "jsonpath={.status.acceptedNames.kind}",
        ])?;
        ensure!(out == "ModelService", "accepted kind {out:?}");
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn valid_samples_are_accepted() {
    with_temp_ns("valid", |_, ns| async move {
        install_crd()?;
        let mut failures = vec![];
        for f in samples("valid")? {
            let o = kubectl(&[
                "apply",
                "--dry-run=server",
                "-n",
                &ns,
                "-f",
                &f.display().to_string(),
            ])?;
            if !o.status.success() {
                failures.push(format!(
                    "{}: {}",
                    f.display(),
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
        }
        if !failures.is_empty() {
            bail!("valid samples refused:\n{}", failures.join("\n"));
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn invalid_samples_are_refused_with_their_message() {
    with_temp_ns("invalid", |_, ns| async move {
        install_crd()?;
        let mut failures = vec![];
        for f in samples("invalid")? {
            let expect = expectations(&f)?;
            if expect.is_empty() {
                failures.push(format!("{}: no `# expect: <substring>` line", f.display()));
                continue;
            }
            let o = kubectl(&[
                "apply",
                "--dry-run=server",
                "-n",
                &ns,
                "-f",
                &f.display().to_string(),
            ])?;
            let stderr = String::from_utf8_lossy(&o.stderr);
            if o.status.success() {
                failures.push(format!(
                    "{}: accepted, expected refusal with {expect:?}",
                    f.display()
                ));
            } else {
                for e in &expect {
                    if !stderr.contains(e.as_str()) {
                        failures.push(format!(
                            "{}: message lacks {e:?}; apiserver said: {}",
                            f.display(),
                            stderr.trim()
                        ));
                    }
                }
            }
        }
        if !failures.is_empty() {
            bail!(
                "{} invalid sample(s) not refused as expected:\n{}",
                failures.len(),
                failures.join("\n")
            );
        }
        Ok(())
    })
    .await;
}
