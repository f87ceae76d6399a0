//! A large synthetic cluster for the benchmarks: 60 brokers over 2 clusters x 3 zones,
//! 100,000 partitions with 6 replicas each, a few of them unhealthy.

use kpool_agent::snapshot::{Broker, Partition, Snapshot, Topic};

pub fn big_snapshot() -> Snapshot {
    let zones = ["eu-west-1a", "eu-west-1b", "eu-west-1c"];
    let brokers: Vec<Broker> = (0..60)
        .map(|i| {
            let id = if i < 30 { i } else { 100 + i - 30 };
            let cluster = if i < 30 { "k8s-a" } else { "k8s-b" };
            Broker {
                id,
                host: format!("b{id}"),
                port: 9092,
                rack: Some(format!("{cluster}-{}", zones[(i % 3) as usize])),
            }
        })
        .collect();
    let ids: Vec<i32> = brokers.iter().map(|b| b.id).collect();
    let topics = (0..100)
        .map(|t| Topic {
            name: format!("topic-{t:03}"),
            internal: false,
            min_isr: if t % 2 == 0 { Some(3) } else { None },
            partitions: (0..1000)
                .map(|p| {
                    let start = (t * 7 + p) as usize;
                    // one replica per zone and cluster: picks brokers i, i+1, i+2 (zones) in both clusters
                    let a = start % 10 * 3;
                    let replicas: Vec<i32> =
                        (0..3).flat_map(|z| [ids[a + z], ids[30 + a + z]]).collect();
                    let mut isr = replicas.clone();
                    if p % 97 == 0 {
                        isr.truncate(4);
                    }
                    Partition {
                        index: p,
                        leader: replicas[0],
                        replicas,
                        isr,
                        offline_replicas: vec![],
                        adding_replicas: vec![],
                    }
                })
                .collect(),
        })
        .collect();
    Snapshot {
        cluster_id: Some("bench".into()),
        controller_id: Some(0),
        brokers,
        topics,
        default_min_isr: Some(3),
    }
}
