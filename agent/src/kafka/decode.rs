//! Decoding a response body, the one step between the bytes a broker sends and the
//! structs the client reads: first a structural walk of the body against the API's schema
//! ([`super::wire`]: every length checked against the bytes left, so garbage is an error
//! naming the field, never a huge allocation), then kafka-protocol's decoder. The client
//! goes through [`decode_body`]; [`decode_response`] is the same step reachable from
//! outside the crate (fuzzing, tools) for the APIs and versions the client asks.

use bytes::Bytes;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsResponse, ApiKey, ApiVersionsResponse, DescribeClusterResponse,
    DescribeConfigsResponse, ElectLeadersResponse, IncrementalAlterConfigsResponse,
    ListPartitionReassignmentsResponse, MetadataResponse,
};
use kafka_protocol::protocol::Decodable;

use super::wire::{self, Schema};

/// The versions of each API the client asks, inclusive.
pub(crate) const API_VERSIONS_RANGE: (i16, i16) = (0, 3);
pub(crate) const METADATA_RANGE: (i16, i16) = (1, 13);
pub(crate) const DESCRIBE_CONFIGS_RANGE: (i16, i16) = (1, 4);
pub(crate) const DESCRIBE_CLUSTER_RANGE: (i16, i16) = (0, 2);
pub(crate) const LIST_REASSIGNMENTS_RANGE: (i16, i16) = (0, 0);
/// v1 adds `AllowReplicationFactorChange`, which the client sets to false: a rack move
/// never changes a partition's replication factor, so a request that would is refused.
pub(crate) const ALTER_REASSIGNMENTS_RANGE: (i16, i16) = (0, 1);
pub(crate) const INCREMENTAL_ALTER_CONFIGS_RANGE: (i16, i16) = (0, 1);
/// v0 elects the preferred leader only (no election type), which is the one kpool asks.
pub(crate) const ELECT_LEADERS_RANGE: (i16, i16) = (0, 2);

/// A decoded response of one of the APIs the agent asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    DescribeConfigs(DescribeConfigsResponse),
    DescribeCluster(DescribeClusterResponse),
    ListPartitionReassignments(ListPartitionReassignmentsResponse),
    AlterPartitionReassignments(AlterPartitionReassignmentsResponse),
    IncrementalAlterConfigs(IncrementalAlterConfigsResponse),
    ElectLeaders(ElectLeadersResponse),
}

/// Why a response body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{api}: {detail}")]
pub struct DecodeError {
    /// `Metadata v12`.
    pub api: String,
    pub detail: String,
}

/// The APIs the client asks and the versions it implements for each: the snapshot's five,
/// then the admin requests of `racks apply` (appended, so the fuzz seeds' API indices stay).
pub fn supported() -> [(ApiKey, (i16, i16)); 8] {
    [
        (ApiKey::ApiVersions, API_VERSIONS_RANGE),
        (ApiKey::Metadata, METADATA_RANGE),
        (ApiKey::DescribeConfigs, DESCRIBE_CONFIGS_RANGE),
        (ApiKey::DescribeCluster, DESCRIBE_CLUSTER_RANGE),
        (ApiKey::ListPartitionReassignments, LIST_REASSIGNMENTS_RANGE),
        (
            ApiKey::AlterPartitionReassignments,
            ALTER_REASSIGNMENTS_RANGE,
        ),
        (
            ApiKey::IncrementalAlterConfigs,
            INCREMENTAL_ALTER_CONFIGS_RANGE,
        ),
        (ApiKey::ElectLeaders, ELECT_LEADERS_RANGE),
    ]
}

/// Decodes `body` (a response without its frame and header) of API `key` at `version`,
/// exactly as the client does. Other APIs, versions outside the client's range, malformed
/// bodies and trailing bytes are errors.
pub fn decode_response(key: ApiKey, version: i16, body: Bytes) -> Result<Response, DecodeError> {
    let err = |detail: String| DecodeError {
        api: super::conn::label(key, version),
        detail,
    };
    let (min, max) = supported()
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, r)| r)
        .ok_or_else(|| err("not an API the agent asks".to_owned()))?;
    if !(min..=max).contains(&version) {
        return Err(err(format!(
            "version outside the client's range {min}..={max}"
        )));
    }
    let decoded = match key {
        ApiKey::ApiVersions => {
            decode_body(&wire::API_VERSIONS, version, body).map(Response::ApiVersions)
        }
        ApiKey::Metadata => decode_body(&wire::METADATA, version, body).map(Response::Metadata),
        ApiKey::DescribeConfigs => {
            decode_body(&wire::DESCRIBE_CONFIGS, version, body).map(Response::DescribeConfigs)
        }
        ApiKey::DescribeCluster => {
            decode_body(&wire::DESCRIBE_CLUSTER, version, body).map(Response::DescribeCluster)
        }
        ApiKey::ListPartitionReassignments => decode_body(&wire::LIST_REASSIGNMENTS, version, body)
            .map(Response::ListPartitionReassignments),
        ApiKey::AlterPartitionReassignments => {
            decode_body(&wire::ALTER_REASSIGNMENTS, version, body)
                .map(Response::AlterPartitionReassignments)
        }
        ApiKey::IncrementalAlterConfigs => {
            decode_body(&wire::INCREMENTAL_ALTER_CONFIGS, version, body)
                .map(Response::IncrementalAlterConfigs)
        }
        _ => decode_body(&wire::ELECT_LEADERS, version, body).map(Response::ElectLeaders),
    };
    decoded.map_err(err)
}

/// The walk, then kafka-protocol's decoder; the error is the detail (the caller names the
/// broker and the API).
pub(crate) fn decode_body<Resp: Decodable>(
    schema: &Schema,
    version: i16,
    mut body: Bytes,
) -> Result<Resp, String> {
    wire::check(schema, version, &body)?;
    let resp = Resp::decode(&mut body, version).map_err(|e| format!("{e:#}"))?;
    if !body.is_empty() {
        // Unreachable after the walk unless the two disagree; kept as a guard.
        return Err(format!("{} trailing bytes", body.len()));
    }
    Ok(resp)
}
