//! The Service in front of the runtime pods: one port, the OpenAI API and `/metrics`.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{PORT_NAME, child_meta, selector_labels};
use crate::controller::validate::Validated;

/// Builds the Service.
pub fn service(v: &Validated) -> Service {
    Service {
        metadata: child_meta(v),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(v)),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: v.port,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                app_protocol: Some("http".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{CPU, validated};
    use crate::build::selector_string;

    #[test]
    fn selects_the_runtime_pods_on_the_api_port() {
        let v = validated(CPU);
        let s = service(&v);
        let spec = s.spec.expect("spec");
        assert_eq!(spec.selector, Some(selector_labels(&v)));
        assert_eq!(spec.ports.expect("ports")[0].port, 8080);
        assert_eq!(
            selector_string(&v),
            "app.kubernetes.io/instance=smollm2,app.kubernetes.io/name=modelfleet-runtime"
        );
    }
}
