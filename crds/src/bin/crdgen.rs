//! Prints the ModelService CRD as YAML, with its "generated, do not edit" header: plain with no
//! argument, as the Helm chart's template with `--helm`.
//!
//! `make generate` writes both outputs (`crds/modelservice.yaml`,
//! `charts/modelfleet/templates/crd.yaml`); `make check-generated` compares them.
fn main() -> Result<(), modelfleet_crds::Error> {
    let helm = std::env::args().nth(1).as_deref() == Some("--helm");
    let text = if helm {
        modelfleet_crds::helm_crd_template()?
    } else {
        modelfleet_crds::crd_yaml()?
    };
    print!("{text}");
    Ok(())
}
