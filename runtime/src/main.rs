//! The inference server (issue 4): not built yet.
fn main() {}
