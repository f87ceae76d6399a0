//! The xDS control plane of the client sidecars (`kpool-mesh serve`): the same listeners
//! and mTLS clusters as the static client bootstrap, served over ADS (state of the world)
//! with endpoints by EDS, so brokers added, removed or moved reach every sidecar without a
//! restart.
//!
//! [`resources`] builds one broker's protos, [`snapshot`] a consistent versioned set,
//! [`stream`] the per-stream protocol as a pure state machine, [`server`] the tonic shell.

pub mod bootstrap;
pub mod resources;
pub mod server;
pub mod snapshot;
pub mod stream;

pub use server::{AdsService, Snapshots, XdsMetrics};
pub use snapshot::{Member, ResourceType, Snapshot, SnapshotError};
pub use stream::{Event, StreamState};
