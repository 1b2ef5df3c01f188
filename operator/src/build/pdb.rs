//! The PodDisruptionBudget: a voluntary disruption (a node drain) takes at most one replica at a
//! time. Only built with more than one replica: with one, a budget would block every drain.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, selector_labels};
use crate::controller::validate::Validated;

/// Builds the budget, or `None` when there is at most one replica.
pub fn pdb(v: &Validated) -> Option<PodDisruptionBudget> {
    (v.desired_replicas > 1).then(|| PodDisruptionBudget {
        metadata: child_meta(v),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(v)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{CPU, validated};

    #[test]
    fn only_with_more_than_one_replica() {
        let mut v = validated(CPU);
        assert!(pdb(&v).is_none());
        v.desired_replicas = 2;
        let p = pdb(&v).expect("pdb");
        assert_eq!(
            p.spec.and_then(|s| s.max_unavailable),
            Some(IntOrString::Int(1))
        );
    }
}
