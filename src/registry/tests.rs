//! The registry on a hand-moved clock: deadlines fire when their time comes and not before,
//! their transitions become sequenced events, and permits round-trip through the gate.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::core::{FailureKind, Intent, Report, Timestamp};
use crate::store::MemoryStore;

fn registry(clock: Arc<ManualClock>) -> Registry {
    let options = RegistryOptions {
        policy: Policy {
            defaults: Arc::new(Settings {
                failure_threshold: 2,
                ..Settings::default()
            }),
            ..Policy::default()
        },
        ..RegistryOptions::default()
    };
    let registry = Registry::new(options, Arc::new(MemoryStore::new(100)), clock);
    registry.load().expect("an empty store loads");
    registry
}

#[tokio::test]
async fn a_deadline_fires_at_its_time_and_not_before() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let registry = registry(clock.clone());
    for _ in 0..2 {
        let permit = registry
            .check("ACC", Intent::New)
            .await
            .expect("check")
            .permit_id;
        registry
            .report("ACC", &permit, Report::failure(FailureKind::Unspecified))
            .await
            .expect("report");
    }
    assert_eq!(registry.get("ACC").expect("breaker").state, State::Open);
    assert_eq!(registry.last_sequence(), 1);

    clock.advance(Duration::from_secs(299));
    registry.fire_due(clock.now()).await;
    assert_eq!(registry.get("ACC").expect("breaker").state, State::Open);

    clock.advance(Duration::from_secs(1));
    registry.fire_due(clock.now()).await;
    let breaker = registry.get("ACC").expect("breaker");
    assert_eq!(breaker.state, State::HalfOpen);
    assert_eq!(breaker.last_sequence, 2);
    assert_eq!(registry.last_sequence(), 2);
}

#[tokio::test]
async fn a_permit_is_refused_for_another_account_and_nothing_changes() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(1)));
    let registry = registry(clock);
    let permit = registry
        .check("A", Intent::New)
        .await
        .expect("check")
        .permit_id;
    registry.check("B", Intent::New).await.expect("check");
    let before = registry.get("B").expect("breaker");
    let refused = registry
        .report("B", &permit, Report::failure(FailureKind::Unspecified))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidPermit { .. })),
        "{refused:?}"
    );
    assert_eq!(registry.get("B").expect("breaker"), before);
}
