//! kpool-webhook: the injection engine, the pool guard, the admission server, and the
//! offline `inject` command built on the same engine.

pub mod admission;
pub mod audit;
pub mod guard;
pub mod inject;
pub mod metrics;
pub mod offline;
pub mod server;
