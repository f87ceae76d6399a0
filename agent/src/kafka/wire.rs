//! A structural check of response bodies before kafka-protocol decodes them.
//!
//! kafka-protocol's array decoder calls `Vec::with_capacity(n)` with the element count the
//! peer sent, before reading any element. A corrupt or hostile response announcing two
//! billion topics therefore makes it allocate hundreds of gigabytes, which aborts the
//! process (allocation failure is not a panic and cannot be caught). So every response body
//! is first walked here against the message schema: every array count and string length
//! must be backed by bytes that are actually present. Once the walk succeeds,
//! kafka-protocol's allocations are bounded by the (capped) frame size.
//!
//! The walk mirrors kafka-protocol 0.18.0's decoders field for field (same version gates,
//! same compact/non-compact switch, same varint reading); the unit tests check it against
//! kafka-protocol's own encoder for every version this client speaks. A mirror goes stale
//! silently when the crate changes, so `agent/tests/kafka_protocol_pin.rs` reads the version
//! Cargo.lock resolves and fails unless it is the one named in the sentence above: after an
//! upgrade, re-check this walk against the new decoders (and whether it is still needed),
//! then update that sentence.
//!
//! # Why this exists, and what would retire it
//!
//! In kafka-protocol 0.18.0 the only decoders that pre-allocate from the wire are
//! `Array::decode` and `CompactArray::decode` (`src/protocol/types.rs`:
//! `Vec::with_capacity(n)` before the first element); strings and bytes are taken with
//! `try_get_bytes`, which checks the bytes left. The same hazard and its fix (reject a count
//! larger than the bytes left, since every element takes at least one byte) are proposed
//! upstream, in the crate's repository (its manifest says `tychedelia/kafka-protocol-rs`;
//! the same repository now lives at `kafka-protocol-rs/kafka-protocol-rs`):
//! - <https://github.com/kafka-protocol-rs/kafka-protocol-rs/pull/152> bounds the capacity
//!   of `Array`/`CompactArray` by the remaining buffer;
//! - <https://github.com/kafka-protocol-rs/kafka-protocol-rs/pull/161> rejects such counts and
//!   caps pre-allocation in the array, record batch and record header decoders;
//! - <https://github.com/kafka-protocol-rs/kafka-protocol-rs/pull/200> rejects impossible
//!   regular and compact array lengths before allocating.
//!
//! All three were open, unmerged, when this was written. The merged
//! <https://github.com/kafka-protocol-rs/kafka-protocol-rs/pull/156> caps only the record
//! batch decoder's `reserve`, which this client never reaches (it decodes no records). Once a
//! release bounds `Array` and `CompactArray` (check `types.rs`, not only the changelog), the
//! decoders are safe on their own: this walk can go, keeping its tests' absurd-length cases
//! as tests of kafka-protocol's decoder.

/// A field's wire type.
#[derive(Debug, Clone, Copy)]
enum Ty {
    Bool,
    I8,
    I16,
    I32,
    I64,
    Uuid,
    /// A string or nullable string (compact in flexible versions).
    Str,
    /// An array of int32 (compact in flexible versions).
    I32Array,
    /// An array of structs (compact in flexible versions).
    Structs(&'static Struct),
}

/// A field present in versions `since..=until`.
#[derive(Debug)]
struct Field {
    name: &'static str,
    ty: Ty,
    since: i16,
    until: i16,
}

/// A struct: its fields in wire order, and the tagged fields kafka-protocol decodes by tag
/// (which it reads from the main buffer, so their contents must be checked too).
#[derive(Debug)]
pub(crate) struct Struct {
    name: &'static str,
    fields: &'static [Field],
    tagged: &'static [(u32, &'static str, Ty)],
}

/// A response message: its top-level struct and the first flexible version.
#[derive(Debug)]
pub(crate) struct Schema {
    root: &'static Struct,
    flexible_since: i16,
}

const ALL: i16 = i16::MAX;

const fn f(name: &'static str, ty: Ty, since: i16) -> Field {
    Field {
        name,
        ty,
        since,
        until: ALL,
    }
}

// ---- ApiVersionsResponse (versions 0-4, flexible from 3) ----

static API_VERSION: Struct = Struct {
    name: "ApiVersion",
    fields: &[
        f("api_key", Ty::I16, 0),
        f("min_version", Ty::I16, 0),
        f("max_version", Ty::I16, 0),
    ],
    tagged: &[],
};
static SUPPORTED_FEATURE: Struct = Struct {
    name: "SupportedFeatureKey",
    fields: &[
        f("name", Ty::Str, 0),
        f("min_version", Ty::I16, 0),
        f("max_version", Ty::I16, 0),
    ],
    tagged: &[],
};
static FINALIZED_FEATURE: Struct = Struct {
    name: "FinalizedFeatureKey",
    fields: &[
        f("name", Ty::Str, 0),
        f("max_version_level", Ty::I16, 0),
        f("min_version_level", Ty::I16, 0),
    ],
    tagged: &[],
};
static API_VERSIONS_RESPONSE: Struct = Struct {
    name: "ApiVersionsResponse",
    fields: &[
        f("error_code", Ty::I16, 0),
        f("api_keys", Ty::Structs(&API_VERSION), 0),
        f("throttle_time_ms", Ty::I32, 1),
    ],
    tagged: &[
        (0, "supported_features", Ty::Structs(&SUPPORTED_FEATURE)),
        (1, "finalized_features_epoch", Ty::I64),
        (2, "finalized_features", Ty::Structs(&FINALIZED_FEATURE)),
        (3, "zk_migration_ready", Ty::Bool),
    ],
};
/// ApiVersionsResponse.
pub(crate) static API_VERSIONS: Schema = Schema {
    root: &API_VERSIONS_RESPONSE,
    flexible_since: 3,
};

// ---- MetadataResponse (versions 0-13, flexible from 9) ----

static METADATA_BROKER: Struct = Struct {
    name: "MetadataResponseBroker",
    fields: &[
        f("node_id", Ty::I32, 0),
        f("host", Ty::Str, 0),
        f("port", Ty::I32, 0),
        f("rack", Ty::Str, 1),
    ],
    tagged: &[],
};
static METADATA_PARTITION: Struct = Struct {
    name: "MetadataResponsePartition",
    fields: &[
        f("error_code", Ty::I16, 0),
        f("partition_index", Ty::I32, 0),
        f("leader_id", Ty::I32, 0),
        f("leader_epoch", Ty::I32, 7),
        f("replica_nodes", Ty::I32Array, 0),
        f("isr_nodes", Ty::I32Array, 0),
        f("offline_replicas", Ty::I32Array, 5),
    ],
    tagged: &[],
};
static METADATA_TOPIC: Struct = Struct {
    name: "MetadataResponseTopic",
    fields: &[
        f("error_code", Ty::I16, 0),
        f("name", Ty::Str, 0),
        f("topic_id", Ty::Uuid, 10),
        f("is_internal", Ty::Bool, 1),
        f("partitions", Ty::Structs(&METADATA_PARTITION), 0),
        f("topic_authorized_operations", Ty::I32, 8),
    ],
    tagged: &[],
};
static METADATA_RESPONSE: Struct = Struct {
    name: "MetadataResponse",
    fields: &[
        f("throttle_time_ms", Ty::I32, 3),
        f("brokers", Ty::Structs(&METADATA_BROKER), 0),
        f("cluster_id", Ty::Str, 2),
        f("controller_id", Ty::I32, 1),
        f("topics", Ty::Structs(&METADATA_TOPIC), 0),
        Field {
            name: "cluster_authorized_operations",
            ty: Ty::I32,
            since: 8,
            until: 10,
        },
        f("error_code", Ty::I16, 13),
    ],
    tagged: &[],
};
/// MetadataResponse.
pub(crate) static METADATA: Schema = Schema {
    root: &METADATA_RESPONSE,
    flexible_since: 9,
};

// ---- DescribeConfigsResponse (versions 1-4, flexible from 4) ----

static CONFIG_SYNONYM: Struct = Struct {
    name: "DescribeConfigsSynonym",
    fields: &[
        f("name", Ty::Str, 0),
        f("value", Ty::Str, 0),
        f("source", Ty::I8, 0),
    ],
    tagged: &[],
};
static CONFIG_ENTRY: Struct = Struct {
    name: "DescribeConfigsResourceResult",
    fields: &[
        f("name", Ty::Str, 0),
        f("value", Ty::Str, 0),
        f("read_only", Ty::Bool, 0),
        f("config_source", Ty::I8, 0),
        f("is_sensitive", Ty::Bool, 0),
        f("synonyms", Ty::Structs(&CONFIG_SYNONYM), 0),
        f("config_type", Ty::I8, 3),
        f("documentation", Ty::Str, 3),
    ],
    tagged: &[],
};
static CONFIG_RESULT: Struct = Struct {
    name: "DescribeConfigsResult",
    fields: &[
        f("error_code", Ty::I16, 0),
        f("error_message", Ty::Str, 0),
        f("resource_type", Ty::I8, 0),
        f("resource_name", Ty::Str, 0),
        f("configs", Ty::Structs(&CONFIG_ENTRY), 0),
    ],
    tagged: &[],
};
static DESCRIBE_CONFIGS_RESPONSE: Struct = Struct {
    name: "DescribeConfigsResponse",
    fields: &[
        f("throttle_time_ms", Ty::I32, 0),
        f("results", Ty::Structs(&CONFIG_RESULT), 0),
    ],
    tagged: &[],
};
/// DescribeConfigsResponse (the client speaks versions 1-4 only).
pub(crate) static DESCRIBE_CONFIGS: Schema = Schema {
    root: &DESCRIBE_CONFIGS_RESPONSE,
    flexible_since: 4,
};

// ---- DescribeClusterResponse (versions 0-2, always flexible) ----

static CLUSTER_BROKER: Struct = Struct {
    name: "DescribeClusterBroker",
    fields: &[
        f("broker_id", Ty::I32, 0),
        f("host", Ty::Str, 0),
        f("port", Ty::I32, 0),
        f("rack", Ty::Str, 0),
        f("is_fenced", Ty::Bool, 2),
    ],
    tagged: &[],
};
static DESCRIBE_CLUSTER_RESPONSE: Struct = Struct {
    name: "DescribeClusterResponse",
    fields: &[
        f("throttle_time_ms", Ty::I32, 0),
        f("error_code", Ty::I16, 0),
        f("error_message", Ty::Str, 0),
        f("endpoint_type", Ty::I8, 1),
        f("cluster_id", Ty::Str, 0),
        f("controller_id", Ty::I32, 0),
        f("brokers", Ty::Structs(&CLUSTER_BROKER), 0),
        f("cluster_authorized_operations", Ty::I32, 0),
    ],
    tagged: &[],
};
/// DescribeClusterResponse.
pub(crate) static DESCRIBE_CLUSTER: Schema = Schema {
    root: &DESCRIBE_CLUSTER_RESPONSE,
    flexible_since: 0,
};

// ---- ListPartitionReassignmentsResponse (version 0, always flexible) ----

static ONGOING_PARTITION: Struct = Struct {
    name: "OngoingPartitionReassignment",
    fields: &[
        f("partition_index", Ty::I32, 0),
        f("replicas", Ty::I32Array, 0),
        f("adding_replicas", Ty::I32Array, 0),
        f("removing_replicas", Ty::I32Array, 0),
    ],
    tagged: &[],
};
static ONGOING_TOPIC: Struct = Struct {
    name: "OngoingTopicReassignment",
    fields: &[
        f("name", Ty::Str, 0),
        f("partitions", Ty::Structs(&ONGOING_PARTITION), 0),
    ],
    tagged: &[],
};
static LIST_REASSIGNMENTS_RESPONSE: Struct = Struct {
    name: "ListPartitionReassignmentsResponse",
    fields: &[
        f("throttle_time_ms", Ty::I32, 0),
        f("error_code", Ty::I16, 0),
        f("error_message", Ty::Str, 0),
        f("topics", Ty::Structs(&ONGOING_TOPIC), 0),
    ],
    tagged: &[],
};
/// ListPartitionReassignmentsResponse.
pub(crate) static LIST_REASSIGNMENTS: Schema = Schema {
    root: &LIST_REASSIGNMENTS_RESPONSE,
    flexible_since: 0,
};

// ---- AlterPartitionReassignmentsResponse (versions 0-1, always flexible) ----

static REASSIGNABLE_PARTITION_RESPONSE: Struct = Struct {
    name: "ReassignablePartitionResponse",
    fields: &[
        f("partition_index", Ty::I32, 0),
        f("error_code", Ty::I16, 0),
        f("error_message", Ty::Str, 0),
    ],
    tagged: &[],
};
static REASSIGNABLE_TOPIC_RESPONSE: Struct = Struct {
    name: "ReassignableTopicResponse",
    fields: &[
        f("name", Ty::Str, 0),
        f(
            "partitions",
            Ty::Structs(&REASSIGNABLE_PARTITION_RESPONSE),
            0,
        ),
    ],
    tagged: &[],
};
static ALTER_REASSIGNMENTS_RESPONSE: Struct = Struct {
    name: "AlterPartitionReassignmentsResponse",
    fields: &[
        f("throttle_time_ms", Ty::I32, 0),
        f("allow_replication_factor_change", Ty::Bool, 1),
        f("error_code", Ty::I16, 0),
        f("error_message", Ty::Str, 0),
        f("responses", Ty::Structs(&REASSIGNABLE_TOPIC_RESPONSE), 0),
    ],
    tagged: &[],
};
/// AlterPartitionReassignmentsResponse.
pub(crate) static ALTER_REASSIGNMENTS: Schema = Schema {
    root: &ALTER_REASSIGNMENTS_RESPONSE,
    flexible_since: 0,
};

// ---- IncrementalAlterConfigsResponse (versions 0-1, flexible from 1) ----

static ALTER_CONFIGS_RESOURCE_RESPONSE: Struct = Struct {
    name: "AlterConfigsResourceResponse",
    fields: &[
        f("error_code", Ty::I16, 0),
        f("error_message", Ty::Str, 0),
        f("resource_type", Ty::I8, 0),
        f("resource_name", Ty::Str, 0),
    ],
    tagged: &[],
};
static INCREMENTAL_ALTER_CONFIGS_RESPONSE: Struct = Struct {
    name: "IncrementalAlterConfigsResponse",
    fields: &[
        f("throttle_time_ms", Ty::I32, 0),
        f(
            "responses",
            Ty::Structs(&ALTER_CONFIGS_RESOURCE_RESPONSE),
            0,
        ),
    ],
    tagged: &[],
};
/// IncrementalAlterConfigsResponse.
pub(crate) static INCREMENTAL_ALTER_CONFIGS: Schema = Schema {
    root: &INCREMENTAL_ALTER_CONFIGS_RESPONSE,
    flexible_since: 1,
};

// ---- ElectLeadersResponse (versions 0-2, flexible from 2) ----

static ELECTION_PARTITION_RESULT: Struct = Struct {
    name: "PartitionResult",
    fields: &[
        f("partition_id", Ty::I32, 0),
        f("error_code", Ty::I16, 0),
        f("error_message", Ty::Str, 0),
    ],
    tagged: &[],
};
static REPLICA_ELECTION_RESULT: Struct = Struct {
    name: "ReplicaElectionResult",
    fields: &[
        f("topic", Ty::Str, 0),
        f(
            "partition_result",
            Ty::Structs(&ELECTION_PARTITION_RESULT),
            0,
        ),
    ],
    tagged: &[],
};
static ELECT_LEADERS_RESPONSE: Struct = Struct {
    name: "ElectLeadersResponse",
    fields: &[
        f("throttle_time_ms", Ty::I32, 0),
        f("error_code", Ty::I16, 1),
        f(
            "replica_election_results",
            Ty::Structs(&REPLICA_ELECTION_RESULT),
            0,
        ),
    ],
    tagged: &[],
};
/// ElectLeadersResponse.
pub(crate) static ELECT_LEADERS: Schema = Schema {
    root: &ELECT_LEADERS_RESPONSE,
    flexible_since: 2,
};

/// Walk `body` as `schema` at `version`; the walk must consume every byte. Errors name the
/// field and byte offset where the body stopped making sense.
pub(crate) fn check(schema: &Schema, version: i16, body: &[u8]) -> Result<(), String> {
    let mut w = Walker {
        buf: body,
        pos: 0,
        version,
        flexible: version >= schema.flexible_since,
    };
    w.walk_struct(schema.root)?;
    if w.pos != body.len() {
        return Err(format!(
            "{} trailing bytes after the {} body ({} bytes)",
            body.len() - w.pos,
            schema.root.name,
            body.len()
        ));
    }
    Ok(())
}

struct Walker<'a> {
    buf: &'a [u8],
    pos: usize,
    version: i16,
    flexible: bool,
}

impl<'a> Walker<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{what} at byte {} needs {n} bytes, only {} left",
                self.pos,
                self.remaining()
            ));
        }
        let buf = self.buf;
        let start = self.pos;
        self.pos += n;
        Ok(&buf[start..self.pos])
    }

    fn i16(&mut self, what: &str) -> Result<i16, String> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &str) -> Result<i32, String> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Exactly kafka-protocol's UnsignedVarInt decoding: at most 5 bytes, bits past 32
    /// dropped, so the walk consumes the same bytes its decoder will.
    fn uvarint(&mut self, what: &str) -> Result<u32, String> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = u32::from(self.take(1, what)?[0]);
            value |= (b & 0x7f) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Ok(value)
    }

    /// The element count of an array (`None` for a null array).
    fn array_len(&mut self, what: &str) -> Result<Option<usize>, String> {
        let at = self.pos;
        let n = if self.flexible {
            match self.uvarint(what)? {
                0 => None,
                n => Some((n - 1) as usize),
            }
        } else {
            match self.i32(what)? {
                -1 => None,
                n if n >= 0 => Some(n as usize),
                n => return Err(format!("{what} at byte {at}: negative array length {n}")),
            }
        };
        Ok(n)
    }

    fn string(&mut self, what: &str) -> Result<(), String> {
        let at = self.pos;
        let len = if self.flexible {
            match self.uvarint(what)? {
                0 => return Ok(()),
                n => (n - 1) as usize,
            }
        } else {
            match self.i16(what)? {
                -1 => return Ok(()),
                n if n >= 0 => n as usize,
                n => return Err(format!("{what} at byte {at}: negative string length {n}")),
            }
        };
        self.take(len, what).map(|_| ())
    }

    fn walk_ty(&mut self, ty: Ty, what: &str) -> Result<(), String> {
        match ty {
            Ty::Bool | Ty::I8 => self.take(1, what).map(|_| ()),
            Ty::I16 => self.take(2, what).map(|_| ()),
            Ty::I32 => self.take(4, what).map(|_| ()),
            Ty::I64 => self.take(8, what).map(|_| ()),
            Ty::Uuid => self.take(16, what).map(|_| ()),
            Ty::Str => self.string(what),
            Ty::I32Array => {
                let at = self.pos;
                if let Some(n) = self.array_len(what)? {
                    let bytes = n.checked_mul(4).filter(|&b| b <= self.remaining());
                    match bytes {
                        Some(b) => {
                            self.pos += b;
                        }
                        None => {
                            return Err(format!(
                                "{what} at byte {at} announces {n} int32 elements, \
                                 but only {} bytes are left",
                                self.remaining()
                            ));
                        }
                    }
                }
                Ok(())
            }
            Ty::Structs(s) => {
                let at = self.pos;
                if let Some(n) = self.array_len(what)? {
                    // Every struct here encodes to at least one byte, so a count above the
                    // bytes left is a lie; checking first also bounds the loop below.
                    if n > self.remaining() {
                        return Err(format!(
                            "{what} at byte {at} announces {n} {} elements, \
                             but only {} bytes are left",
                            s.name,
                            self.remaining()
                        ));
                    }
                    for _ in 0..n {
                        self.walk_struct(s)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn walk_struct(&mut self, s: &Struct) -> Result<(), String> {
        for field in s.fields {
            if self.version >= field.since && self.version <= field.until {
                let what = format!("{}.{}", s.name, field.name);
                self.walk_ty(field.ty, &what)?;
            }
        }
        if self.flexible {
            let what = format!("{} tagged fields", s.name);
            let count = self.uvarint(&what)?;
            for _ in 0..count {
                let tag = self.uvarint(&what)?;
                let size = self.uvarint(&what)? as usize;
                let start = self.pos;
                match s.tagged.iter().find(|(t, _, _)| *t == tag) {
                    Some((_, name, ty)) => {
                        let what = format!("{}.{name} (tag {tag})", s.name);
                        // The known field must fill exactly its announced size, as the
                        // decoder reads it in place and ignores the size.
                        let mut inner = Walker {
                            buf: self.take(size, &what)?,
                            pos: 0,
                            version: self.version,
                            flexible: self.flexible,
                        };
                        inner.walk_ty(*ty, &what)?;
                        if inner.pos != size {
                            return Err(format!(
                                "{what} at byte {start}: announced {size} bytes, holds {}",
                                inner.pos
                            ));
                        }
                    }
                    None => {
                        self.take(size, &what)?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::api_versions_response::{
        ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
    };
    use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
    };
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, DescribeClusterResponse, DescribeConfigsResponse,
        ListPartitionReassignmentsResponse, MetadataResponse, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_owned())
    }

    fn encode<M: Encodable>(m: &M, v: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        m.encode(&mut buf, v).expect("encode");
        buf.to_vec()
    }

    /// Encode with kafka-protocol, walk, and decode back: the walk must accept exactly the
    /// bytes the encoder wrote, and every proper prefix must be rejected.
    fn roundtrip<M: Encodable + Decodable>(schema: &Schema, m: &M, v: i16) {
        let bytes = encode(m, v);
        check(schema, v, &bytes).unwrap_or_else(|e| panic!("v{v}: {e}"));
        M::decode(&mut bytes::Bytes::from(bytes.clone()), v).expect("decode");
        for cut in 0..bytes.len() {
            assert!(
                check(schema, v, &bytes[..cut]).is_err(),
                "v{v} prefix {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(check(schema, v, &longer).is_err(), "v{v} trailing byte");
    }

    fn metadata(v: i16) -> MetadataResponse {
        let mut m = MetadataResponse::default();
        m.brokers = vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(s("b1"))
                .with_port(9092)
                .with_rack(if v >= 1 { Some(s("a-z1")) } else { None }),
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(2))
                .with_host(s("b2"))
                .with_port(9093),
        ];
        if v >= 2 {
            m.cluster_id = Some(s("cluster"));
        }
        if v >= 1 {
            m.controller_id = BrokerId(1);
        }
        if (8..=10).contains(&v) {
            m.cluster_authorized_operations = 5;
        }
        m.topics = vec![
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(s("orders"))))
                .with_is_internal(v >= 1)
                .with_partitions(vec![
                    MetadataResponsePartition::default()
                        .with_partition_index(0)
                        .with_leader_id(BrokerId(1))
                        .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
                        .with_isr_nodes(vec![BrokerId(1)])
                        .with_offline_replicas(if v >= 5 { vec![BrokerId(2)] } else { vec![] }),
                    MetadataResponsePartition::default().with_error_code(5),
                ]),
            MetadataResponseTopic::default()
                .with_error_code(3)
                .with_name(Some(TopicName(s("gone")))),
        ];
        m
    }

    #[test]
    fn metadata_walk_matches_kafka_protocol_in_every_version() {
        for v in 0..=13 {
            roundtrip(&METADATA, &metadata(v), v);
        }
    }

    #[test]
    fn api_versions_walk_matches_kafka_protocol_in_every_version() {
        for v in 0..=4 {
            let mut m = ApiVersionsResponse::default().with_api_keys(vec![
                ApiVersion::default()
                    .with_api_key(3)
                    .with_min_version(0)
                    .with_max_version(12),
                ApiVersion::default().with_api_key(18).with_max_version(3),
            ]);
            if v >= 3 {
                m.supported_features = vec![
                    SupportedFeatureKey::default()
                        .with_name(s("metadata.version"))
                        .with_min_version(1)
                        .with_max_version(20),
                ];
                m.finalized_features_epoch = 7;
                m.finalized_features = vec![
                    FinalizedFeatureKey::default()
                        .with_name(s("metadata.version"))
                        .with_max_version_level(20)
                        .with_min_version_level(20),
                ];
                m.zk_migration_ready = true;
            }
            roundtrip(&API_VERSIONS, &m, v);
        }
    }

    #[test]
    fn describe_configs_walk_matches_kafka_protocol_in_every_version() {
        for v in 1..=4 {
            let entry = DescribeConfigsResourceResult::default()
                .with_name(s("min.insync.replicas"))
                .with_value(Some(s("2")))
                .with_config_source(1)
                .with_synonyms(vec![
                    DescribeConfigsSynonym::default()
                        .with_name(s("min.insync.replicas"))
                        .with_value(Some(s("2")))
                        .with_source(1),
                ])
                .with_config_type(if v >= 3 { 3 } else { 0 })
                .with_documentation(if v >= 3 { Some(s("doc")) } else { None });
            let m = DescribeConfigsResponse::default().with_results(vec![
                DescribeConfigsResult::default()
                    .with_resource_type(2)
                    .with_resource_name(s("orders"))
                    .with_configs(vec![entry]),
                DescribeConfigsResult::default()
                    .with_error_code(42)
                    .with_error_message(Some(s("bad")))
                    .with_resource_type(4)
                    .with_resource_name(s("7")),
            ]);
            roundtrip(&DESCRIBE_CONFIGS, &m, v);
        }
    }

    #[test]
    fn describe_cluster_walk_matches_kafka_protocol_in_every_version() {
        for v in 0..=2 {
            let m = DescribeClusterResponse::default()
                .with_cluster_id(s("cluster"))
                .with_controller_id(BrokerId(3))
                .with_endpoint_type(1)
                .with_brokers(vec![
                    DescribeClusterBroker::default()
                        .with_broker_id(BrokerId(3))
                        .with_host(s("b3"))
                        .with_port(9092)
                        .with_rack(Some(s("b-z3"))),
                ]);
            roundtrip(&DESCRIBE_CLUSTER, &m, v);
        }
    }

    #[test]
    fn list_reassignments_walk_matches_kafka_protocol() {
        use kafka_protocol::messages::list_partition_reassignments_response::{
            OngoingPartitionReassignment, OngoingTopicReassignment,
        };
        let m = ListPartitionReassignmentsResponse::default()
            .with_error_message(Some(s("none")))
            .with_topics(vec![
                OngoingTopicReassignment::default()
                    .with_name(TopicName(s("orders")))
                    .with_partitions(vec![
                        OngoingPartitionReassignment::default()
                            .with_partition_index(4)
                            .with_replicas(vec![BrokerId(1), BrokerId(2), BrokerId(7)])
                            .with_adding_replicas(vec![BrokerId(7)])
                            .with_removing_replicas(vec![BrokerId(2)]),
                    ]),
            ]);
        roundtrip(&LIST_REASSIGNMENTS, &m, 0);
    }

    #[test]
    fn alter_reassignments_walk_matches_kafka_protocol_in_every_version() {
        use kafka_protocol::messages::AlterPartitionReassignmentsResponse;
        use kafka_protocol::messages::alter_partition_reassignments_response::{
            ReassignablePartitionResponse, ReassignableTopicResponse,
        };
        for v in 0..=1 {
            let m = AlterPartitionReassignmentsResponse::default()
                .with_allow_replication_factor_change(v == 0)
                .with_error_message(None)
                .with_responses(vec![
                    ReassignableTopicResponse::default()
                        .with_name(TopicName(s("orders")))
                        .with_partitions(vec![
                            ReassignablePartitionResponse::default()
                                .with_partition_index(3)
                                .with_error_message(None),
                            ReassignablePartitionResponse::default()
                                .with_partition_index(4)
                                .with_error_code(85)
                                .with_error_message(Some(s("no reassignment"))),
                        ]),
                ]);
            roundtrip(&ALTER_REASSIGNMENTS, &m, v);
        }
    }

    #[test]
    fn incremental_alter_configs_walk_matches_kafka_protocol_in_every_version() {
        use kafka_protocol::messages::IncrementalAlterConfigsResponse;
        use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
        for v in 0..=1 {
            let m = IncrementalAlterConfigsResponse::default().with_responses(vec![
                AlterConfigsResourceResponse::default()
                    .with_resource_type(4)
                    .with_resource_name(s("7")),
                AlterConfigsResourceResponse::default()
                    .with_error_code(3)
                    .with_error_message(Some(s("unknown topic")))
                    .with_resource_type(2)
                    .with_resource_name(s("orders")),
            ]);
            roundtrip(&INCREMENTAL_ALTER_CONFIGS, &m, v);
        }
    }

    #[test]
    fn elect_leaders_walk_matches_kafka_protocol_in_every_version() {
        use kafka_protocol::messages::ElectLeadersResponse;
        use kafka_protocol::messages::elect_leaders_response::{
            PartitionResult, ReplicaElectionResult,
        };
        for v in 0..=2 {
            let m = ElectLeadersResponse::default()
                .with_error_code(if v >= 1 { 41 } else { 0 })
                .with_replica_election_results(vec![
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(s("orders")))
                        .with_partition_result(vec![
                            PartitionResult::default().with_partition_id(0),
                            PartitionResult::default()
                                .with_partition_id(1)
                                .with_error_code(84)
                                .with_error_message(Some(s("not needed"))),
                        ]),
                ]);
            roundtrip(&ELECT_LEADERS, &m, v);
        }
    }

    #[test]
    fn absurd_array_lengths_are_rejected_before_any_allocation() {
        // MetadataResponse v1: brokers array claiming i32::MAX elements.
        let mut body = i32::MAX.to_be_bytes().to_vec();
        body.extend_from_slice(&[0; 16]);
        let err = check(&METADATA, 1, &body).expect_err("must fail");
        assert!(err.contains("announces 2147483647"), "{err}");
        // Flexible: a compact array count of u32::MAX.
        let body = [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f];
        let err = check(&METADATA, 12, &body).expect_err("must fail");
        assert!(err.contains("MetadataResponse.brokers"), "{err}");
        // int32 arrays: a replica list claiming 1e9 entries.
        let mut p = Vec::new();
        p.extend_from_slice(&0i16.to_be_bytes());
        p.extend_from_slice(&0i32.to_be_bytes());
        p.extend_from_slice(&0i32.to_be_bytes());
        p.extend_from_slice(&1_000_000_000i32.to_be_bytes());
        let mut body = 0i32.to_be_bytes().to_vec(); // no brokers
        body.extend_from_slice(&(-1i32).to_be_bytes()); // controller
        body.extend_from_slice(&1i32.to_be_bytes()); // one topic
        body.extend_from_slice(&0i16.to_be_bytes()); // error
        body.extend_from_slice(&1i16.to_be_bytes()); // name len
        body.push(b't');
        body.push(0); // internal
        body.extend_from_slice(&1i32.to_be_bytes()); // one partition
        body.extend_from_slice(&p);
        let err = check(&METADATA, 1, &body).expect_err("must fail");
        assert!(err.contains("replica_nodes"), "{err}");
    }

    #[test]
    fn negative_lengths_and_lying_tags_are_rejected() {
        assert!(check(&METADATA, 1, &(-5i32).to_be_bytes()).is_err());
        // ApiVersions v3: empty api_keys, throttle, one tagged field (tag 3 bool) whose
        // announced size (4) does not match its content (1).
        let body = [0, 0, 1, 0, 0, 0, 0, 1, 3, 4, 1, 0, 0, 0];
        let err = check(&API_VERSIONS, 3, &body).expect_err("must fail");
        assert!(err.contains("zk_migration_ready"), "{err}");
    }

    /// Flip bytes of valid responses: whatever the walk lets through, kafka-protocol's
    /// decoder must handle without panicking (it then allocates only what is present).
    #[test]
    fn mutated_valid_responses_never_panic() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut passed = 0;
        for v in [1, 5, 8, 9, 10, 12, 13] {
            let valid = encode(&metadata(v), v);
            for _ in 0..3000 {
                let mut body = valid.clone();
                for _ in 0..(next() % 3 + 1) {
                    let i = (next() as usize) % body.len();
                    body[i] = next() as u8;
                }
                if check(&METADATA, v, &body).is_ok() {
                    passed += 1;
                    let _ = MetadataResponse::decode(&mut bytes::Bytes::from(body), v);
                }
            }
        }
        assert!(
            passed > 1000,
            "the mutations should often stay well-formed: {passed}"
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // A cheap deterministic generator; the property is "returns, no panic".
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..400usize {
            let mut body = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                body.push((x >> 24) as u8);
            }
            for v in [1, 5, 9, 12, 13] {
                let _ = check(&METADATA, v, &body);
            }
            for v in [0, 3] {
                let _ = check(&API_VERSIONS, v, &body);
            }
            let _ = check(&DESCRIBE_CONFIGS, 4, &body);
            let _ = check(&DESCRIBE_CLUSTER, 1, &body);
            for v in 0..=1 {
                let _ = check(&ALTER_REASSIGNMENTS, v, &body);
                let _ = check(&INCREMENTAL_ALTER_CONFIGS, v, &body);
            }
            for v in 0..=2 {
                let _ = check(&ELECT_LEADERS, v, &body);
            }
        }
    }
}
