//! The autoscaler's pure parts: turning scraped runtime metrics into windowed observations
//! (`window`), deciding the replica count from them (`policy`), and what it learned as status
//! keeps it (`learned`).
//!
//! Both are free of I/O and clocks so that the controller and the simulator (`sim/`, crate
//! `modelfleet-sim`) run exactly the same code: the controller scrapes pods and patches the
//! Deployment, the simulator feeds synthetic and traced request streams.

pub mod learned;
pub mod policy;
pub mod window;
