//! Pure builders: a validated ModelService in, a child object out. One child kind per file.
//!
//! Nothing here talks to the apiserver or can fail; whatever can fail belongs in
//! `controller::validate`. Names are deterministic (the ModelService's own name), so a re-run
//! applies to the same objects, and every child carries an owner reference so that deleting the
//! ModelService garbage-collects them.

pub mod deployment;
pub mod pdb;
pub mod service;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::controller::validate::Validated;

/// Label every child and pod carries with the ModelService's name; the selector uses it.
pub const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
/// Label naming the component, so our pods are told apart from anything else with the instance label.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Value of [`NAME_LABEL`] on runtime pods.
pub const RUNTIME_NAME: &str = "modelfleet-runtime";
/// Who manages the objects (`app.kubernetes.io/managed-by`).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Name of the runtime container in every pod, and of its API port.
pub const CONTAINER_NAME: &str = "runtime";
/// Name of the API port on the container and the Service.
pub const PORT_NAME: &str = "http";

/// Labels that select the runtime pods of one ModelService.
pub fn selector_labels(v: &Validated) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME_LABEL.to_owned(), RUNTIME_NAME.to_owned()),
        (INSTANCE_LABEL.to_owned(), v.name.clone()),
    ])
}

/// The selector in the string form of `status.selector` (and `kubectl get -l`).
pub fn selector_string(v: &Validated) -> String {
    selector_labels(v)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Labels on every child and pod: the selector plus who manages them.
pub fn labels(v: &Validated) -> BTreeMap<String, String> {
    let mut l = selector_labels(v);
    l.insert(
        MANAGED_BY_LABEL.to_owned(),
        modelfleet_crds::FIELD_MANAGER.to_owned(),
    );
    l
}

/// Metadata of a child: same name and namespace as the ModelService, owned by it.
pub fn child_meta(v: &Validated) -> ObjectMeta {
    ObjectMeta {
        name: Some(v.name.clone()),
        namespace: Some(v.namespace.clone()),
        labels: Some(labels(v)),
        owner_references: Some(vec![owner_reference(v)]),
        ..ObjectMeta::default()
    }
}

/// The owner reference every child carries. `controller: true` makes the ModelService the one
/// controller of the child; `blockOwnerDeletion` lets foreground deletion wait for it.
pub fn owner_reference(v: &Validated) -> OwnerReference {
    OwnerReference {
        api_version: format!("{}/v1alpha1", modelfleet_crds::GROUP),
        kind: "ModelService".to_owned(),
        name: v.name.clone(),
        uid: v.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Small ModelServices for the builders' unit tests.
    use kube::api::ObjectMeta;
    use modelfleet_crds::ModelService;

    use crate::controller::validate::{Defaults, Validated, validate};

    /// Parses a ModelService from YAML and validates it with default operator settings.
    pub fn validated(yaml: &str) -> Validated {
        let mut ms: ModelService = serde_yaml::from_str(yaml).expect("ModelService");
        ms.metadata = ObjectMeta {
            name: Some("smollm2".into()),
            namespace: Some("ns".into()),
            uid: Some("uid-1".into()),
            generation: Some(3),
            ..ms.metadata
        };
        validate(&ms, &Defaults::for_tests(), None).expect("valid")
    }

    /// The CPU sample of the repository.
    pub const CPU: &str = include_str!("../../../crds/samples/valid/smollm2-cpu.yaml");
    /// The GPU sample of the repository.
    pub const GPU: &str = include_str!("../../../crds/samples/valid/gpu-latency-objective.yaml");
}
