//! Against a real kube-apiserver, what the fake API server can only imitate: the racks
//! Lease (create, renew, take over, optimistic concurrency, MicroTime fields the API server
//! must accept) and the Normal Event recorded on it.
//!
//! Opt-in: runs only with `RIG_BIN` set and `KUBECONFIG` naming a running rig
//! (`RIG=DIR scripts/rig-test` starts one from the rig's scripts in DIR, runs this, and stops
//! it). CI has no rig.

use std::time::Duration;

use kpool_agent::guard::Target;
use kpool_agent::guard::act::{Actor, Retry};
use kpool_agent::lease::{Held, LeaseLock};
use serde_json::{Value, json};

fn rig() -> bool {
    let on = std::env::var_os("RIG_BIN").is_some() && std::env::var_os("KUBECONFIG").is_some();
    if !on {
        eprintln!("skipped: no rig (set RIG_BIN and KUBECONFIG; scripts/rig-test does)");
    }
    on
}

async fn request(client: &kube::Client, method: &str, path: &str, body: Option<Value>) -> Value {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(
            body.map(|b| serde_json::to_vec(&b).expect("json"))
                .unwrap_or_default(),
        )
        .expect("request");
    client
        .request::<Value>(req)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

#[tokio::test]
async fn the_racks_lease_and_its_events_on_a_real_api_server() {
    if !rig() {
        return;
    }
    kpool_cli::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .expect("the rig's API server");
    let ns = format!("kpool-rig-{}", std::process::id());
    request(
        &client,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
    )
    .await;

    let d = Duration::from_secs(2);
    let lock = |me: &str| LeaseLock::new(client.clone(), &ns, "kpool-racks", me, d);
    let (a, b) = (lock("kpool-agent-node-a"), lock("kpool-agent-node-b"));
    assert_eq!(a.try_acquire_or_renew().await.expect("a"), Held::Leading);
    assert_eq!(
        b.try_acquire_or_renew().await.expect("b"),
        Held::Following {
            holder: Some("kpool-agent-node-a".to_owned())
        }
    );
    let path = format!("/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/kpool-racks");
    let first = request(&client, "GET", &path, None).await;
    assert_eq!(first["spec"]["holderIdentity"], "kpool-agent-node-a");
    assert_eq!(first["spec"]["leaseDurationSeconds"], 2);
    assert!(first["spec"]["renewTime"].is_string(), "{first}");
    assert_eq!(
        a.try_acquire_or_renew().await.expect("renew"),
        Held::Leading
    );
    let renewed = request(&client, "GET", &path, None).await;
    assert_ne!(
        renewed["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );

    // A stale write is refused by the real API server: replaying the first record loses.
    let stale = a.try_acquire_or_renew().await.expect("renew");
    assert_eq!(stale, Held::Leading);
    let mut old = first.clone();
    old["spec"]["holderIdentity"] = json!("intruder");
    let req = http::Request::put(&path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&old).expect("json"))
        .expect("request");
    match client.request::<Value>(req).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a stale resourceVersion must be refused: {other:?}"),
    }

    // a stops renewing: b takes over once it has seen the same record for the duration.
    assert!(matches!(
        b.try_acquire_or_renew().await.expect("b"),
        Held::Following { .. }
    ));
    tokio::time::sleep(d + Duration::from_millis(300)).await;
    assert_eq!(
        b.try_acquire_or_renew().await.expect("take over"),
        Held::Leading
    );
    let taken = request(&client, "GET", &path, None).await;
    assert_eq!(taken["spec"]["holderIdentity"], "kpool-agent-node-b");
    assert_eq!(taken["spec"]["leaseTransitions"], 1);

    // Released: of two agents racing, one wins.
    b.release().await.expect("release");
    let (c, e) = (lock("kpool-agent-node-c"), lock("kpool-agent-node-e"));
    let (rc, re) = tokio::join!(c.try_acquire_or_renew(), e.try_acquire_or_renew());
    let wins = [rc.expect("c"), re.expect("e")]
        .iter()
        .filter(|h| **h == Held::Leading)
        .count();
    assert_eq!(wins, 1);

    // The reassignment Event, Normal, regarding the Lease.
    let actor = Actor::new(client.clone(), "node-a", Retry::default());
    actor
        .event(
            &Target::Lease {
                namespace: ns.clone(),
                name: "kpool-racks".to_owned(),
            },
            "RackReassignment",
            "reassignment-submitted",
            "orders-1: replicas [0, 6, 1, 2, 4, 5] -> [0, 6, 1, 2, 4, 3] (1 moved)",
        )
        .await
        .expect("the API server accepts the Event");
    let events = request(
        &client,
        "GET",
        &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events"),
        None,
    )
    .await;
    let items = events["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{events}");
    assert_eq!(items[0]["type"], "Normal");
    assert_eq!(items[0]["regarding"]["kind"], "Lease");
    assert_eq!(items[0]["regarding"]["name"], "kpool-racks");

    request(&client, "DELETE", &format!("/api/v1/namespaces/{ns}"), None).await;
}
