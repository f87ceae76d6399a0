//! The Lease that lets one agent at a time act on the whole Kafka cluster, against the fake
//! API server's optimistic concurrency: create, renew, expiry judged on the reader's clock,
//! races, release, and an API that refuses.

use std::time::Duration;

use kpool_agent::lease::{Decision, Held, LeaseLock, Observed, decide};
use kpool_testkit::fake_api::FakeApi;
use serde_json::json;

const NS: &str = "kpool-system";
const NAME: &str = "kpool-racks";

fn lock(api: &FakeApi, me: &str, duration: Duration) -> LeaseLock {
    LeaseLock::new(api.client(), NS, NAME, me, duration)
}

fn holder(api: &FakeApi) -> Option<String> {
    api.lease(NS, NAME)
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

#[test]
fn the_rule() {
    let d = Duration::from_secs(15);
    let seen = |holder: Option<&str>| Observed {
        holder: holder.map(str::to_owned),
        resource_version: "7".to_owned(),
        transitions: 2,
    };
    assert_eq!(decide(None, "a", Duration::ZERO, d), Decision::Create);
    assert_eq!(
        decide(Some(&seen(Some("a"))), "a", d * 9, d),
        Decision::Renew
    );
    assert_eq!(
        decide(Some(&seen(None)), "a", Duration::ZERO, d),
        Decision::TakeOver
    );
    assert_eq!(
        decide(Some(&seen(Some("b"))), "a", Duration::from_secs(5), d),
        Decision::Wait {
            holder: "b".to_owned(),
            expires_in: Duration::from_secs(10)
        }
    );
    assert_eq!(
        decide(Some(&seen(Some("b"))), "a", d, d),
        Decision::TakeOver
    );
}

#[tokio::test]
async fn the_first_agent_leads_and_the_others_follow_it() {
    let api = FakeApi::default();
    let (a, b) = (
        lock(&api, "agent-a", Duration::from_secs(15)),
        lock(&api, "agent-b", Duration::from_secs(15)),
    );
    assert_eq!(a.try_acquire_or_renew().await.expect("a"), Held::Leading);
    assert_eq!(
        b.try_acquire_or_renew().await.expect("b"),
        Held::Following {
            holder: Some("agent-a".to_owned())
        }
    );
    let first = api.lease(NS, NAME).expect("created");
    assert_eq!(first["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(first["spec"]["leaseTransitions"], 0);
    assert!(
        first["spec"]["renewTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
        "{first}"
    );
    // Renewing writes a new record; the other agent's clock for it starts over.
    assert_eq!(
        a.try_acquire_or_renew().await.expect("renew"),
        Held::Leading
    );
    let renewed = api.lease(NS, NAME).expect("lease");
    assert_ne!(
        renewed["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    assert_eq!(renewed["spec"]["acquireTime"], first["spec"]["acquireTime"]);
    assert!(matches!(
        b.try_acquire_or_renew().await.expect("b"),
        Held::Following { .. }
    ));
}

#[tokio::test]
async fn a_holder_that_stops_renewing_is_replaced_after_the_duration_on_the_readers_clock() {
    let api = FakeApi::default();
    let d = Duration::from_millis(300);
    let (a, b) = (lock(&api, "agent-a", d), lock(&api, "agent-b", d));
    assert_eq!(a.try_acquire_or_renew().await.expect("a"), Held::Leading);
    // A renewTime far in the past means nothing: b judges by how long it has seen the record.
    let mut stale = api.lease(NS, NAME).expect("lease");
    stale["spec"]["renewTime"] = json!("2001-01-01T00:00:00.000000Z");
    api.put_lease(NS, NAME, stale);
    assert!(matches!(
        b.try_acquire_or_renew().await.expect("b"),
        Held::Following { .. }
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(matches!(
        b.try_acquire_or_renew().await.expect("b"),
        Held::Following { .. }
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        b.try_acquire_or_renew().await.expect("take over"),
        Held::Leading
    );
    let lease = api.lease(NS, NAME).expect("lease");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(holder(&api).as_deref(), Some("agent-b"));
    // The old holder, back, follows.
    assert_eq!(
        a.try_acquire_or_renew().await.expect("a"),
        Held::Following {
            holder: Some("agent-b".to_owned())
        }
    );
}

#[tokio::test]
async fn of_two_agents_racing_for_a_released_lease_one_wins() {
    let api = FakeApi::default();
    let d = Duration::from_secs(15);
    let (a, b, c) = (
        lock(&api, "agent-a", d),
        lock(&api, "agent-b", d),
        lock(&api, "agent-c", d),
    );
    assert_eq!(a.try_acquire_or_renew().await.expect("a"), Held::Leading);
    a.release().await.expect("release");
    assert_eq!(holder(&api), None);
    let (rb, rc) = tokio::join!(b.try_acquire_or_renew(), c.try_acquire_or_renew());
    let results = [rb.expect("b"), rc.expect("c")];
    assert_eq!(
        results.iter().filter(|r| **r == Held::Leading).count(),
        1,
        "{results:?}"
    );
    let winner = holder(&api).expect("held");
    assert!(winner == "agent-b" || winner == "agent-c", "{winner}");
    // Releasing a lease one does not hold changes nothing.
    a.release().await.expect("release");
    assert_eq!(holder(&api).as_deref(), Some(winner.as_str()));
}

#[tokio::test]
async fn an_api_that_refuses_is_an_error_naming_the_lease() {
    let api = FakeApi::default();
    let a = lock(&api, "agent-a", Duration::from_secs(15));
    api.go_down();
    let e = a
        .try_acquire_or_renew()
        .await
        .expect_err("down")
        .to_string();
    assert!(
        e.starts_with("read Lease kpool-system/kpool-racks: "),
        "{e}"
    );
    api.come_back();
    assert_eq!(a.try_acquire_or_renew().await.expect("back"), Held::Leading);
}
