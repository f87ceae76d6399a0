//! kpool's end-to-end suite lives in `tests/`: it starts the real `kpool-certs`,
//! `kpool-webhook`, `kpool-agent` and `kpool-probe` binaries on loopback against an
//! in-process Kafka-protocol test server. This library is intentionally empty.
