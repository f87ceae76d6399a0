//! The public response decoder (`kafka::decode_response`, the client's own decode step)
//! over real kafka-protocol encodings of what the scripted server answers, at every
//! version the client asks: each decodes; every truncation and any trailing byte is an
//! error naming the API; random bodies never panic; the `kafka_response` fuzz seeds are
//! these encodings (an ignored test regenerates them).

mod support;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kpool_agent::kafka::{Response, decode_response, supported};
use proptest::prelude::*;
use support::kafka_server::{ClusterState, typical_response};

const SIX_RACKS: [&str; 6] = ["a-z1", "a-z2", "a-z3", "b-z1", "b-z2", "b-z3"];

fn cluster() -> ClusterState {
    ClusterState::healthy(6, &SIX_RACKS, &[("orders", 12, 6), ("payments", 3, 6)])
        .broker_default_min_isr(Some(3))
        .broker_down(3)
        .offline("payments", 1)
}

/// The same cluster with a reassignment under way, for ListPartitionReassignments (the
/// other APIs' encodings, and so their committed fuzz seeds, stay as they were).
fn moving_cluster() -> ClusterState {
    cluster()
        .add_topic("moving", 6, 3)
        .reassigning("moving", 4, &[0])
}

/// Every (API, version) the client asks, with the server's encoding of a typical answer.
fn encodings() -> Vec<(ApiKey, i16, Vec<u8>)> {
    let (state, moving) = (cluster(), moving_cluster());
    let mut out = Vec::new();
    for (key, (min, max)) in supported() {
        let state = if key == ApiKey::ListPartitionReassignments {
            &moving
        } else {
            &state
        };
        for v in min..=max {
            let body = typical_response(state, key, v).expect("the server answers this API");
            out.push((key, v, body));
        }
    }
    out
}

#[test]
fn every_supported_version_decodes_what_kafka_protocol_encodes() {
    let all = encodings();
    assert_eq!(
        all.len(),
        4 + 13 + 4 + 3 + 1 + 2 + 2 + 3,
        "ApiVersions 0-3, Metadata 1-13, DescribeConfigs 1-4, DescribeCluster 0-2, \
         ListPartitionReassignments 0, AlterPartitionReassignments 0-1, \
         IncrementalAlterConfigs 0-1, ElectLeaders 0-2"
    );
    for (key, v, body) in all {
        let decoded = decode_response(key, v, Bytes::from(body))
            .unwrap_or_else(|e| panic!("{key:?} v{v}: {e}"));
        match (key, decoded) {
            (ApiKey::ApiVersions, Response::ApiVersions(r)) => {
                assert!(!r.api_keys.is_empty(), "v{v}")
            }
            (ApiKey::Metadata, Response::Metadata(r)) => {
                assert_eq!(r.brokers.len(), 5, "v{v}: broker 3 is down");
                assert_eq!(r.topics.len(), 2, "v{v}");
                let partitions: usize = r.topics.iter().map(|t| t.partitions.len()).sum();
                assert_eq!(partitions, 15, "v{v}");
            }
            (ApiKey::DescribeConfigs, Response::DescribeConfigs(r)) => {
                assert_eq!(r.results.len(), 3, "v{v}: two topics and the broker")
            }
            (ApiKey::DescribeCluster, Response::DescribeCluster(r)) => {
                assert_eq!(r.brokers.len(), 5, "v{v}")
            }
            (ApiKey::ListPartitionReassignments, Response::ListPartitionReassignments(r)) => {
                assert_eq!(r.topics.len(), 1, "v{v}: orders-4 is being moved");
                assert_eq!(r.topics[0].partitions[0].adding_replicas.len(), 1, "v{v}");
            }
            (ApiKey::AlterPartitionReassignments, Response::AlterPartitionReassignments(r)) => {
                assert_eq!(r.responses.len(), 2, "v{v}: orders and payments");
                let codes: Vec<i16> = r.responses[0]
                    .partitions
                    .iter()
                    .map(|p| p.error_code)
                    .collect();
                assert_eq!(codes, [0, 85], "v{v}: moved, then nothing to cancel");
            }
            (ApiKey::IncrementalAlterConfigs, Response::IncrementalAlterConfigs(r)) => {
                assert_eq!(r.responses.len(), 3, "v{v}: the broker and two topics")
            }
            (ApiKey::ElectLeaders, Response::ElectLeaders(r)) => {
                let partitions: usize = r
                    .replica_election_results
                    .iter()
                    .map(|t| t.partition_result.len())
                    .sum();
                assert_eq!(partitions, 15, "v{v}");
            }
            (key, other) => panic!("{key:?} v{v} decoded as {other:?}"),
        }
    }
}

#[test]
fn every_truncation_and_any_trailing_byte_is_an_error_naming_the_api() {
    for (key, v, body) in encodings() {
        for len in 0..body.len() {
            let err = decode_response(key, v, Bytes::copy_from_slice(&body[..len]))
                .expect_err("a truncated body never decodes");
            assert!(
                err.to_string().starts_with(&format!("{} v{v}:", name(key))),
                "{err}"
            );
        }
        let mut longer = body.clone();
        longer.push(0);
        let err = decode_response(key, v, Bytes::from(longer)).expect_err("trailing byte");
        assert!(!err.detail.is_empty(), "{key:?} v{v}");
    }
}

#[test]
fn other_apis_and_versions_outside_the_range_are_refused() {
    let err = decode_response(ApiKey::Produce, 9, Bytes::new()).expect_err("not asked");
    assert_eq!(err.to_string(), "Produce v9: not an API the agent asks");
    let err = decode_response(ApiKey::Metadata, 0, Bytes::new()).expect_err("v0");
    assert_eq!(
        err.to_string(),
        "Metadata v0: version outside the client's range 1..=13"
    );
    let err = decode_response(ApiKey::DescribeConfigs, 5, Bytes::new()).expect_err("v5");
    assert!(err.detail.contains("1..=4"), "{err}");
}

fn name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::Metadata => "Metadata",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::ListPartitionReassignments => "ListPartitionReassignments",
        ApiKey::AlterPartitionReassignments => "AlterPartitionReassignments",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::ElectLeaders => "ElectLeaders",
        _ => "?",
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Random bodies, and real bodies with random bytes overwritten, never panic.
    #[test]
    fn arbitrary_bodies_never_panic(
        pick in any::<prop::sample::Index>(),
        random in prop::collection::vec(any::<u8>(), 0..512),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let all = encodings();
        let (key, v, body) = &all[pick.index(all.len())];
        let _ = decode_response(*key, *v, Bytes::from(random));
        let mut mutated = body.clone();
        for (at, byte) in flips {
            let i = at.index(mutated.len());
            mutated[i] = byte;
        }
        let _ = decode_response(*key, *v, Bytes::from(mutated));
    }
}

/// `[api index, version offset, body...]`, the layout `kpool_fuzz::kafka_response` reads.
fn seed_layout(key: ApiKey, v: i16, body: &[u8]) -> Vec<u8> {
    let (index, (min, _)) = supported()
        .into_iter()
        .enumerate()
        .find(|(_, (k, _))| *k == key)
        .map(|(i, (_, r))| (i, r))
        .expect("supported");
    let mut seed = vec![
        u8::try_from(index).expect("index"),
        u8::try_from(v - min).expect("offset"),
    ];
    seed.extend_from_slice(body);
    seed
}

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/kafka_response")
}

/// The committed seeds are what the current server encodes, so the fuzzer starts from
/// valid answers at every version (regenerate with the ignored test below).
#[test]
fn committed_fuzz_seeds_are_current_encodings() {
    for (key, v, body) in encodings() {
        let path = corpus_dir().join(format!("{}-v{v}", name(key)));
        let seed = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            seed == seed_layout(key, v, &body),
            "{} is stale: KPOOL_WRITE_FUZZ_SEEDS=$PWD/fuzz/corpus/kafka_response cargo test -p kpool-agent --test kafka_decode -- --ignored",
            path.display()
        );
    }
}

/// Writes the seeds for `fuzz/corpus/kafka_response` into `$KPOOL_WRITE_FUZZ_SEEDS`.
#[test]
#[ignore = "a generator: KPOOL_WRITE_FUZZ_SEEDS=DIR cargo test -p kpool-agent --test kafka_decode -- --ignored"]
fn write_fuzz_seeds() {
    let dir = std::path::PathBuf::from(
        std::env::var_os("KPOOL_WRITE_FUZZ_SEEDS").expect("set KPOOL_WRITE_FUZZ_SEEDS=DIR"),
    );
    std::fs::create_dir_all(&dir).expect("seed dir");
    for (key, v, body) in encodings() {
        std::fs::write(
            dir.join(format!("{}-v{v}", name(key))),
            seed_layout(key, v, &body),
        )
        .expect("write seed");
    }
}
