//! Reading many breakers: pages in account-id order however the shards hold them, the console's
//! survey, and walks that leave the runtime to the checks.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use super::*;
use crate::clock::ManualClock;
use crate::core::{FailureKind, Intent, Report, Timestamp};
use crate::store::MemoryStore;

fn registry() -> Registry {
    let options = RegistryOptions {
        rulebook: Rulebook {
            defaults: Arc::new(Settings {
                failure_threshold: 1,
                ..Settings::default()
            }),
            ..Rulebook::default()
        },
        ..RegistryOptions::default()
    };
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(1)));
    let registry = Registry::new(options, Arc::new(MemoryStore::new(100)), clock);
    registry.load().expect("an empty store loads");
    registry
}

fn action() -> OperatorAction {
    OperatorAction::new("ops", "drill").expect("action")
}

/// `count` account ids in no particular order, of mixed case and length.
fn ids(count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let scrambled = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            let desk = ["Desk", "desk", "FX", "rates"][i % 4];
            format!("{desk}-{scrambled:x}-{i}")
        })
        .collect()
}

/// The number an id of [`ids`] ends with.
fn index(id: &str) -> usize {
    id.rsplit('-')
        .next()
        .and_then(|i| i.parse().ok())
        .expect("index")
}

/// What [`holding`] did to account `i`: every seventh failed (one failure opens), every
/// eleventh set to shadow mode, every thirteenth tripped by an operator.
fn failed(i: usize) -> bool {
    i.is_multiple_of(7)
}
fn shadowed(i: usize) -> bool {
    i.is_multiple_of(11)
}
fn tripped(i: usize) -> bool {
    i.is_multiple_of(13)
}
fn calm(id: &&String) -> bool {
    let i = index(id);
    !failed(i) && !shadowed(i) && !tripped(i)
}

/// A registry holding `ids`, changed as [`failed`], [`shadowed`] and [`tripped`] say.
async fn holding(ids: &[String]) -> Registry {
    let registry = registry();
    for (i, id) in ids.iter().enumerate() {
        registry.check(id, Intent::New).await.expect("check");
        if failed(i) {
            registry
                .report(id, "", Report::failure(FailureKind::Other))
                .await
                .expect("report");
        }
        if shadowed(i) {
            registry
                .set_mode(id, Some(Mode::Shadow), action(), "peer")
                .await
                .expect("mode");
        }
        if tripped(i) {
            registry
                .trip(id, action(), "peer", None)
                .await
                .expect("trip");
        }
    }
    registry
}

/// Every page of `state` at `limit` a page, following the tokens as a client does.
async fn all_pages(registry: &Registry, state: Option<State>, limit: usize) -> Vec<String> {
    let mut listed = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = registry
            .list(state, after.as_deref(), limit)
            .await
            .expect("list");
        assert!(page.len() <= limit, "a page of {} at {limit}", page.len());
        assert!(
            !more || page.len() == limit,
            "a short page with more to come"
        );
        listed.extend(page.iter().map(|view| view.account_id.clone()));
        match (more, page.last()) {
            (true, Some(last)) => after = Some(last.account_id.clone()),
            _ => return listed,
        }
    }
}

#[tokio::test]
async fn pages_follow_account_ids_in_order_whatever_the_page_size_and_state() {
    let ids = ids(600);
    let registry = holding(&ids).await;
    let mut sorted = ids.clone();
    sorted.sort();
    let open: Vec<String> = sorted
        .iter()
        .filter(|id| failed(index(id)) || tripped(index(id)))
        .cloned()
        .collect();
    for limit in [1, 7, 100, 599, 600, 601, 10_000] {
        assert_eq!(
            all_pages(&registry, None, limit).await,
            sorted,
            "all at {limit}"
        );
        assert_eq!(
            all_pages(&registry, Some(State::Open), limit).await,
            open,
            "OPEN at {limit}"
        );
    }
    assert!(all_pages(&registry, Some(State::HalfOpen), 5)
        .await
        .is_empty());
    let (last, more) = registry
        .list(None, Some(sorted[598].as_str()), 5)
        .await
        .expect("list");
    assert_eq!(
        last.iter()
            .map(|v| v.account_id.as_str())
            .collect::<Vec<_>>(),
        [sorted[599].as_str()]
    );
    assert!(!more);
}

#[tokio::test]
async fn a_survey_counts_every_breaker_and_shows_those_that_need_attention() {
    let ids = ids(600);
    let registry = holding(&ids).await;

    let survey = registry.survey("", 50).await.expect("survey");
    let open = ids
        .iter()
        .filter(|id| failed(index(id)) || tripped(index(id)))
        .count();
    assert_eq!(
        survey.counts,
        Counts {
            total: 600,
            closed: 600 - open,
            open,
            half_open: 0,
            shadow: ids.iter().filter(|id| shadowed(index(id))).count(),
            disabled: 0,
            tripped: ids.iter().filter(|id| tripped(index(id))).count(),
        }
    );
    let mut attention: Vec<String> = ids.iter().filter(|id| !calm(id)).cloned().collect();
    attention.sort();
    let mut calm_ids: Vec<String> = ids.iter().filter(calm).cloned().collect();
    calm_ids.sort();
    let shown = |views: &[BreakerView]| {
        views
            .iter()
            .map(|v| v.account_id.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(shown(&survey.attention), attention);
    assert_eq!(shown(&survey.calm), calm_ids[..50]);
    assert_eq!(survey.calm_matching, calm_ids.len());

    // The needle picks accounts by id, ignoring case; the counts stay those of every breaker.
    let desks = registry.survey("DESK-", 1_000).await.expect("survey");
    assert_eq!(desks.counts, survey.counts);
    let matching = |ids: &[String]| -> Vec<String> {
        ids.iter()
            .filter(|id| id.to_lowercase().contains("desk-"))
            .cloned()
            .collect()
    };
    assert_eq!(shown(&desks.attention), matching(&attention));
    assert_eq!(shown(&desks.calm), matching(&calm_ids));
    assert_eq!(desks.calm_matching, desks.calm.len());
    let none = registry.survey("no such desk", 10).await.expect("survey");
    assert!(none.attention.is_empty() && none.calm.is_empty() && none.calm_matching == 0);
}

/// A page, a survey and a reload of many breakers give the runtime's thread back while they
/// walk: a task beside them on a current-thread runtime gets turns before they finish.
#[tokio::test(flavor = "current_thread")]
async fn walks_of_many_breakers_let_other_tasks_run() {
    let registry = registry();
    for id in ids(4 * SCAN_TURN) {
        registry.check(&id, Intent::New).await.expect("check");
    }
    let turns = Arc::new(AtomicUsize::new(0));
    let beside = tokio::spawn({
        let turns = turns.clone();
        async move {
            loop {
                turns.fetch_add(1, Ordering::Relaxed);
                tokio::task::yield_now().await;
            }
        }
    });
    tokio::task::yield_now().await;
    let before = turns.load(Ordering::Relaxed);
    let (page, _) = registry.list(None, None, 10).await.expect("list");
    assert_eq!(page.len(), 10);
    let during_page = turns.load(Ordering::Relaxed) - before;
    let before = turns.load(Ordering::Relaxed);
    registry.survey("", 10).await.expect("survey");
    let during_survey = turns.load(Ordering::Relaxed) - before;
    let before = turns.load(Ordering::Relaxed);
    registry.reload(Rulebook::default()).await;
    let during_reload = turns.load(Ordering::Relaxed) - before;
    beside.abort();
    assert!(
        during_page >= 3 && during_survey >= 3 && during_reload >= 3,
        "turns the task beside had: {during_page} during a page, {during_survey} during a \
         survey, {during_reload} during a reload"
    );
    let threshold = Settings::default().failure_threshold;
    assert_ne!(threshold, 1, "the reload changes what the registry had");
    let (all, _) = registry.list(None, None, usize::MAX).await.expect("list");
    assert!(
        all.iter()
            .all(|view| view.settings.failure_threshold == threshold),
        "the reload reached every account"
    );
}
