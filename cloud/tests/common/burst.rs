//! An enrolled appliance's real cloud link publishing a burst of events: the load of the
//! nothing-lost tests (`delivery.rs`, `scale_out.rs`).

use chrono::Utc;
use stayopen_appliance::cloud_link::CloudLink;
use stayopen_appliance::identity::{self, Proof};
use stayopen_appliance::outbox::{DEFAULT_LIMIT_BYTES, Outbox};
use stayopen_shared::api::HardwareIdentity;
use stayopen_shared::events::{ApplianceEvent, EventKind};

/// An enrolled appliance's real cloud link, appending `count` events tagged `"{tag} {i}"` to its
/// outbox as fast as the disk allows, from a blocking thread.
pub struct Burst {
    pub link: CloudLink,
    pub identity: stayopen_appliance::identity::Identity,
    pub appending: tokio::task::JoinHandle<()>,
    // The receiver is kept: the link stops when nobody listens for policies and commands.
    pub inbound: tokio::sync::mpsc::Receiver<stayopen_appliance::cloud_link::Inbound>,
    pub state: tempfile::TempDir,
}

pub async fn start_burst(
    base_url: &str,
    token: &str,
    serial: &str,
    mac: &str,
    tag: &'static str,
    count: usize,
) -> Burst {
    let state = tempfile::tempdir().expect("state");
    let identity = identity::load_or_enroll(
        state.path(),
        &reqwest::Client::new(),
        base_url,
        &Proof::Token(token.into()),
        HardwareIdentity {
            serial: serial.into(),
            mac: mac.into(),
            model: "test".into(),
        },
    )
    .await
    .expect("enrol");
    let outbox =
        Outbox::open(&state.path().join("outbox.redb"), DEFAULT_LIMIT_BYTES).expect("outbox");
    let (link, inbound) = CloudLink::start(&identity, outbox).expect("link");
    let publisher = link.clone();
    let appending = tokio::task::spawn_blocking(move || {
        for i in 0..count {
            publisher.publish_event(
                Utc::now(),
                ApplianceEvent {
                    kind: EventKind::UplinkUp,
                    uplink: Some("fiber".into()),
                    from: None,
                    to: None,
                    reason: format!("{tag} {i}"),
                    drill: None,
                },
            );
        }
    });
    Burst {
        link,
        identity,
        appending,
        inbound,
        state,
    }
}
