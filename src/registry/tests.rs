//! The registry on a hand-moved clock: deadlines fire when their time comes and not before,
//! their transitions become sequenced events, and permits round-trip through the gate.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::core::Mode;
use crate::core::{FailureKind, Intent, Report, Timestamp};
use crate::store::MemoryStore;

/// Breakers that open at the second failure.
fn opening_at_two() -> Rulebook {
    Rulebook {
        defaults: Arc::new(Settings {
            failure_threshold: 2,
            ..Settings::default()
        }),
        ..Rulebook::default()
    }
}

fn registry(clock: Arc<ManualClock>) -> Registry {
    let options = RegistryOptions {
        rulebook: opening_at_two(),
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
            .permit_id();
        registry
            .report("ACC", &permit, Report::failure(FailureKind::Unspecified))
            .await
            .expect("report");
    }
    assert_eq!(
        registry.get("ACC").await.expect("breaker").state,
        State::Open
    );
    assert_eq!(registry.last_sequence(), 1);

    clock.advance(Duration::from_secs(299));
    registry.fire_due(clock.now()).await;
    assert_eq!(
        registry.get("ACC").await.expect("breaker").state,
        State::Open
    );

    clock.advance(Duration::from_secs(1));
    registry.fire_due(clock.now()).await;
    let breaker = registry.get("ACC").await.expect("breaker");
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
        .permit_id();
    registry.check("B", Intent::New).await.expect("check");
    let before = registry.get("B").await.expect("breaker");
    let refused = registry
        .report("B", &permit, Report::failure(FailureKind::Unspecified))
        .await;
    assert!(
        matches!(refused, Err(Error::InvalidPermit { .. })),
        "{refused:?}"
    );
    assert_eq!(registry.get("B").await.expect("breaker"), before);
}

fn with_policy(clock: Arc<ManualClock>, store: Arc<MemoryStore>, policy: Rulebook) -> Registry {
    let options = RegistryOptions {
        rulebook: policy,
        ..RegistryOptions::default()
    };
    let registry = Registry::new(options, store, clock);
    registry.load().expect("the store loads");
    registry
}

fn desk_policy() -> Rulebook {
    let mut groups = std::collections::BTreeMap::new();
    groups.insert(
        "desk-a".to_owned(),
        vec![AccountPattern::parse("desk-a:*").expect("pattern")],
    );
    Rulebook {
        defaults: Arc::new(Settings {
            failure_threshold: 2,
            ..Settings::default()
        }),
        groups,
        version: "v1".into(),
        ..Rulebook::default()
    }
}

fn action(reason: &str) -> OperatorAction {
    OperatorAction::new("ops", reason).expect("action")
}

async fn fail(registry: &Registry, account: &str) {
    registry
        .report(account, "", Report::failure(FailureKind::Other))
        .await
        .expect("report");
}

#[tokio::test]
async fn a_firm_halt_denies_every_order_but_cancels_and_leaves_breakers_alone() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(1)));
    let store = Arc::new(MemoryStore::new(100));
    let registry = with_policy(clock, store.clone(), desk_policy());
    registry.check("ACC", Intent::New).await.expect("check");
    registry
        .halt(Scope::Firm, action("venue outage"), "peer")
        .await
        .expect("halt");
    for intent in [Intent::New, Intent::ReduceOnly] {
        let denied = registry.check("ACC", intent).await.expect("check");
        assert!(!denied.allowed);
        assert_eq!(denied.denied().map(Denied::layer), Some(Layer::Firm));
        assert!(
            denied.reason().contains("venue outage"),
            "{}",
            denied.reason()
        );
    }
    let cancel = registry.check("ACC", Intent::Cancel).await.expect("check");
    assert!(cancel.allowed && cancel.permit.is_none());
    assert_eq!(
        registry.get("ACC").await.expect("breaker").state,
        State::Closed
    );
    // A restart keeps the halt.
    let restarted = with_policy(
        Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(2))),
        store,
        desk_policy(),
    );
    assert!(
        !restarted
            .check("ACC", Intent::New)
            .await
            .expect("check")
            .allowed
    );
    restarted
        .resume(Scope::Firm, action("venue back"), "peer")
        .await
        .expect("resume");
    assert!(
        restarted
            .check("ACC", Intent::New)
            .await
            .expect("check")
            .allowed
    );
    // Resuming what is not halted changes nothing, and says so.
    assert!(!restarted
        .resume(Scope::Firm, action("again"), "peer")
        .await
        .expect("resume"));
    // A second halt keeps the first: its operator, reason and time stay in force.
    assert!(restarted
        .halt(Scope::Firm, action("first"), "peer")
        .await
        .expect("halt"));
    assert!(!restarted
        .halt(Scope::Firm, action("second"), "peer")
        .await
        .expect("halt again"));
    let halts = restarted.halts().await.expect("halts");
    assert_eq!(halts.len(), 1);
    assert_eq!(halts[0].1.reason, "first");
    let audited = restarted
        .audit(crate::store::AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("audit");
    assert!(
        audited[0]
            .detail
            .starts_with("already halted by ops (first)"),
        "{audited:?}"
    );
    assert_eq!(audited[2].detail, "nothing was halted", "{audited:?}");
}

#[tokio::test]
async fn a_group_halt_denies_its_accounts_only_and_names_the_group() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(1)));
    let registry = with_policy(clock, Arc::new(MemoryStore::new(100)), desk_policy());
    registry
        .halt(Scope::Group("desk-a".into()), action("desk review"), "peer")
        .await
        .expect("halt");
    let denied = registry
        .check("desk-a:7", Intent::New)
        .await
        .expect("check");
    assert_eq!(
        denied.denied().map(Denied::layer),
        Some(Layer::Group("desk-a".into()))
    );
    assert!(
        registry
            .check("desk-b:7", Intent::New)
            .await
            .expect("check")
            .allowed
    );
    assert!(matches!(
        registry
            .halt(Scope::Group("nope".into()), action("x"), "peer")
            .await,
        Err(Error::UnknownGroup(_))
    ));
    // A halted account that never traded gets no breaker from being denied.
    assert!(matches!(
        registry.get("desk-a:7").await,
        Err(Error::UnknownAccount(_))
    ));
}

#[tokio::test]
async fn shadow_mode_never_denies_but_says_what_it_would_do() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(1)));
    let registry = with_policy(clock, Arc::new(MemoryStore::new(100)), desk_policy());
    registry
        .set_mode("ACC", Some(Mode::Shadow), action("trial"), "peer")
        .await
        .expect("mode");
    fail(&registry, "ACC").await;
    fail(&registry, "ACC").await;
    assert_eq!(
        registry.get("ACC").await.expect("breaker").state,
        State::Open
    );
    for _ in 0..5 {
        let result = registry.check("ACC", Intent::New).await.expect("check");
        assert!(result.allowed);
        assert!(matches!(
            result.denied(),
            Some(Denied::Breaker(crate::core::Denial::Open { .. }))
        ));
        assert!(
            result.reason().starts_with("shadow mode, would deny"),
            "{}",
            result.reason()
        );
    }
    // The opening was recorded as an event, as in enforce mode.
    assert_eq!(registry.last_sequence(), 1);
}

#[tokio::test]
async fn disabled_mode_allows_everything_and_records_nothing() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(1)));
    let store = Arc::new(MemoryStore::new(100));
    let registry = with_policy(clock, store.clone(), desk_policy());
    let view = registry
        .set_mode("ACC", Some(Mode::Disabled), action("maintenance"), "peer")
        .await
        .expect("mode");
    assert!(view.mode_set_by_operator);
    let before = registry.get("ACC").await.expect("breaker");
    for _ in 0..5 {
        fail(&registry, "ACC").await;
        let result = registry.check("ACC", Intent::New).await.expect("check");
        assert!(result.allowed && result.denied().is_none());
    }
    assert_eq!(registry.get("ACC").await.expect("breaker"), before);
    // The operator's mode survives a restart, and back to the configured mode it enforces.
    let restarted = with_policy(
        Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(2))),
        store,
        desk_policy(),
    );
    assert_eq!(
        restarted.get("ACC").await.expect("breaker").mode,
        Mode::Disabled
    );
    restarted
        .set_mode("ACC", None, action("done"), "peer")
        .await
        .expect("mode");
    fail(&restarted, "ACC").await;
    fail(&restarted, "ACC").await;
    assert!(
        !restarted
            .check("ACC", Intent::New)
            .await
            .expect("check")
            .allowed
    );
}

#[tokio::test]
async fn a_reload_applies_to_the_next_decision_and_keeps_every_breaker() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(1)));
    let registry = with_policy(clock, Arc::new(MemoryStore::new(100)), desk_policy());
    fail(&registry, "ACC").await;
    let before = registry.get("ACC").await.expect("breaker");
    assert_eq!(before.failure_count, 1);
    let mut policy = desk_policy();
    policy.defaults = Arc::new(Settings {
        failure_threshold: 1,
        ..Settings::default()
    });
    policy.version = "v2".into();
    registry.reload(policy).await;
    let after = registry.get("ACC").await.expect("breaker");
    assert_eq!((after.state, after.failure_count), (State::Closed, 1));
    assert_eq!(after.settings.failure_threshold, 1);
    // History is not rewritten: the next failure decides, under the new threshold.
    fail(&registry, "ACC").await;
    assert_eq!(
        registry.get("ACC").await.expect("breaker").state,
        State::Open
    );
    let feed = registry.subscribe(&[], Some(0)).await.expect("subscribe");
    assert_eq!(&*feed.replay[0].config_version, "v2");
}

/// More accounts than one load chunk holds, so the restore goes through the reading thread
/// several times: every breaker comes back in its state, and permits issued before the
/// restart are still taken.
#[tokio::test]
async fn a_restart_restores_every_breaker_across_load_chunks() {
    use crate::store::{SqliteOptions, SqliteStore, LOAD_CHUNK};
    let dir = tempfile::tempdir().expect("temp dir");
    let open = |clock: Arc<ManualClock>| {
        let store = SqliteStore::open(SqliteOptions {
            path: dir.path().join("data"),
            retained_events: 100,
            retained_age: Duration::from_secs(3600),
            audit: crate::store::AuditRetention::default(),
        })
        .expect("store");
        let options = RegistryOptions {
            rulebook: opening_at_two(),
            max_accounts: 10 * LOAD_CHUNK,
            ..RegistryOptions::default()
        };
        let registry = Registry::new(options, Arc::new(store), clock);
        registry.load().expect("the store loads");
        registry
    };
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let accounts = 3 * LOAD_CHUNK + 17;
    let mut permits = Vec::new();
    {
        let registry = open(clock.clone());
        for i in 0..accounts {
            let account = format!("acct-{i}");
            registry.check(&account, Intent::New).await.expect("check");
            // Every tenth account opens; every other one keeps one failure.
            let failures = if i.is_multiple_of(10) { 2 } else { 1 };
            for _ in 0..failures {
                registry
                    .report(&account, "", Report::failure(FailureKind::Unspecified))
                    .await
                    .expect("report");
            }
            if !i.is_multiple_of(10) {
                permits.push((
                    account,
                    registry
                        .check(&format!("acct-{i}"), Intent::New)
                        .await
                        .expect("check")
                        .permit_id(),
                ));
            }
        }
    }
    let registry = open(clock);
    assert_eq!(registry.account_count(), accounts);
    let (all, more) = registry.list(None, None, usize::MAX).await.expect("list");
    assert!(!more);
    assert_eq!(all.len(), accounts);
    for view in &all {
        let i: usize = view.account_id["acct-".len()..].parse().expect("index");
        let (state, failures) = if i.is_multiple_of(10) {
            (State::Open, 2)
        } else {
            (State::Closed, 1)
        };
        assert_eq!(
            (view.state, view.failure_count),
            (state, failures),
            "{}",
            view.account_id
        );
    }
    for (account, permit) in permits.iter().step_by(50) {
        let answer = registry
            .report(account, permit, Report::success())
            .await
            .expect("a permit from before the restart is taken");
        assert_eq!(answer.state, State::Closed);
    }
}

/// The clock stepped while the service was down: a step back lengthens what is left of an open
/// period; a step forward may shorten it, but recovery is still tested through probes.
#[tokio::test]
async fn clock_steps_across_a_restart_never_skip_recovery_testing() {
    const T: u64 = 1_700_000_000_000_000_000;
    let store = Arc::new(MemoryStore::new(100));
    let options = || RegistryOptions {
        rulebook: opening_at_two(),
        ..RegistryOptions::default()
    };
    let start = |clock: Arc<ManualClock>| {
        let registry = Registry::new(options(), store.clone(), clock);
        registry.load().expect("loads");
        registry
    };
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(T)));
    let registry = start(clock.clone());
    fail(&registry, "ACC").await;
    fail(&registry, "ACC").await;
    let opened = registry.get("ACC").await.expect("breaker");
    assert_eq!(opened.state, State::Open);
    let recovery_at = opened.recovery_at.expect("a recovery time");
    drop(registry);

    // Down 100 s, and the wall clock stepped back an hour meanwhile: still OPEN, recovery at
    // the stored instant, which is now further away than the 200 s that were left.
    let back = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        T + 100_000_000_000 - 3_600_000_000_000,
    )));
    let registry = start(back.clone());
    registry.fire_due(back.now()).await;
    let view = registry.get("ACC").await.expect("breaker");
    assert_eq!(view.state, State::Open);
    assert_eq!(view.recovery_at, Some(recovery_at));
    assert!(
        !registry
            .check("ACC", Intent::New)
            .await
            .expect("check")
            .allowed
    );
    drop(registry);

    // Down 100 s, and the wall clock stepped forward an hour: due at once, and recovery is
    // tested, not skipped: HALF_OPEN, probes only.
    let forward = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        T + 100_000_000_000 + 3_600_000_000_000,
    )));
    let registry = start(forward.clone());
    registry.fire_due(forward.now()).await;
    assert_eq!(
        registry.get("ACC").await.expect("breaker").state,
        State::HalfOpen
    );
    let tries = opening_at_two().defaults.half_open_max_tries;
    for _ in 0..tries {
        let probe = registry.check("ACC", Intent::New).await.expect("check");
        assert!(probe.allowed && probe.probe, "{probe:?}");
    }
    let more = registry.check("ACC", Intent::New).await.expect("check");
    assert!(!more.allowed, "beyond the probes: {more:?}");
}

/// A registry of at most `max` accounts over `store`, on `clock`.
fn bounded(max: usize, store: Arc<MemoryStore>, clock: Arc<ManualClock>) -> Registry {
    let options = RegistryOptions {
        rulebook: opening_at_two(),
        max_accounts: max,
        ..RegistryOptions::default()
    };
    let registry = Registry::new(options, store, clock);
    registry.load().expect("an empty store loads");
    registry
}

#[tokio::test]
async fn a_flood_of_new_accounts_evicts_idle_breakers_and_never_one_that_matters() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let store = Arc::new(MemoryStore::new(100));
    let registry = bounded(100, store.clone(), clock.clone());
    // What matters: OPEN, tripped, shadowed, failing, HALF_OPEN.
    fail(&registry, "OPEN").await;
    fail(&registry, "OPEN").await;
    registry
        .trip("TRIPPED", action("drill"), "", None)
        .await
        .expect("trip");
    registry
        .set_mode("SHADOW", Some(Mode::Shadow), action("trial"), "")
        .await
        .expect("mode");
    // Failures with their permits: FAILING fails again every 30 s (always a failure in the
    // window), FAILED-ONCE once, long ago.
    let failing = |account: &'static str| {
        let registry = &registry;
        async move {
            let permit = registry
                .check(account, Intent::New)
                .await
                .expect("check")
                .permit_id();
            registry
                .report(account, &permit, Report::failure(FailureKind::Other))
                .await
                .expect("report");
            permit
        }
    };
    failing("FAILING").await;
    let old_permit = failing("FAILED-ONCE").await;
    let tighter = crate::core::Overrides {
        failure_threshold: Some(1),
        ..crate::core::Overrides::default()
    };
    registry
        .set_settings("TUNED", &tighter, &[], action("tighter"), "")
        .await
        .expect("settings");
    // A failure without a permit is forgotten once it leaves the window: that breaker may go.
    fail(&registry, "FAILED-LONG-AGO").await;
    let keep = ["OPEN", "TRIPPED", "SHADOW", "FAILING", "TUNED"];
    // Ten times the limit of junk ids, each checked once, a second apart.
    for i in 0..1_000 {
        clock.advance(Duration::from_secs(1));
        let result = registry
            .check(&format!("JUNK-{i}"), Intent::New)
            .await
            .expect("room is made for a new account");
        assert!(result.allowed);
        assert!(registry.account_count() <= 100);
        if i % 30 == 29 {
            registry
                .report("FAILING", "", Report::failure(FailureKind::Other))
                .await
                .expect("report");
        }
    }
    assert_eq!(registry.account_count(), 100);
    for account in keep {
        let breaker = registry.get(account).await.expect("kept");
        assert_eq!(breaker.account_id, account);
    }
    assert_eq!(registry.get("OPEN").await.expect("kept").state, State::Open);
    // The newest junk is there, the oldest went (least recently used first), from the store too.
    assert_eq!(
        registry
            .get("TUNED")
            .await
            .expect("kept")
            .settings
            .failure_threshold,
        1
    );
    assert!(registry.get("JUNK-999").await.is_ok());
    assert!(registry.get("JUNK-0").await.is_err());
    let stored = store.load().expect("load");
    assert_eq!(stored.breakers.len(), 100);
    assert!(stored.breakers.iter().all(|b| b.account_id != "JUNK-0"));
    assert!(keep
        .iter()
        .all(|k| stored.breakers.iter().any(|b| b.account_id == *k)));
    assert!(registry.get("FAILED-LONG-AGO").await.is_err());
    // A failure that left the window goes with its breaker; its permit, reported again to the
    // breaker made anew, is stale there and counts nothing.
    assert!(registry.get("FAILED-ONCE").await.is_err());
    let again = registry
        .report(
            "FAILED-ONCE",
            &old_permit,
            Report::failure(FailureKind::Other),
        )
        .await
        .expect("report");
    assert_eq!(again.disposition, Disposition::Stale);
    assert_eq!(again.failure_count, 0);
}

#[tokio::test]
async fn the_least_recently_used_idle_breaker_goes_first() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let registry = bounded(3, Arc::new(MemoryStore::new(100)), clock.clone());
    for account in ["A", "B", "C"] {
        clock.advance(Duration::from_secs(1));
        registry.check(account, Intent::New).await.expect("check");
    }
    clock.advance(Duration::from_secs(1));
    registry
        .check("A", Intent::New)
        .await
        .expect("A used again");
    clock.advance(Duration::from_secs(1));
    registry.check("D", Intent::New).await.expect("D");
    assert!(
        registry.get("B").await.is_err(),
        "B was used least recently"
    );
    for kept in ["A", "C", "D"] {
        assert!(registry.get(kept).await.is_ok(), "{kept}");
    }
}

#[tokio::test]
async fn with_nothing_idle_a_new_account_is_refused_naming_the_limit() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let registry = bounded(2, Arc::new(MemoryStore::new(100)), clock.clone());
    for account in ["X", "Y"] {
        registry
            .trip(account, action("drill"), "", None)
            .await
            .expect("trip");
    }
    let refused = registry
        .check("Z", Intent::New)
        .await
        .expect_err("nothing can go");
    assert!(
        matches!(refused, Error::AccountLimit { max: 2 }),
        "{refused:?}"
    );
    assert_eq!(registry.account_count(), 2);
    // Reset, and kept idle past the backoff memory: it may go now.
    registry
        .reset("X", action("done"), "")
        .await
        .expect("reset");
    clock.advance(Duration::from_secs(2 * 3600));
    registry.check("Z", Intent::New).await.expect("X made room");
    assert!(registry.get("X").await.is_err());
    assert!(registry.get("Y").await.is_ok());
}

/// A search that read every shard and found nothing idle is not repeated for a second: new
/// accounts meanwhile are refused at once, even when a breaker has become idle since; after the
/// second that breaker makes room.
#[tokio::test]
async fn with_nothing_idle_new_accounts_are_refused_for_a_second_without_another_search() {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let options = RegistryOptions {
        rulebook: Rulebook {
            defaults: Arc::new(Settings {
                failure_threshold: 2,
                failure_window: Duration::from_millis(500),
                ..Settings::default()
            }),
            ..Rulebook::default()
        },
        max_accounts: 2,
        ..RegistryOptions::default()
    };
    let registry = Registry::new(options, Arc::new(MemoryStore::new(100)), clock.clone());
    registry.load().expect("an empty store loads");
    // One failure each, in the window: CLOSED, and nothing that may be forgotten.
    fail(&registry, "X").await;
    fail(&registry, "Y").await;
    let refused =
        |result: Result<CheckResult>| matches!(result, Err(Error::AccountLimit { max: 2 }));
    assert!(
        refused(registry.check("Z", Intent::New).await),
        "nothing idle"
    );
    // The failures leave the window: both breakers are idle now, but the last search is recent.
    clock.advance(Duration::from_millis(600));
    assert!(
        refused(registry.check("Z", Intent::New).await),
        "within the second"
    );
    assert_eq!(registry.account_count(), 2);
    clock.advance(Duration::from_millis(500));
    let admitted = registry.check("Z", Intent::New).await.expect("room made");
    assert!(admitted.allowed);
    assert_eq!(registry.account_count(), 2);
}

/// Operator settings decide from the next report on, outlive reloads and restarts, show where
/// each value comes from, are refused whole when invalid, and clear back to the file's.
#[tokio::test]
async fn operator_settings_apply_at_once_outlive_reloads_and_restarts_and_clear_back() {
    use crate::core::Overrides;
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let store = Arc::new(MemoryStore::new(100));
    let registry = with_policy(clock.clone(), store.clone(), desk_policy());
    fail(&registry, "ACC").await;
    let lower = Overrides {
        failure_threshold: Some(1),
        open_timeout_secs: Some(30.0),
        ..Overrides::default()
    };
    let view = registry
        .set_settings("ACC", &lower, &[], action("flaky venue"), "peer")
        .await
        .expect("set");
    assert_eq!(view.settings.failure_threshold, 1);
    assert_eq!(view.settings.open_timeout, Duration::from_secs(30));
    assert_eq!(view.state, State::Closed, "the state is untouched");
    let source = |view: &BreakerView, key: &str| {
        view.setting_sources
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, s)| *s)
    };
    assert_eq!(
        source(&view, "failure_threshold"),
        Some(SettingSource::Operator)
    );
    assert_eq!(
        source(&view, "failure_window_secs"),
        Some(SettingSource::Default)
    );

    // Refused whole: an invalid value, an unknown key, and a combination the file's values
    // make invalid; the breaker keeps what it had.
    let bad = [
        (
            Overrides {
                failure_threshold: Some(0),
                ..Overrides::default()
            },
            vec![],
        ),
        (Overrides::default(), vec!["failure_treshold".to_owned()]),
        (
            Overrides {
                max_open_timeout_secs: Some(10.0),
                ..Overrides::default()
            },
            vec![],
        ),
        (Overrides::default(), vec![]),
    ];
    for (set, clear) in bad {
        let refused = registry
            .set_settings("ACC", &set, &clear, action("typo"), "peer")
            .await
            .expect_err("refused");
        assert!(matches!(refused, Error::InvalidArgument(_)), "{refused:?}");
    }
    assert_eq!(
        registry.get("ACC").await.expect("breaker").settings,
        view.settings
    );

    // A reload keeps them over the new file; the next failure opens at the operator's 1.
    let mut policy = desk_policy();
    policy.defaults = Arc::new(Settings {
        failure_threshold: 4,
        ..Settings::default()
    });
    registry.reload(policy.clone()).await;
    let reloaded = registry.get("ACC").await.expect("breaker");
    assert_eq!(reloaded.settings.failure_threshold, 1);
    assert_eq!(
        source(&reloaded, "failure_threshold"),
        Some(SettingSource::Operator)
    );
    fail(&registry, "ACC").await;
    let opened = registry.get("ACC").await.expect("breaker");
    assert_eq!(opened.state, State::Open);
    assert_eq!(
        opened.recovery_at,
        Some(clock.now().saturating_add(Duration::from_secs(30)))
    );

    // Audited, with what was set.
    let audit = registry
        .audit(AuditQuery {
            account_id: Some("ACC".into()),
            limit: 10,
            ..AuditQuery::default()
        })
        .await
        .expect("audit");
    assert_eq!(audit.len(), 1, "refusals are not audited");
    assert_eq!(audit[0].action, AuditAction::SetSettings);
    assert_eq!(
        audit[0].detail,
        "set failure_threshold=1, open_timeout_secs=30"
    );

    // A restart on the same store brings them back.
    let restarted = with_policy(clock.clone(), store.clone(), policy.clone());
    let back = restarted.get("ACC").await.expect("breaker");
    assert_eq!(back.settings.failure_threshold, 1);
    assert_eq!(back.operator_settings.as_deref(), Some(&lower));

    // Cleared key by key, back to the file's values, and forgotten once none is left.
    restarted
        .set_settings(
            "ACC",
            &Overrides::default(),
            &["failure_threshold".into()],
            action("venue fixed"),
            "peer",
        )
        .await
        .expect("clear one");
    let half = restarted.get("ACC").await.expect("breaker");
    assert_eq!(half.settings.failure_threshold, 4);
    assert_eq!(half.settings.open_timeout, Duration::from_secs(30));
    assert_eq!(
        source(&half, "failure_threshold"),
        Some(SettingSource::File)
    );
    let cleared = restarted
        .set_settings(
            "ACC",
            &Overrides::default(),
            &["open_timeout_secs".into()],
            action("venue fixed"),
            "peer",
        )
        .await
        .expect("clear the rest");
    assert_eq!(cleared.operator_settings, None);
    assert_eq!(cleared.settings, policy.settings_for("ACC"));
    let stored = store.load().expect("load");
    assert_eq!(stored.breakers[0].settings, None);
}
