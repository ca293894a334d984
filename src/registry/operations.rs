//! The registry's operations: the gate (check, report) and the operator actions (reset, trip).
//! Each validates its input, runs the core under the account's shard lock, and waits for the
//! store only when something durable changed.

use hashbrown::hash_map::EntryRef;

use super::{reasons, validate_account_id, BreakerView, OperatorAction, Registry, Slot};
use crate::core::{
    permit, Breaker, Decision, Denial, Disposition, Outcome, Settings, State, Timestamp,
    Transitions,
};
use crate::error::{Error, Result};
use crate::store::{AuditAction, AuditRecord, Commit};

/// Longest operator name accepted.
pub const MAX_OPERATOR_LEN: usize = 128;
/// Longest operator reason accepted.
pub const MAX_REASON_LEN: usize = 1024;

/// Why a check was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The breaker denied it.
    Breaker(Denial),
    /// The store cannot write, so the gate fails closed.
    StoreUnavailable,
}

/// The answer to a check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// `None` when allowed.
    pub denied: Option<Denied>,
    /// True when the permit is a probe.
    pub probe: bool,
    /// The generation that issued the permit (0 when denied).
    pub generation: u64,
    /// The breaker's state after the check.
    pub state: State,
    pub failure_count: u32,
    /// The text form of the permit; empty when denied.
    pub permit_id: String,
    /// Why the check was denied; empty when allowed.
    pub reason: String,
}

/// The answer to a reported outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportResult {
    pub state: State,
    pub disposition: Disposition,
    pub failure_count: u32,
}

impl OperatorAction {
    /// An operator action with both fields present and within bounds.
    pub fn new(operator: &str, reason: &str) -> Result<Self> {
        let operator = operator.trim();
        let reason = reason.trim();
        if operator.is_empty() {
            return Err(Error::MissingField { field: "operator" });
        }
        if reason.is_empty() {
            return Err(Error::MissingField { field: "reason" });
        }
        if operator.len() > MAX_OPERATOR_LEN {
            return Err(Error::FieldTooLong {
                field: "operator",
                max: MAX_OPERATOR_LEN,
            });
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(Error::FieldTooLong {
                field: "reason",
                max: MAX_REASON_LEN,
            });
        }
        if operator.chars().chain(reason.chars()).any(char::is_control) {
            return Err(Error::InvalidArgument(
                "operator and reason must not contain control characters".into(),
            ));
        }
        Ok(OperatorAction {
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        })
    }
}

/// What one core operation produced, for `Registry::update`.
struct Change<R> {
    result: R,
    transitions: Transitions,
    /// Durable state changed even without a transition (a failure counted, a probe granted).
    persist: bool,
}

impl Registry {
    /// Asks for a permit to place one order for `account_id`, creating its breaker on first use.
    /// While the store cannot write, every check is denied ("store unavailable"): the gate
    /// fails closed rather than allow orders whose outcomes could not be kept.
    pub async fn check(&self, account_id: &str) -> Result<CheckResult> {
        validate_account_id(account_id)?;
        self.ensure_ready()?;
        if !self.signals.is_writable() {
            return Ok(self.store_unavailable(account_id));
        }
        let tag = permit::account_tag(account_id);
        let (result, commit) =
            self.update(account_id, tag, None, None, |breaker, settings, now| {
                let (decision, transitions) = breaker.check(settings, now);
                let failure_count = breaker.failure_count(settings, now);
                let (denied, probe, generation, permit_id, reason) = match &decision {
                    Decision::Allowed { permit, probe } => (
                        None,
                        *probe,
                        permit.generation,
                        permit::encode(tag, *permit),
                        String::new(),
                    ),
                    Decision::Denied(denial) => (
                        Some(Denied::Breaker(*denial)),
                        false,
                        0,
                        String::new(),
                        reasons::denial(denial, failure_count, settings),
                    ),
                };
                Change {
                    result: CheckResult {
                        denied,
                        probe,
                        generation,
                        state: breaker.state(),
                        failure_count,
                        permit_id,
                        reason,
                    },
                    transitions,
                    persist: probe,
                }
            })?;
        self.wait_durable(commit).await?;
        Ok(result)
    }

    fn store_unavailable(&self, account_id: &str) -> CheckResult {
        let now = self.clock.now();
        let (state, failure_count) =
            self.shard(account_id)
                .get(account_id)
                .map_or((State::Closed, 0), |slot| {
                    (
                        slot.breaker.state(),
                        slot.breaker.failure_count(&slot.settings, now),
                    )
                });
        let detail = self.signals.last_error().unwrap_or_default();
        CheckResult {
            denied: Some(Denied::StoreUnavailable),
            probe: false,
            generation: 0,
            state,
            failure_count,
            permit_id: String::new(),
            reason: format!("store unavailable: orders are denied until riskgate can record outcomes again ({detail})"),
        }
    }

    /// Records how an order ended. An empty `permit_id` applies to the current generation.
    pub async fn report(
        &self,
        account_id: &str,
        permit_id: &str,
        outcome: Outcome,
    ) -> Result<ReportResult> {
        validate_account_id(account_id)?;
        self.ensure_writable()?;
        let tag = permit::account_tag(account_id);
        let permit = match permit_id {
            "" => None,
            text => Some(
                permit::decode(tag, text).map_err(|source| Error::InvalidPermit {
                    account: account_id.to_owned(),
                    source,
                })?,
            ),
        };
        let (result, commit) =
            self.update(account_id, tag, None, None, |breaker, settings, now| {
                let (disposition, transitions) = breaker.record(settings, permit, outcome, now);
                let state = breaker.state();
                // A success in CLOSED changes nothing durable: it needs no write.
                let persist = disposition == Disposition::Recorded
                    && (outcome == Outcome::Failure || state != State::Closed);
                Change {
                    result: ReportResult {
                        state,
                        disposition,
                        failure_count: breaker.failure_count(settings, now),
                    },
                    transitions,
                    persist,
                }
            })?;
        self.wait_durable(commit).await?;
        Ok(result)
    }

    /// Operator reset: CLOSED, all counters cleared. `peer` is the caller's address.
    pub async fn reset(
        &self,
        account_id: &str,
        action: OperatorAction,
        peer: &str,
    ) -> Result<BreakerView> {
        self.operator_action(account_id, action, peer, AuditAction::Reset, Breaker::reset)
            .await
    }

    /// Operator trip: OPEN and held until reset. `peer` is the caller's address.
    pub async fn trip(
        &self,
        account_id: &str,
        action: OperatorAction,
        peer: &str,
    ) -> Result<BreakerView> {
        self.operator_action(account_id, action, peer, AuditAction::Trip, Breaker::trip)
            .await
    }

    async fn operator_action(
        &self,
        account_id: &str,
        action: OperatorAction,
        peer: &str,
        kind: AuditAction,
        act: fn(&mut Breaker, &Settings, Timestamp) -> crate::core::Transition,
    ) -> Result<BreakerView> {
        validate_account_id(account_id)?;
        self.ensure_writable()?;
        let audit = |before: State, after: State, at: Timestamp| AuditRecord {
            id: 0,
            at,
            account_id: account_id.to_owned(),
            action: kind,
            operator: action.operator.clone(),
            reason: action.reason.clone(),
            state_before: before,
            state_after: after,
            peer: peer.to_owned(),
        };
        let ((), commit) = self.update(
            account_id,
            permit::account_tag(account_id),
            Some(&action),
            Some(&audit),
            |breaker, settings, now| Change {
                result: (),
                transitions: Transitions::one(act(breaker, settings, now)),
                persist: true,
            },
        )?;
        self.wait_durable(commit).await?;
        self.get(account_id)
    }

    /// Runs `operation` on the account's breaker (created on first use) under its shard lock,
    /// then records what changed. `tag` is the account's permit tag.
    fn update<R>(
        &self,
        account_id: &str,
        tag: u64,
        operator: Option<&OperatorAction>,
        audit: Option<&dyn Fn(State, State, Timestamp) -> AuditRecord>,
        operation: impl FnOnce(&mut Breaker, &Settings, Timestamp) -> Change<R>,
    ) -> Result<(R, Option<Commit>)> {
        let mut shard = self.shard_of(tag);
        let slot = match shard.entry_ref(account_id) {
            EntryRef::Occupied(entry) => entry.into_mut(),
            EntryRef::Vacant(entry) => {
                self.reserve_account()?;
                entry.insert_with_key(
                    account_id.into(),
                    Slot {
                        breaker: Breaker::new(),
                        settings: self.settings_for(account_id),
                        last_sequence: 0,
                        scheduled: None,
                    },
                )
            }
        };
        // Read under the lock, so that one breaker never sees time go backwards.
        let now = self.clock.now();
        let before = slot.breaker.state();
        let Change {
            result,
            transitions,
            persist,
        } = operation(&mut slot.breaker, &slot.settings, now);
        let audit = audit.map(|record| record(before, slot.breaker.state(), now));
        let commit = self.after_change(account_id, slot, transitions, persist, operator, audit);
        Ok((result, commit))
    }
}
