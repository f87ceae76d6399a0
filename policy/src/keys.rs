//! Names kpool puts on pods, shared by the webhook (which sets them) and the agent (which
//! reads them).

/// Label: the broker's Kubernetes cluster.
pub const CLUSTER_LABEL: &str = "kpool.io/cluster";
/// Label: the broker's rack (`broker.rack`).
pub const RACK_LABEL: &str = "kpool.io/rack";
/// Label: the broker's zone.
pub const ZONE_LABEL: &str = "kpool.io/zone";
/// Label: the broker's Kafka id.
pub const BROKER_ID_LABEL: &str = "kpool.io/broker-id";
/// Annotation: what kpool injected, under which policy (JSON).
pub const STATUS_ANNOTATION: &str = "kpool.io/status";

/// Name of the init container that copies `kpool-probe` into the pod.
pub const PROBE_INSTALLER_NAME: &str = "kpool-probe-install";
/// Name of the emptyDir volume holding `kpool-probe`.
pub const PROBE_VOLUME_NAME: &str = "kpool-bin";
/// Where `kpool-probe` is mounted in the broker container.
pub const PROBE_DIR: &str = "/kpool/bin";
/// The probe command inside the broker container.
pub const PROBE_PATH: &str = "/kpool/bin/kpool-probe";
/// Env vars the injected probe reads (downward API); policy env names must not collide.
pub const PROBE_ENV: [&str; 3] = ["HOST_IP", "POD_NAME", "POD_NAMESPACE"];
