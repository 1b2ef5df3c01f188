//! Prints the ModelService CRD as YAML, with its "generated, do not edit" header.
//!
//! `make generate` writes its output to `crds/modelservice.yaml`; `make check-generated` compares.
fn main() -> Result<(), modelfleet_crds::Error> {
    print!("{}", modelfleet_crds::crd_yaml()?);
    Ok(())
}
