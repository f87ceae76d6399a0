//! kpool-webhook: the injection engine, and the offline `inject` command built on it.

pub mod inject;
pub mod offline;
