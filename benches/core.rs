//! Criterion benchmarks of the hot paths: the pure core's check and outcome, the registry's
//! check of a hot account among 1 and 1,000,000 (lookup and clock read included), and the
//! fan-out of one state change to 100 watchers. Before them, allocations per `CheckTrade` in
//! CLOSED are counted with a counting allocator.
//!
//!   cargo bench --bench core

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion};
use futures_util::FutureExt;
use riskgate::core::{Breaker, Decision, Intent, Outcome, Settings, Timestamp};
use riskgate::history::OperatorAction;
use riskgate::registry::Registry;

/// Counts allocations, so a bench can say how many one operation makes.
struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn registry(accounts: usize) -> Registry {
    let registry = common::in_memory_registry(accounts);
    // A new account's first check waits for its breaker to be stored (at once, in memory);
    // every check after it in CLOSED waits for nothing.
    for i in 0..accounts {
        let created = registry
            .check(&format!("acct-{i}"), Intent::New)
            .now_or_never()
            .expect("the in-memory store is durable at once");
        black_box(created.expect("check"));
    }
    registry
}

fn check(registry: &Registry, account: &str) {
    let (result, commit) = registry.decide(account, Intent::New).expect("check");
    assert!(commit.is_none(), "a check in CLOSED never waits");
    black_box(result);
}

fn count_allocations() {
    let registry = registry(1);
    check(&registry, "acct-0");
    const N: u64 = 10_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        check(&registry, "acct-0");
    }
    let decided = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        let result = registry
            .check("acct-0", Intent::New)
            .now_or_never()
            .expect("a check in CLOSED never waits")
            .expect("check");
        riskgate::metrics::checked(&riskgate::metrics::Timer::start(), || result.metric());
        black_box(riskgate::api::convert::check_response(result, 0));
    }
    let answered = (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / N as f64;
    println!(
        "allocations per CheckTrade in CLOSED: {decided:.2} to decide (registry), {answered:.2} with the answer built (the permit's text; no metrics recorder)"
    );
}

fn core(c: &mut Criterion) {
    let settings = Settings::default();
    let now = Timestamp::from_unix_nanos(1_700_000_000_000_000_000);
    let mut group = c.benchmark_group("core");
    group.bench_function("check_closed", |b| {
        let mut breaker = Breaker::new();
        b.iter(|| black_box(breaker.check(&settings, black_box(now))));
    });
    group.bench_function("check_and_success", |b| {
        let mut breaker = Breaker::new();
        b.iter(|| {
            let (decision, _) = breaker.check(&settings, now);
            let Decision::Allowed { permit, .. } = decision else {
                unreachable!()
            };
            black_box(breaker.record(&settings, Some(permit), Outcome::Success, now))
        });
    });
    group.bench_function("check_and_failure_in_window", |b| {
        let settings = Settings {
            failure_threshold: u32::MAX,
            failure_window: Duration::from_nanos(1),
            ..Settings::default()
        };
        let mut breaker = Breaker::new();
        let mut t = now;
        b.iter(|| {
            t = t.saturating_add(Duration::from_nanos(10));
            let (decision, _) = breaker.check(&settings, t);
            let Decision::Allowed { permit, .. } = decision else {
                unreachable!()
            };
            black_box(breaker.record(&settings, Some(permit), Outcome::Failure, t))
        });
    });
    group.finish();
}

fn registry_check(c: &mut Criterion) {
    let mut group = c.benchmark_group("registry_check_hot_account");
    for accounts in [1usize, 1_000_000] {
        let registry = registry(accounts);
        group.bench_with_input(BenchmarkId::from_parameter(accounts), &accounts, |b, _| {
            b.iter(|| check(&registry, black_box("acct-0")))
        });
    }
    group.finish();
}

fn fan_out(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_fan_out");
    let registry = registry(1);
    let mut feeds: Vec<_> = (0..100)
        .map(|_| {
            registry
                .subscribe(&[], None)
                .now_or_never()
                .expect("nothing to wait for")
                .expect("subscribe")
                .live
        })
        .collect();
    let action = OperatorAction::new("bench", "fan-out").expect("action");
    let mut trip = true;
    group.bench_function("one_change_to_100_watchers", |b| {
        b.iter(|| {
            let result = if trip {
                registry
                    .trip("acct-0", action.clone(), "", None)
                    .now_or_never()
            } else {
                registry.reset("acct-0", action.clone(), "").now_or_never()
            }
            .expect("the memory store answers at once");
            black_box(result.expect("action"));
            trip = !trip;
            for feed in &mut feeds {
                black_box(feed.try_recv().expect("delivered"));
            }
        });
    });
    group.finish();
}

criterion_group!(benches, core, registry_check, fan_out);

fn main() {
    count_allocations();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
