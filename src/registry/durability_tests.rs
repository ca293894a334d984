//! No answer before the changes it depends on are durable, as a property: random checks,
//! reports (retries among them), resets, trips and time steps run against a registry whose
//! store holds every commit until the test releases a random prefix of them; then the power
//! is cut: a new registry loads only what was released, and every answer that had been given
//! must still be true of it.
//!
//! - A failure report answered (RECORDED, DUPLICATE or STALE) relied on its outcome being
//!   counted or its permit's generation being over: reported again after the crash, it must
//!   not be RECORDED as new.
//! - A check allowed with a permit of generation `g` relied on `g` having begun: after the
//!   crash the breaker's generation is at least `g`, so the permit is never handed out again.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use proptest::prelude::*;
use tokio::sync::oneshot;

use super::*;
use crate::clock::ManualClock;
use crate::core::{Disposition, Intent, Report};
use crate::store::MemoryStore;

/// A store whose commits become durable only when the test says, in submission order: what was
/// released is in `durable`, what was not is lost at the cut.
struct HoldingStore {
    durable: Arc<MemoryStore>,
    held: Mutex<Held>,
    signals: Arc<StoreSignals>,
}

type Reply = oneshot::Sender<std::result::Result<(), StoreError>>;

#[derive(Default)]
struct Held {
    last_ticket: u64,
    /// Held batches with their tickets and the callers to answer, oldest first.
    batches: Vec<(u64, Batch, Reply)>,
}

impl HoldingStore {
    fn new() -> Self {
        HoldingStore {
            durable: Arc::new(MemoryStore::new(10_000)),
            held: Mutex::default(),
            signals: Arc::new(StoreSignals::new(0)),
        }
    }

    /// Makes durable the oldest `count` held batches.
    fn release(&self, count: usize) {
        let mut held = self.held.lock().expect("held");
        let count = count.min(held.batches.len());
        let mut through = None;
        let mut sequence = None;
        for (ticket, batch, reply) in held.batches.drain(..count) {
            sequence = batch.events.last().map(|e| e.sequence).or(sequence);
            self.durable.submit(batch);
            through = Some(ticket);
            let _ = reply.send(Ok(()));
        }
        if let Some(ticket) = through {
            self.signals.wrote(sequence, ticket);
        }
    }
}

impl Store for HoldingStore {
    fn load_streaming(
        &self,
        breakers: &(dyn Fn(Loading) + Sync),
    ) -> std::result::Result<Recovered, StoreError> {
        self.durable.load_streaming(breakers)
    }

    fn submit(&self, batch: Batch) -> Commit {
        let mut held = self.held.lock().expect("held");
        held.last_ticket += 1;
        let ticket = held.last_ticket;
        let (reply, receiver) = oneshot::channel();
        held.batches.push((ticket, batch, reply));
        Commit::pending(ticket, receiver)
    }

    fn signals(&self) -> Arc<StoreSignals> {
        self.signals.clone()
    }

    fn audit_records(
        &self,
        query: &AuditQuery,
    ) -> std::result::Result<Vec<AuditRecord>, StoreError> {
        self.durable.audit_records(query)
    }
}

#[derive(Clone, Debug)]
enum Op {
    Check(usize),
    /// A failure with the permit of the `back`-th latest allowed check of the account: a
    /// retry when that permit was reported before.
    Fail {
        account: usize,
        back: usize,
    },
    /// A success with the latest permit (a probe's success closes the breaker).
    Succeed(usize),
    Reset(usize),
    Trip(usize),
    Advance(u64),
    /// The disk finishes the oldest `n` held commits.
    Release(usize),
}

const ACCOUNTS: [&str; 3] = ["A", "B", "C"];

fn op() -> impl Strategy<Value = Op> {
    let account = 0..ACCOUNTS.len();
    prop_oneof![
        4 => account.clone().prop_map(Op::Check),
        4 => (account.clone(), 0usize..3).prop_map(|(account, back)| Op::Fail { account, back }),
        2 => account.clone().prop_map(Op::Succeed),
        1 => account.clone().prop_map(Op::Reset),
        1 => account.prop_map(Op::Trip),
        1 => (0u64..3).prop_map(Op::Advance),
        3 => (0usize..4).prop_map(Op::Release),
    ]
}

/// An answer that was given, and what it relied on.
#[derive(Debug)]
enum Given {
    Reported {
        account: usize,
        permit: String,
        disposition: Disposition,
    },
    Allowed {
        account: usize,
        generation: u64,
    },
}

type Pending = Pin<Box<dyn Future<Output = Option<Given>>>>;

/// Polls every pending answer once; the ready ones are given.
fn poll_all(pending: &mut Vec<Pending>, given: &mut Vec<Given>) {
    let mut context = Context::from_waker(Waker::noop());
    pending.retain_mut(|answer| match answer.as_mut().poll(&mut context) {
        Poll::Ready(answer) => {
            given.extend(answer);
            false
        }
        Poll::Pending => true,
    });
}

fn options() -> RegistryOptions {
    RegistryOptions {
        rulebook: Rulebook {
            defaults: Arc::new(Settings {
                failure_threshold: 2,
                failure_window: Duration::from_secs(3600),
                open_timeout: Duration::from_secs(2),
                half_open_max_tries: 1,
                half_open_timeout: Duration::from_secs(3600),
                ..Settings::default()
            }),
            ..Rulebook::default()
        },
        ..RegistryOptions::default()
    }
}

fn run(ops: Vec<Op>) -> std::result::Result<(), TestCaseError> {
    let clock = Arc::new(ManualClock::starting_at(Timestamp::from_unix_nanos(
        1_700_000_000_000_000_000,
    )));
    let store = Arc::new(HoldingStore::new());
    let registry = Arc::new(Registry::new(options(), store.clone(), clock.clone()));
    registry.load().expect("an empty store loads");
    let mut permits: [Vec<String>; 3] = Default::default();
    let mut pending: Vec<Pending> = Vec::new();
    let mut given = Vec::new();
    let action = OperatorAction::new("model", "property").expect("action");
    for op in ops {
        match op {
            Op::Check(account) => {
                let Ok((result, when)) = registry.decide(ACCOUNTS[account], Intent::New) else {
                    continue;
                };
                if !result.allowed || result.permit.is_none() {
                    continue;
                }
                permits[account].push(result.permit_id());
                let registry = registry.clone();
                pending.push(Box::pin(async move {
                    let result = registry
                        .settle_check(ACCOUNTS[account], result, when)
                        .await
                        .ok()?;
                    result.allowed.then(|| Given::Allowed {
                        account,
                        generation: result.generation(),
                    })
                }));
            }
            Op::Fail { .. } | Op::Succeed(_) => {
                let (account, back, failed) = match op {
                    Op::Fail { account, back } => (account, back, true),
                    Op::Succeed(account) => (account, 0, false),
                    _ => continue,
                };
                let Some(permit) = permits[account].iter().rev().nth(back).cloned() else {
                    continue;
                };
                let registry = registry.clone();
                pending.push(Box::pin(async move {
                    let report = Report {
                        failed,
                        ..Report::default()
                    };
                    let result = registry
                        .report(ACCOUNTS[account], &permit, report)
                        .await
                        .ok()?;
                    failed.then_some(Given::Reported {
                        account,
                        permit,
                        disposition: result.disposition,
                    })
                }));
            }
            Op::Reset(account) | Op::Trip(account) => {
                let registry = registry.clone();
                let action = action.clone();
                let trip = matches!(op, Op::Trip(_));
                pending.push(Box::pin(async move {
                    let _ = if trip {
                        registry.trip(ACCOUNTS[account], action, "", None).await
                    } else {
                        registry.reset(ACCOUNTS[account], action, "").await
                    };
                    None
                }));
            }
            Op::Advance(seconds) => {
                clock.advance(Duration::from_secs(seconds));
                // Time-driven transitions happen on the next touch of each breaker.
                for account in ACCOUNTS {
                    let _ = registry.decide(account, Intent::Cancel);
                }
            }
            Op::Release(count) => store.release(count),
        }
        poll_all(&mut pending, &mut given);
    }

    // The power is cut: what was not released is gone.
    let recovered = Registry::new(options(), store.durable.clone(), clock.clone());
    recovered.load().expect("what was released loads");
    let mut context = Context::from_waker(Waker::noop());
    for answer in &given {
        match answer {
            Given::Reported {
                account,
                permit,
                disposition,
            } => {
                let again = recovered.record_report(
                    ACCOUNTS[*account],
                    permit,
                    Report {
                        failed: true,
                        ..Report::default()
                    },
                );
                let (result, _) = again.expect("a valid report");
                prop_assert_ne!(
                    result.disposition,
                    Disposition::Recorded,
                    "{} was answered {:?} before the crash, yet after it the failure was new",
                    permit,
                    disposition
                );
            }
            Given::Allowed {
                account,
                generation,
            } => {
                let view = Box::pin(recovered.get(ACCOUNTS[*account]))
                    .as_mut()
                    .poll(&mut context);
                let recovered_generation = match view {
                    Poll::Ready(Ok(view)) => view.generation,
                    _ => 0,
                };
                prop_assert!(
                    recovered_generation >= *generation,
                    "{} was allowed under generation {}, which the crash took back (now {})",
                    ACCOUNTS[*account],
                    generation,
                    recovered_generation
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn no_answer_is_given_before_what_it_relies_on_is_durable(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        run(ops)?;
    }
}
