//! Decoding a response body, the one step between the bytes a broker sends and the
//! structs the client reads: first a structural walk of the body against the API's schema
//! ([`super::wire`]: every length checked against the bytes left, so garbage is an error
//! naming the field, never a huge allocation), then kafka-protocol's decoder. The client
//! goes through [`decode_body`]; [`decode_response`] is the same step reachable from
//! outside the crate (fuzzing, tools) for the APIs and versions the client asks.

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, DescribeClusterResponse, DescribeConfigsResponse,
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

/// A decoded response of one of the APIs the agent asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    ApiVersions(ApiVersionsResponse),
    Metadata(MetadataResponse),
    DescribeConfigs(DescribeConfigsResponse),
    DescribeCluster(DescribeClusterResponse),
    ListPartitionReassignments(ListPartitionReassignmentsResponse),
}

/// Why a response body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{api}: {detail}")]
pub struct DecodeError {
    /// `Metadata v12`.
    pub api: String,
    pub detail: String,
}

/// The APIs the client asks and the versions it implements for each.
pub fn supported() -> [(ApiKey, (i16, i16)); 5] {
    [
        (ApiKey::ApiVersions, API_VERSIONS_RANGE),
        (ApiKey::Metadata, METADATA_RANGE),
        (ApiKey::DescribeConfigs, DESCRIBE_CONFIGS_RANGE),
        (ApiKey::DescribeCluster, DESCRIBE_CLUSTER_RANGE),
        (ApiKey::ListPartitionReassignments, LIST_REASSIGNMENTS_RANGE),
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
        _ => decode_body(&wire::LIST_REASSIGNMENTS, version, body)
            .map(Response::ListPartitionReassignments),
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
