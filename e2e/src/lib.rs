//! End-to-end tests against the local control plane (issue 3): not built yet.
