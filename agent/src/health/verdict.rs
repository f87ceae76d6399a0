//! The readiness verdict for one broker pod.

use std::time::Duration;

use serde::Serialize;

use super::Health;
use crate::nodeview::Outage;
use crate::overrides::Override;

pub use kpool_policy::model::VerdictMode;

/// `kafka.server:type=KafkaServer,name=BrokerState`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BrokerState {
    NotRunning,
    Starting,
    Recovery,
    Running,
    PendingControlledShutdown,
    ShuttingDown,
    Unknown,
}

impl BrokerState {
    /// From the gauge's value (0 not running, 1 starting, 2 recovery, 3 running,
    /// 6 pending controlled shutdown, 7 shutting down, anything else unknown).
    pub fn from_code(code: i64) -> Self {
        match code {
            0 => Self::NotRunning,
            1 => Self::Starting,
            2 => Self::Recovery,
            3 => Self::Running,
            6 => Self::PendingControlledShutdown,
            7 => Self::ShuttingDown,
            _ => Self::Unknown,
        }
    }

    /// The gauge value.
    pub fn code(self) -> i64 {
        match self {
            Self::NotRunning => 0,
            Self::Starting => 1,
            Self::Recovery => 2,
            Self::Running => 3,
            Self::PendingControlledShutdown => 6,
            Self::ShuttingDown => 7,
            Self::Unknown => 127,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::NotRunning => "not running",
            Self::Starting => "starting",
            Self::Recovery => "recovering its logs",
            Self::Running => "running",
            Self::PendingControlledShutdown => "pending controlled shutdown",
            Self::ShuttingDown => "shutting down",
            Self::Unknown => "in an unknown state",
        }
    }
}

/// The answer to "may this broker pod be ready?".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub ready: bool,
    pub broker_id: i32,
    /// Why; the first line is what the probe prints.
    pub reasons: Vec<String>,
    /// Set when an operator override decided the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_until: Option<String>,
    /// With an override: what Kafka's state alone would have said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub without_override: Option<Box<Verdict>>,
}

/// Everything a verdict depends on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The last evaluated poll, if any.
    pub health: Option<&'a Health>,
    /// Age of that poll.
    pub age: Duration,
    pub stale_after: Duration,
    pub broker_id: i32,
    pub mode: VerdictMode,
    /// From the JMX exporter, when configured and read.
    pub state: Option<BrokerState>,
    /// An active operator override.
    pub active_override: Option<&'a Override>,
    /// How long the Kubernetes pod watch has been failing, if it is: the pod → broker
    /// mapping and the override annotation come from it.
    pub pods_outage: Option<&'a Outage>,
}

/// Decides readiness: a pod view out of contact with Kubernetes for longer than the
/// staleness bound is not-ready (even an override: it came from that view); then an active
/// override wins; a stale or missing poll is not-ready; otherwise Kafka's state decides.
pub fn verdict(i: Inputs<'_>) -> Verdict {
    if let Some(o) = i.pods_outage
        && o.duration > i.stale_after
    {
        return Verdict {
            ready: false,
            broker_id: i.broker_id,
            reasons: vec![format!(
                "stale: no contact with the Kubernetes API for {}s (bound {}s; {} failed attempts, last: {})",
                o.duration.as_secs(),
                i.stale_after.as_secs(),
                o.failures,
                o.last_error
            )],
            override_until: None,
            without_override: None,
        };
    }
    let kafka = kafka_verdict(&i);
    match i.active_override {
        Some(o) => Verdict {
            ready: true,
            broker_id: i.broker_id,
            reasons: vec![format!("override until {}: {}", o.until_text, o.reason)],
            override_until: Some(o.until_text.clone()),
            without_override: Some(Box::new(kafka)),
        },
        None => kafka,
    }
}

fn kafka_verdict(i: &Inputs<'_>) -> Verdict {
    let not_ready = |reasons: Vec<String>| Verdict {
        ready: false,
        broker_id: i.broker_id,
        reasons,
        override_until: None,
        without_override: None,
    };
    let Some(health) = i.health else {
        return not_ready(vec!["stale: no successful Kafka poll yet".to_owned()]);
    };
    if i.age > i.stale_after {
        return not_ready(vec![format!(
            "stale: last successful Kafka poll {}s ago (bound {}s)",
            i.age.as_secs(),
            i.stale_after.as_secs()
        )]);
    }
    let id = i.broker_id;
    let b = health.broker(id);
    let mut reasons = Vec::new();
    if !b.registered {
        reasons.push(format!("broker {id} is not registered with the cluster"));
    }
    if let Some(state) = i.state
        && state != BrokerState::Running
    {
        reasons.push(format!(
            "broker {id} is {} (BrokerState {})",
            state.name(),
            state.code()
        ));
    }
    let s = &health.summary;
    if s.offline.count > 0 {
        reasons.push(s.offline.describe("offline"));
    }
    if s.under_min_isr.count > 0 {
        reasons.push(s.under_min_isr.describe("under min ISR"));
    }
    if b.out_of_sync.count > 0 {
        reasons.push(format!(
            "broker {id} has {}",
            b.out_of_sync.describe("with its replica outside the ISR")
        ));
    }
    if i.mode == VerdictMode::Cluster && s.under_replicated.count > 0 {
        reasons.push(
            s.under_replicated
                .describe("under-replicated (verdict: cluster)"),
        );
    }
    if reasons.is_empty() {
        Verdict {
            ready: true,
            broker_id: id,
            reasons: vec![format!(
                "ready: broker {id} registered{}, its {} replicas in sync, no partition offline or under min ISR{}",
                if i.state.is_some() {
                    " and running"
                } else {
                    ""
                },
                b.replicas,
                if i.mode == VerdictMode::Cluster {
                    ", none under-replicated"
                } else {
                    ""
                }
            )],
            override_until: None,
            without_override: None,
        }
    } else {
        not_ready(reasons)
    }
}
