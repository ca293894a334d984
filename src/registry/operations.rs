//! The registry's operations: the gate (check, report) and the operator actions (reset, trip).
//! Each validates its input, runs the core under the account's shard lock, and waits for the
//! store only when something durable changed.

use std::sync::atomic::Ordering;

use super::{
    read, reasons, validate_account_id, write, BreakerView, Event, Layer, OperatorAction, Registry,
    Slot, Wait, WhenDurable,
};
use crate::core::{
    permit, Cause, Decision, Denial, Disposition, Failure, Intent, Mode, Pass, Permit, Report,
    State, Timestamp, Transition, Transitions,
};
use crate::error::{Error, Result};
use crate::store::{AuditAction, AuditRecord, Batch, Commit, Halt};

/// Longest operator name accepted.
pub const MAX_OPERATOR_LEN: usize = 128;
/// Longest operator reason accepted.
pub const MAX_REASON_LEN: usize = 1024;

/// Why a check was (or, in shadow mode, would have been) denied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// The account's breaker denied it.
    Breaker(Denial),
    /// The store cannot write, so the gate fails closed.
    StoreUnavailable,
    /// A firm-wide or group halt is in force (boxed: rare, and it keeps every answer small).
    Halted { layer: Layer, halt: Box<Halt> },
}

impl Denied {
    /// The layer that denied: the firm (a firm-wide halt, or the service's store), a group, or
    /// the account's breaker.
    pub fn layer(&self) -> Layer {
        match self {
            Denied::Breaker(_) => Layer::Account,
            Denied::StoreUnavailable => Layer::Firm,
            Denied::Halted { layer, .. } => layer.clone(),
        }
    }
}

/// The answer to a check. Kept small (the explanation of anything but a plain permit is boxed),
/// since it is built and moved on every `CheckTrade`.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub allowed: bool,
    /// True when the permit is a probe.
    pub probe: bool,
    /// The breaker's state after the check.
    pub state: State,
    pub mode: Mode,
    pub failure_count: u32,
    /// The permit, with the account tag that its text form carries; `None` without one.
    pub permit: Option<(u64, Permit)>,
    /// Why the answer is not a plain permit; `None` for one.
    explanation: Option<Box<Explanation>>,
}

/// Why a check was denied (or, in shadow mode, would have been), or passed without a permit.
#[derive(Clone, Debug, Default, PartialEq)]
struct Explanation {
    denied: Option<Denied>,
    passed: Option<Pass>,
    reason: String,
    /// When an OPEN breaker denied: the outcomes that opened it.
    tripped_by: Vec<Failure>,
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

/// Which clock reading an operation needs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Time {
    Exact,
    /// A check records nothing with the time when the breaker is CLOSED (it issues a permit
    /// and counts the failures in the window for the answer), so a recent reading will do.
    RecentWhenClosed,
}

/// What one core operation produced, for `Registry::update`.
struct Change<R> {
    result: R,
    transitions: Transitions,
    /// Durable state changed even without a transition (a failure counted, a probe granted).
    persist: bool,
    /// Which of the account's earlier changes the answer relies on.
    relies_on: Reliance,
}

/// Which of an account's changes not yet durable an answer must wait for, besides its own.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reliance {
    /// None: a denial (tightening acts at once), a cancel.
    Nothing,
    /// The generation and mode the answer allows an order under.
    Allowing,
    /// Everything the breaker holds: a report's disposition and state, an operator's view.
    Everything,
}

impl Registry {
    /// Asks whether an order of `intent` may be placed for `account_id`, creating its breaker
    /// on first use. The layers decide in order: a cancel always passes; a firm-wide halt, then
    /// a halt of any group the account is in, deny; an unwritable store denies (the gate fails
    /// closed rather than allow orders whose outcomes could not be kept); then the account's
    /// breaker, applied as its mode says.
    pub async fn check(&self, account_id: &str, intent: Intent) -> Result<CheckResult> {
        let (result, when) = self.decide(account_id, intent)?;
        self.settle_check(account_id, result, when).await
    }

    /// Gives a decided check's answer once what it relies on is durable. If the store fails
    /// meanwhile, the order is denied as every order is while the store cannot write.
    pub async fn settle_check(
        &self,
        account_id: &str,
        result: CheckResult,
        when: Option<WhenDurable>,
    ) -> Result<CheckResult> {
        match self.wait_durable(when).await {
            Ok(()) => Ok(result),
            Err(Error::Store(_)) => Ok(self.store_unavailable(account_id)),
            Err(other) => Err(other),
        }
    }

    /// The decision of a check, without waiting: the answer, and what must be durable before
    /// it is given (a probe granted; a reset, a recovery or a mode that an allowed order relies
    /// on, while not yet durable), if anything. Never blocks.
    pub fn decide(
        &self,
        account_id: &str,
        intent: Intent,
    ) -> Result<(CheckResult, Option<WhenDurable>)> {
        validate_account_id(account_id)?;
        self.ensure_ready()?;
        if intent == Intent::Cancel {
            return Ok((self.outside_breaker(account_id, Pass::Cancel), None));
        }
        if self.halted.load(Ordering::Acquire) {
            if let Some((layer, halt)) = self.halt_over(account_id) {
                return Ok((self.halted_check(account_id, layer, halt), None));
            }
        }
        if !self.signals.is_writable() {
            return Ok((self.store_unavailable(account_id), None));
        }
        self.update(
            account_id,
            Time::RecentWhenClosed,
            None,
            None,
            |slot, now| {
                let mode = slot.mode();
                let Slot {
                    breaker,
                    settings,
                    tag,
                    ..
                } = slot;
                let state = breaker.state();
                if mode == Mode::Disabled {
                    return Change {
                        result: CheckResult::new(
                            true,
                            state,
                            breaker.failure_count(settings, now),
                            mode,
                        )
                        .explained(Explanation::reason(DISABLED.into())),
                        transitions: Transitions::default(),
                        persist: false,
                        relies_on: Reliance::Allowing,
                    };
                }
                let (decision, transitions) = breaker.check_order(settings, now, intent);
                let failure_count = breaker.failure_count(settings, now);
                let mut result = CheckResult::new(false, breaker.state(), failure_count, mode);
                let mut probe_granted = false;
                match decision {
                    Decision::Allowed { permit, probe } => {
                        result.allowed = true;
                        result.probe = probe;
                        probe_granted = probe;
                        result.permit = Some((*tag, permit));
                    }
                    Decision::Passed(pass) => {
                        result.allowed = true;
                        result = result.explained(Explanation::passed(pass));
                    }
                    Decision::Denied(denial) => {
                        result.allowed = mode == Mode::Shadow;
                        let reason = reasons::denial(&denial, failure_count, settings);
                        let tripped_by =
                            if matches!(denial, Denial::Open { .. } | Denial::Tripped { .. }) {
                                breaker.failures(settings, now).cloned().collect()
                            } else {
                                Vec::new()
                            };
                        result = result.explained(Explanation {
                            denied: Some(Denied::Breaker(denial)),
                            passed: None,
                            reason: shadowed(mode, reason),
                            tripped_by,
                        });
                    }
                }
                let relies_on = if result.allowed {
                    Reliance::Allowing
                } else {
                    Reliance::Nothing
                };
                Change {
                    result,
                    transitions,
                    persist: probe_granted,
                    relies_on,
                }
            },
        )
    }

    /// The halt that covers `account_id`, if any: firm-wide first, then its groups by name.
    fn halt_over(&self, account_id: &str) -> Option<(Layer, Halt)> {
        let halts = read(&self.halts);
        if let Some(halt) = &halts.firm {
            return Some((Layer::Firm, halt.clone()));
        }
        if halts.groups.is_empty() {
            return None;
        }
        let policy = self.policy();
        let found = policy
            .groups_of(account_id)
            .find_map(|group| halts.groups.get(group).map(|h| (group, h)));
        found.map(|(group, halt)| (Layer::Group(group.to_owned()), halt.clone()))
    }

    /// The breaker's state and failure count, if the account has a breaker.
    fn peek(&self, account_id: &str) -> (State, u32, Mode) {
        let now = self.clock.now();
        self.shard(account_id).get(account_id).map_or(
            (State::Closed, 0, self.settings_for(account_id).mode),
            |slot| {
                (
                    slot.breaker.state(),
                    slot.breaker.failure_count(&slot.settings, now),
                    slot.mode(),
                )
            },
        )
    }

    fn outside_breaker(&self, account_id: &str, pass: Pass) -> CheckResult {
        let (state, failure_count, mode) = self.peek(account_id);
        CheckResult::new(true, state, failure_count, mode).explained(Explanation::passed(pass))
    }

    fn halted_check(&self, account_id: &str, layer: Layer, halt: Halt) -> CheckResult {
        let (state, failure_count, mode) = self.peek(account_id);
        let reason = match &layer {
            Layer::Group(group) => format!(
                "group {group} halted by {} ({}): every order of its accounts but cancels is denied until it is resumed",
                halt.operator, halt.reason
            ),
            _ => format!(
                "firm-wide halt by {} ({}): every order but cancels is denied until it is resumed",
                halt.operator, halt.reason
            ),
        };
        CheckResult::new(false, state, failure_count, mode).explained(Explanation {
            denied: Some(Denied::Halted {
                layer,
                halt: Box::new(halt),
            }),
            reason,
            ..Explanation::default()
        })
    }

    /// The answer while the store cannot write: denied in every mode, since a mode applies to
    /// the account's breaker only, and what riskgate cannot record it cannot stand behind.
    fn store_unavailable(&self, account_id: &str) -> CheckResult {
        let (state, failure_count, mode) = self.peek(account_id);
        let detail = self
            .signals
            .last_error()
            .unwrap_or_else(|| "a change is not yet on disk".into());
        let reason = format!("store unavailable: orders are denied until riskgate can record outcomes again ({detail})");
        CheckResult::new(false, state, failure_count, mode).explained(Explanation {
            denied: Some(Denied::StoreUnavailable),
            reason,
            ..Explanation::default()
        })
    }

    /// Records how an order ended, and answers once the outcome and everything its answer
    /// relies on (an earlier report of the same permit, say) is durable. An empty `permit_id`
    /// applies to the current generation.
    pub async fn report(
        &self,
        account_id: &str,
        permit_id: &str,
        report: Report,
    ) -> Result<ReportResult> {
        let (result, when) = self.record_report(account_id, permit_id, report)?;
        self.wait_durable(when).await?;
        Ok(result)
    }

    /// Applies a reported outcome to the breaker at once, and says what must be durable before
    /// the answer is given. Never blocks: a trade session applies its messages in the order
    /// they arrive, and waits for their answers apart.
    pub fn record_report(
        &self,
        account_id: &str,
        permit_id: &str,
        report: Report,
    ) -> Result<(ReportResult, Option<WhenDurable>)> {
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
        self.update(account_id, Time::Exact, None, None, |slot, now| {
            let mode = slot.mode();
            let Slot {
                breaker, settings, ..
            } = slot;
            if mode == Mode::Disabled {
                return Change {
                    result: ReportResult {
                        state: breaker.state(),
                        disposition: Disposition::Ignored,
                        failure_count: breaker.failure_count(settings, now),
                    },
                    transitions: Transitions::default(),
                    persist: false,
                    relies_on: Reliance::Everything,
                };
            }
            let probes_before = breaker.probes().len();
            let (disposition, transitions) = breaker.report(settings, permit, &report, now);
            let state = breaker.state();
            // A success in CLOSED changes nothing durable unless a rate rule counts it.
            let persist = (disposition == Disposition::Recorded
                && (report.failed || state != State::Closed || settings.has_rate_rules()))
                || breaker.probes().len() != probes_before;
            Change {
                result: ReportResult {
                    state,
                    disposition,
                    failure_count: breaker.failure_count(settings, now),
                },
                transitions,
                persist,
                relies_on: Reliance::Everything,
            }
        })
    }

    /// Operator reset: CLOSED, all counters cleared. `peer` is the caller's address.
    pub async fn reset(
        &self,
        account_id: &str,
        action: OperatorAction,
        peer: &str,
    ) -> Result<BreakerView> {
        self.operator_action(
            account_id,
            action,
            peer,
            AuditAction::Reset,
            String::new(),
            |slot, now| Some(slot.breaker.reset(&slot.settings, now)),
        )
        .await
    }

    /// Operator trip: OPEN and held until reset or, with `until`, until then (recovery is then
    /// tested as usual). `peer` is the caller's address.
    pub async fn trip(
        &self,
        account_id: &str,
        action: OperatorAction,
        peer: &str,
        until: Option<Timestamp>,
    ) -> Result<BreakerView> {
        let now = self.clock.now();
        if until.is_some_and(|until| until <= now) {
            return Err(Error::InvalidArgument(
                "until must be in the future; leave it unset to hold the breaker open until reset"
                    .into(),
            ));
        }
        let detail = until
            .map(|u| format!("until {}", reasons::human(u.saturating_duration_since(now))))
            .map(|d| d.replace("until ", "for "))
            .unwrap_or_default();
        self.operator_action(
            account_id,
            action,
            peer,
            AuditAction::Trip,
            detail,
            |slot, now| Some(slot.breaker.trip_until(&slot.settings, now, until)),
        )
        .await
    }

    /// Sets the account's mode (`None`: back to the configured one), overriding configuration
    /// until set again. Audited and durable; the breaker's state is untouched.
    pub async fn set_mode(
        &self,
        account_id: &str,
        mode: Option<Mode>,
        action: OperatorAction,
        peer: &str,
    ) -> Result<BreakerView> {
        let detail = mode.map_or("configured mode".to_owned(), |m| m.key().to_owned());
        self.operator_action(
            account_id,
            action,
            peer,
            AuditAction::SetMode,
            detail,
            |slot, _| {
                slot.mode = mode;
                None
            },
        )
        .await
    }

    async fn operator_action(
        &self,
        account_id: &str,
        action: OperatorAction,
        peer: &str,
        kind: AuditAction,
        detail: String,
        act: impl FnOnce(&mut Slot, Timestamp) -> Option<Transition>,
    ) -> Result<BreakerView> {
        validate_account_id(account_id)?;
        self.ensure_writable()?;
        let audit = |before: State, after: State, at: Timestamp| AuditRecord {
            id: 0,
            at,
            account_id: account_id.to_owned(),
            group: String::new(),
            action: kind,
            operator: action.operator.clone(),
            reason: action.reason.clone(),
            state_before: before,
            state_after: after,
            peer: peer.to_owned(),
            detail: detail.clone(),
        };
        let ((), when) = self.update(
            account_id,
            Time::Exact,
            Some(&action),
            Some(&audit),
            |slot, now| Change {
                result: (),
                transitions: act(slot, now).map(Transitions::one).unwrap_or_default(),
                persist: true,
                relies_on: Reliance::Everything,
            },
        )?;
        self.wait_durable(when).await?;
        self.get(account_id).await
    }

    /// Halts trading firm-wide (`Layer::Firm`) or for a group: every non-cancel check of the
    /// accounts it covers is denied until resumed. Breakers keep their own state underneath.
    /// Takes effect at once, even while the store cannot write (it is then retried until it is
    /// durable, and the call says so).
    pub async fn halt(&self, layer: Layer, action: OperatorAction, peer: &str) -> Result<()> {
        self.ensure_ready()?;
        self.check_group(&layer)?;
        let now = self.clock.now();
        let halt = Halt {
            operator: action.operator.clone(),
            reason: action.reason.clone(),
            at: now,
        };
        let commit = {
            let mut halts = write(&self.halts);
            let before = halts_state(&halts, &layer);
            match &layer {
                Layer::Group(name) => {
                    halts.groups.insert(name.clone(), halt.clone());
                }
                _ => halts.firm = Some(halt.clone()),
            }
            // A resume still on its way to disk no longer ends anything: this halt replaced
            // the one it ended, and reaches the store after it.
            halts.resuming.retain(|r| r.layer != layer);
            self.halted.store(true, Ordering::Release);
            crate::metrics::halts(halts.firm.is_some(), halts.groups.len());
            let commit =
                self.halt_changed(&layer, before, State::Open, Some(halt), action, peer, now);
            halts.ticket = commit.ticket();
            commit
        };
        self.wait_halt_durable(WhenDurable(Wait::Commit(commit)), "halt")
            .await
    }

    /// Ends a firm-wide or group halt, once the resume is durable: until then the halt stays
    /// in force (a crash before would bring it back after orders were allowed). Refused while
    /// the store cannot write.
    pub async fn resume(&self, layer: Layer, action: OperatorAction, peer: &str) -> Result<()> {
        self.ensure_writable()?;
        let now = self.clock.now();
        let when = {
            let mut halts = write(&self.halts);
            let in_force = match &layer {
                Layer::Group(name) => halts.groups.get(name).cloned(),
                _ => halts.firm.clone(),
            };
            if let Some(pending) = halts.resuming.iter().find(|r| r.layer == layer) {
                // Resumed already, not yet on disk: this call waits for that resume.
                WhenDurable(Wait::Ticket(pending.ticket))
            } else if let Some(ended) = in_force {
                let commit =
                    self.halt_changed(&layer, State::Open, State::Closed, None, action, peer, now);
                halts.ticket = commit.ticket();
                halts.resuming.push(super::Resuming {
                    ticket: commit.ticket(),
                    layer,
                    halt: ended,
                });
                self.resuming.store(true, Ordering::Release);
                WhenDurable(Wait::Commit(commit))
            } else {
                return Err(Error::NotHalted(match &layer {
                    Layer::Group(name) => format!("group {name}"),
                    _ => "the firm".to_owned(),
                }));
            }
        };
        self.wait_halt_durable(when, "resume").await
    }

    /// Ends every halt whose resume is durable. Called whenever something became durable
    /// (a resume carries an event, so the publisher wakes for each), whether or not the
    /// operator who resumed still waits.
    pub(super) fn settle_resumes(&self) {
        if !self.resuming.load(Ordering::Acquire) {
            return;
        }
        let mut halts = write(&self.halts);
        let resuming = std::mem::take(&mut halts.resuming);
        let (durable, pending): (Vec<_>, Vec<_>) = resuming
            .into_iter()
            .partition(|r| self.signals.is_durable(r.ticket));
        halts.resuming = pending;
        for super::Resuming { layer, halt, .. } in durable {
            match &layer {
                Layer::Group(name) => {
                    if halts.groups.get(name) == Some(&halt) {
                        halts.groups.remove(name);
                    }
                }
                _ => {
                    if halts.firm.as_ref() == Some(&halt) {
                        halts.firm = None;
                    }
                }
            }
        }
        self.resuming
            .store(!halts.resuming.is_empty(), Ordering::Release);
        self.halted.store(
            halts.firm.is_some() || !halts.groups.is_empty(),
            Ordering::Release,
        );
        crate::metrics::halts(halts.firm.is_some(), halts.groups.len());
    }

    /// The halts in force, firm-wide first, once they are durable.
    pub async fn halts(&self) -> Result<Vec<(Layer, Halt)>> {
        let (list, ticket) = {
            let halts = read(&self.halts);
            let list = halts
                .firm
                .iter()
                .map(|h| (Layer::Firm, h.clone()))
                .chain(
                    halts
                        .groups
                        .iter()
                        .map(|(name, h)| (Layer::Group(name.clone()), h.clone())),
                )
                .collect();
            (list, halts.ticket)
        };
        self.durable_through(ticket).await?;
        Ok(list)
    }

    fn check_group(&self, layer: &Layer) -> Result<()> {
        match layer {
            Layer::Group(name) if !self.policy().has_group(name) => {
                Err(Error::UnknownGroup(name.clone()))
            }
            _ => Ok(()),
        }
    }

    /// The event, audit record and store batch of a halt or resume. Called with the halts
    /// locked, so that halts reach the store in the order they took effect.
    #[allow(clippy::too_many_arguments)]
    fn halt_changed(
        &self,
        layer: &Layer,
        from: State,
        to: State,
        halt: Option<Halt>,
        action: OperatorAction,
        peer: &str,
        now: Timestamp,
    ) -> Commit {
        let (audit_action, group) = match (layer, halt.is_some()) {
            (Layer::Group(name), true) => (AuditAction::HaltGroup, name.clone()),
            (Layer::Group(name), false) => (AuditAction::ResumeGroup, name.clone()),
            (_, true) => (AuditAction::HaltAll, String::new()),
            (_, false) => (AuditAction::ResumeAll, String::new()),
        };
        let scope = match layer {
            Layer::Group(name) => format!("group {name}"),
            _ => "firm-wide".to_owned(),
        };
        let verb = if halt.is_some() { "halted" } else { "resumed" };
        let event = Event {
            sequence: 0,
            account_id: String::new(),
            layer: layer.clone(),
            from,
            to,
            cause: if halt.is_some() {
                Cause::Halted
            } else {
                Cause::Resumed
            },
            reason: format!("{scope} {verb} by {}: {}", action.operator, action.reason),
            failure_count: 0,
            at: now,
            generation: 0,
            recovery_at: None,
            failure_kind: None,
            config_version: self.policy().version.clone(),
            operator: Some(action.clone()),
        };
        let audit = AuditRecord {
            id: 0,
            at: now,
            account_id: String::new(),
            group,
            action: audit_action,
            operator: action.operator,
            reason: action.reason,
            state_before: from,
            state_after: to,
            peer: peer.to_owned(),
            detail: String::new(),
        };
        self.events.append(vec![event], |events| {
            self.store.submit(Batch {
                breaker: None,
                events,
                audit: Some(audit),
                halt: Some((layer.clone(), halt)),
            })
        })
    }

    async fn wait_halt_durable(&self, when: WhenDurable, what: &str) -> Result<()> {
        let taking_effect = if what == "resume" {
            "the resume takes effect once it is on disk, and the halt stays in force until then"
        } else {
            "the halt is in force but not yet on disk"
        };
        match self.wait_durable(Some(when)).await {
            Err(Error::Store(crate::store::StoreError::Unavailable(detail))) => {
                Err(Error::Store(crate::store::StoreError::Unavailable(
                    format!("{taking_effect}; riskgate keeps retrying the write ({detail})"),
                )))
            }
            other => other,
        }
    }

    /// Runs `operation` on the account's slot (created on first use) under its shard lock,
    /// then records what changed. `tag` is the account's permit tag.
    fn update<R>(
        &self,
        account_id: &str,
        time: Time,
        operator: Option<&OperatorAction>,
        audit: Option<&dyn Fn(State, State, Timestamp) -> AuditRecord>,
        operation: impl FnOnce(&mut Slot, Timestamp) -> Change<R>,
    ) -> Result<(R, Option<WhenDurable>)> {
        let mut shard = self.shard(account_id);
        let mut created = false;
        let slot = shard.get_or_try_insert(account_id, || {
            self.reserve_account()?;
            created = true;
            crate::metrics::breaker_created();
            Ok::<_, Error>(Slot {
                breaker: crate::core::Breaker::new(),
                tag: permit::account_tag(account_id),
                settings: self.settings_for(account_id),
                last_sequence: 0,
                scheduled: None,
                mode: None,
                ticket: 0,
                loosened: false,
            })
        })?;
        // Read under the lock, so that one breaker never sees time go backwards. A recent
        // reading lags a little and is never ahead: safe where nothing is recorded with it.
        let now = match time {
            Time::RecentWhenClosed if slot.breaker.state() == State::Closed => self.clock.recent(),
            _ => self.clock.now(),
        };
        let before = slot.breaker.state();
        let mode_before = slot.mode;
        let Change {
            result,
            transitions,
            persist,
            relies_on,
        } = operation(slot, now);
        let audit = audit.map(|record| record(before, slot.breaker.state(), now));
        // A new breaker is stored at once, as its generation 0 begins: permits numbered from
        // 0 are handed out only once it is durable, so that after a crash its numbering
        // resumes past them (see `restore`) instead of handing the same permits out again.
        let mode_changed = slot.mode != mode_before || created;
        let commit = self.after_change(
            account_id,
            slot,
            transitions,
            persist || created,
            mode_changed,
            operator,
            audit,
        );
        // The answer's own batch comes after every earlier one of the account: waiting for it
        // covers them. Without one, it waits for the earlier change it relies on, if that is
        // not yet durable.
        let relied_on = match relies_on {
            Reliance::Nothing => 0,
            Reliance::Allowing if slot.loosened => {
                if self.signals.is_durable(slot.ticket) {
                    slot.loosened = false;
                }
                slot.ticket
            }
            Reliance::Allowing => 0,
            Reliance::Everything => slot.ticket,
        };
        let when = match commit {
            Some(commit) => Some(WhenDurable(Wait::Commit(commit))),
            None if !self.signals.is_durable(relied_on) => {
                Some(WhenDurable(Wait::Ticket(relied_on)))
            }
            None => None,
        };
        Ok((result, when))
    }
}

fn halts_state(halts: &super::Halts, layer: &Layer) -> State {
    let halted = match layer {
        Layer::Group(name) => halts.groups.contains_key(name),
        _ => halts.firm.is_some(),
    };
    if halted {
        State::Open
    } else {
        State::Closed
    }
}

impl CheckResult {
    fn new(allowed: bool, state: State, failure_count: u32, mode: Mode) -> Self {
        CheckResult {
            allowed,
            probe: false,
            state,
            mode,
            failure_count,
            permit: None,
            explanation: None,
        }
    }

    fn explained(self, explanation: Explanation) -> Self {
        CheckResult {
            explanation: Some(Box::new(explanation)),
            ..self
        }
    }

    /// The generation that issued the permit (0 without one).
    pub fn generation(&self) -> u64 {
        self.permit.map_or(0, |(_, permit)| permit.generation)
    }

    /// The permit's text form (what the bot carries back); empty without a permit.
    pub fn permit_id(&self) -> String {
        self.permit
            .map(|(tag, permit)| permit::encode(tag, permit))
            .unwrap_or_default()
    }

    /// Why the check was denied; in shadow mode, why it would have been (with `allowed`).
    pub fn denied(&self) -> Option<&Denied> {
        self.explanation.as_ref()?.denied.as_ref()
    }

    /// Allowed without a permit: a cancel, or a reduce-only order past a breaker that is not
    /// CLOSED.
    pub fn passed(&self) -> Option<Pass> {
        self.explanation.as_ref()?.passed
    }

    /// Why the check was (or would have been) denied, or why it passed without a permit; empty
    /// for a plain permit.
    pub fn reason(&self) -> &str {
        self.explanation.as_ref().map_or("", |e| &e.reason)
    }

    /// [`CheckResult::reason`], owned.
    pub fn into_reason(self) -> String {
        self.explanation.map(|e| e.reason).unwrap_or_default()
    }

    /// When an OPEN breaker denied: the outcomes that opened it.
    pub fn tripped_by(&self) -> &[Failure] {
        self.explanation.as_ref().map_or(&[], |e| &e.tripped_by)
    }
}

impl Explanation {
    fn reason(reason: String) -> Self {
        Explanation {
            reason,
            ..Explanation::default()
        }
    }

    fn passed(pass: Pass) -> Self {
        Explanation {
            passed: Some(pass),
            reason: reasons::pass(pass),
            ..Explanation::default()
        }
    }
}

const DISABLED: &str =
    "breaker disabled for this account: every order is allowed and nothing is recorded";

/// `reason`, marked as what shadow mode would have denied.
fn shadowed(mode: Mode, reason: String) -> String {
    if mode == Mode::Shadow {
        format!("shadow mode, would deny: {reason}")
    } else {
        reason
    }
}

impl Slot {
    /// The mode in force: an operator's, else the configured one.
    pub(super) fn mode(&self) -> Mode {
        self.mode.unwrap_or(self.settings.mode)
    }
}
