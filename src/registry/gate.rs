//! The gate: checks and reports. A check in CLOSED locks one shard, reads the clock, issues a
//! permit and returns; it creates no event and submits nothing to the store.

use super::*;

impl Slot {
    /// The mode in force: an operator's, else the configured one.
    pub(super) fn mode(&self) -> Mode {
        self.mode.unwrap_or(self.settings.mode)
    }
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
            if let Some((scope, halt)) = self.halt_over(account_id) {
                return Ok((self.halted_check(account_id, scope, halt), None));
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
                    return Applied {
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
                Applied {
                    result,
                    transitions,
                    persist: probe_granted,
                    relies_on,
                }
            },
        )
    }

    /// The halt that covers `account_id`, if any: firm-wide first, then its groups by name.
    pub(super) fn halt_over(&self, account_id: &str) -> Option<(Scope, Halt)> {
        let halts = read(&self.halts);
        if let Some(halt) = &halts.firm {
            return Some((Scope::Firm, halt.clone()));
        }
        if halts.groups.is_empty() {
            return None;
        }
        let rulebook = self.rulebook();
        let found = rulebook
            .groups_of(account_id)
            .find_map(|group| halts.groups.get(group).map(|h| (group, h)));
        found.map(|(group, halt)| (Scope::Group(group.to_owned()), halt.clone()))
    }

    /// The breaker's state and failure count, if the account has a breaker.
    pub(super) fn peek(&self, account_id: &str) -> (State, u32, Mode) {
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

    pub(super) fn outside_breaker(&self, account_id: &str, pass: Pass) -> CheckResult {
        let (state, failure_count, mode) = self.peek(account_id);
        CheckResult::new(true, state, failure_count, mode).explained(Explanation::passed(pass))
    }

    pub(super) fn halted_check(&self, account_id: &str, scope: Scope, halt: Halt) -> CheckResult {
        let (state, failure_count, mode) = self.peek(account_id);
        let reason = match &scope {
            Scope::Group(group) => format!(
                "group {group} halted by {} ({}): every order of its accounts but cancels is denied until it is resumed",
                halt.operator, halt.reason
            ),
            Scope::Firm => format!(
                "firm-wide halt by {} ({}): every order but cancels is denied until it is resumed",
                halt.operator, halt.reason
            ),
        };
        CheckResult::new(false, state, failure_count, mode).explained(Explanation {
            denied: Some(Denied::Halted {
                scope,
                halt: Box::new(halt),
            }),
            reason,
            ..Explanation::default()
        })
    }

    /// The answer while the store cannot write: denied in every mode, since a mode applies to
    /// the account's breaker only, and what riskgate cannot record it cannot stand behind.
    pub(super) fn store_unavailable(&self, account_id: &str) -> CheckResult {
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
                return Applied {
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
            Applied {
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
}
