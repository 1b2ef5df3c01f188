//! Assertions on the generated CRD: what the apiserver will be told, checked before it is told.
//!
//! The e2e tests (`e2e/`) then apply the same CRD and samples to a real apiserver; these tests catch
//! a broken schema in seconds, without one.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test fails by panicking

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kube::CustomResourceExt;
use modelfleet_crds::{ModelService, crd_yaml};
use serde_json::Value;

fn crd() -> Value {
    serde_json::to_value(ModelService::crd()).expect("CRD serializes")
}

fn version(crd: &Value) -> &Value {
    let versions = crd["spec"]["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 1, "one served version");
    &versions[0]
}

fn schema(crd: &Value) -> &Value {
    &version(crd)["schema"]["openAPIV3Schema"]
}

#[test]
fn names_and_scope() {
    let crd = crd();
    let spec = &crd["spec"];
    assert_eq!(crd["metadata"]["name"], "modelservices.modelfleet.dev");
    assert_eq!(spec["group"], "modelfleet.dev");
    assert_eq!(spec["scope"], "Namespaced");
    assert_eq!(spec["names"]["kind"], "ModelService");
    assert_eq!(spec["names"]["shortNames"], serde_json::json!(["ms"]));
    assert_eq!(spec["names"]["categories"], serde_json::json!(["ai"]));
    let v = version(&crd);
    assert_eq!(v["name"], "v1alpha1");
    assert_eq!(v["served"], true);
    assert_eq!(v["storage"], true);
}

#[test]
fn status_and_scale_subresources() {
    let crd = crd();
    let sub = &version(&crd)["subresources"];
    assert_eq!(sub["status"], serde_json::json!({}), "status subresource");
    assert_eq!(sub["scale"]["specReplicasPath"], ".spec.replicas");
    assert_eq!(sub["scale"]["statusReplicasPath"], ".status.replicas");
    assert_eq!(sub["scale"]["labelSelectorPath"], ".status.selector");
}

#[test]
fn printer_columns() {
    let crd = crd();
    let cols = version(&crd)["additionalPrinterColumns"]
        .as_array()
        .expect("columns");
    let at = |priority: i64| -> Vec<(String, String)> {
        cols.iter()
            .filter(|c| c["priority"].as_i64().unwrap_or(0) == priority)
            .map(|c| {
                (
                    c["name"].as_str().expect("name").to_owned(),
                    c["jsonPath"].as_str().expect("path").to_owned(),
                )
            })
            .collect()
    };
    let default: Vec<_> = at(0).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        default,
        ["Ready", "Replicas", "Desired", "Quant", "P95", "Age"],
        "columns of plain `kubectl get ms`"
    );
    let wide: Vec<_> = at(1).into_iter().map(|(n, _)| n).collect();
    assert_eq!(wide, ["Objective", "Weights", "Reason", "URI"]);
    let paths: Vec<_> = at(0).into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths[0], r#".status.conditions[?(@.type=="Ready")].status"#);
    assert_eq!(paths[1], ".status.readyReplicas");
    assert_eq!(paths[2], ".status.desiredReplicas");
}

/// Every `x-kubernetes-validations` rule in the schema, with the path of the node it sits on.
fn rules(node: &Value, path: &str, out: &mut Vec<(String, String, String)>) {
    if let Some(list) = node
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for r in list {
            out.push((
                path.to_owned(),
                r["rule"].as_str().expect("rule").to_owned(),
                r["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            rules(v, &format!("{path}.{k}"), out);
        }
    }
    if let Some(items) = node.get("items") {
        rules(items, &format!("{path}[]"), out);
    }
}

#[test]
fn cel_rules() {
    let crd = crd();
    let mut found = Vec::new();
    rules(schema(&crd), "", &mut found);
    let found: BTreeSet<(String, String)> = found.into_iter().map(|(p, r, _)| (p, r)).collect();
    let duration = r"self.matches('^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$')";
    let expected: BTreeSet<(String, String)> = [
        ("", "size(self.metadata.name) <= 63".to_owned()),
        (".spec", "!(has(self.replicas) && has(self.scaling))".to_owned()),
        (".spec.model.uri", "self.matches('^(https?|hf|s3|pvc)://')".to_owned()),
        (
            ".spec.model.uri",
            "!self.startsWith('hf://') || self.matches('^hf://[^/@]+/[^/@]+/[^@]+@[A-Za-z0-9._/-]+$')".to_owned(),
        ),
        (
            ".spec.model.uri",
            "!self.startsWith('s3://') || self.matches('^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+$')".to_owned(),
        ),
        (
            ".spec.model.uri",
            "!self.startsWith('pvc://') || self.matches('^pvc://[a-z0-9]([-a-z0-9]*[a-z0-9])?/.+$')".to_owned(),
        ),
        (
            ".spec.model.uri",
            "!self.matches('^https?://') || self.matches('^https?://[^/]+/.+$')".to_owned(),
        ),
        (".spec.model.sha256", "self.matches('^[a-f0-9]{64}$')".to_owned()),
        (
            ".spec.model.servedName",
            "self.matches('^[A-Za-z0-9][A-Za-z0-9._:/-]*$')".to_owned(),
        ),
        (
            ".spec.model.credentialsSecretRef.name",
            "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')".to_owned(),
        ),
        (
            ".spec.runtime.env[].name",
            "self.matches('^[-._a-zA-Z][-._a-zA-Z0-9]*$')".to_owned(),
        ),
        (
            ".spec.resources.accelerator.resourceName",
            "self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')".to_owned(),
        ),
        (
            ".spec.resources.accelerator.product",
            "self.matches('^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$')".to_owned(),
        ),
        (
            ".spec.placement.tolerations[]",
            "self.operator != 'Exists' || !has(self.value) || self.value == ''".to_owned(),
        ),
        (".spec.scaling", "self.minReplicas <= self.maxReplicas".to_owned()),
        (
            ".spec.scaling.objective.target",
            format!("{duration} && duration(self) > duration('0s') && duration(self) <= duration('1h')"),
        ),
        (
            ".spec.scaling.scaleDownDelay",
            format!("{duration} && duration(self) >= duration('0s') && duration(self) <= duration('24h')"),
        ),
    ]
    .into_iter()
    .map(|(p, r)| (p.to_owned(), r))
    .collect();
    assert_eq!(found, expected);
}

#[test]
fn every_rule_has_a_message_naming_its_field() {
    let crd = crd();
    let mut found = Vec::new();
    rules(schema(&crd), "", &mut found);
    for (path, rule, message) in found {
        assert!(!message.is_empty(), "rule {rule} at {path} has no message");
        let leaf = path
            .trim_end_matches("[]")
            .rsplit('.')
            .next()
            .unwrap_or_default()
            .to_owned();
        assert!(
            message.contains(&leaf)
                || message.contains("spec.replicas")
                || message.contains("metadata.name"),
            "message of {path} ({message}) should name the field {leaf}"
        );
    }
}

/// Walks every node under `node`, calling `f(path, node)`.
fn walk(node: &Value, path: &str, f: &mut dyn FnMut(&str, &Value)) {
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            walk(v, &format!("{path}.{k}"), f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), f);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, &format!("{path}{{}}"), f);
    }
}

#[test]
fn every_spec_field_has_a_description() {
    let crd = crd();
    let spec = &schema(&crd)["properties"]["spec"];
    let mut missing = Vec::new();
    walk(spec, ".spec", &mut |path, node| {
        let is_container = path.ends_with("[]") || path.ends_with("{}");
        let described = node
            .get("description")
            .and_then(Value::as_str)
            .is_some_and(|d| !d.trim().is_empty());
        if !is_container && !described {
            missing.push(path.to_owned());
        }
    });
    assert!(
        missing.is_empty(),
        "fields without a description: {missing:?}"
    );
}

#[test]
fn every_spec_string_and_list_is_bounded() {
    let crd = crd();
    let spec = &schema(&crd)["properties"]["spec"];
    let mut unbounded = Vec::new();
    walk(
        spec,
        ".spec",
        &mut |path, node| match node.get("type").and_then(Value::as_str) {
            Some("string") if node.get("maxLength").is_none() && node.get("enum").is_none() => {
                unbounded.push(path.to_owned());
            }
            Some("array") if node.get("maxItems").is_none() => unbounded.push(path.to_owned()),
            Some("object")
                if node.get("additionalProperties").is_some()
                    && node.get("maxProperties").is_none() =>
            {
                unbounded.push(path.to_owned());
            }
            _ => {}
        },
    );
    assert!(
        unbounded.is_empty(),
        "unbounded strings or lists: {unbounded:?}"
    );
}

#[test]
fn schema_is_structural() {
    // https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#specifying-a-structural-schema
    let crd = crd();
    let mut problems = Vec::new();
    walk(schema(&crd), "", &mut |path, node| {
        let typed = node.get("type").is_some()
            || node.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true))
            || node.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if !typed {
            problems.push(format!("{path}: no type"));
        }
        for banned in ["$ref", "definitions", "$defs", "$schema"] {
            if node.get(banned).is_some() {
                problems.push(format!("{path}: has {banned}"));
            }
        }
        for junction in ["anyOf", "oneOf", "allOf", "not"] {
            let Some(branches) = node.get(junction) else {
                continue;
            };
            for b in branches.as_array().into_iter().flatten() {
                for k in [
                    "type",
                    "description",
                    "default",
                    "nullable",
                    "additionalProperties",
                ] {
                    if b.get(k).is_some() {
                        problems.push(format!("{path}: {junction} branch sets {k}"));
                    }
                }
            }
        }
    });
    assert!(problems.is_empty(), "not structural: {problems:?}");
}

#[test]
fn conditions_are_a_list_map_keyed_by_type() {
    let crd = crd();
    let c = &schema(&crd)["properties"]["status"]["properties"]["conditions"];
    assert_eq!(c["x-kubernetes-list-type"], "map");
    assert_eq!(c["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

#[test]
fn committed_yaml_is_current_and_has_a_header() {
    let committed = std::fs::read_to_string(repo().join("modelservice.yaml")).expect("read CRD");
    assert!(committed.starts_with("# Generated by `make generate`"));
    assert!(
        committed == crd_yaml().expect("render"),
        "crds/modelservice.yaml is stale: run `make generate`"
    );
}

fn samples(kind: &str) -> Vec<(PathBuf, String)> {
    let dir = repo().join("samples").join(kind);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .expect("samples dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read sample");
            (p, text)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no samples in {}", dir.display());
    out
}

#[test]
fn valid_samples_deserialize() {
    for (path, text) in samples("valid") {
        let ms: ModelService =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!ms.spec.model.uri.is_empty(), "{}", path.display());
        assert!(
            !(ms.spec.replicas.is_some() && ms.spec.scaling.is_some()),
            "{}",
            path.display()
        );
    }
}

/// The message the apiserver must answer an invalid sample with, from its `# expect:` line.
fn expectation(text: &str) -> Option<&str> {
    text.lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .map(str::trim)
}

#[test]
fn invalid_samples_state_their_expected_message() {
    let crd_text = serde_json::to_string(&crd()).expect("CRD");
    for (path, text) in samples("invalid") {
        let expect = expectation(&text)
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", path.display()));
        assert!(
            expect.len() > 10,
            "{}: expectation too vague",
            path.display()
        );
        // A CEL message must be the one in the CRD, so the two cannot drift apart; schema
        // messages (Required, Unsupported value, ...) come from the apiserver itself.
        let apiserver_wording = [
            "Required value",
            "Unsupported value",
            "Invalid value",
            "Too long",
            "unknown field",
        ];
        if !apiserver_wording.iter().any(|w| expect.contains(w)) {
            assert!(
                crd_text.contains(expect),
                "{}: `{expect}` is not a message of any CEL rule",
                path.display()
            );
        }
        // Every invalid sample is still YAML for a ModelService: the apiserver must be the one
        // to refuse it, not the YAML parser.
        let doc: Value = serde_yaml::from_str(&text).expect("YAML");
        assert_eq!(doc["kind"], "ModelService", "{}", path.display());
    }
}
