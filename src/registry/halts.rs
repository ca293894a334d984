//! Firm-wide and group halts: in force at once when begun (they only deny), ended only once
//! the resume is durable.

use super::*;

/// Firm-wide and group halts in force.
#[derive(Clone, Debug, Default)]
pub(super) struct Halts {
    pub(super) firm: Option<Halt>,
    pub(super) groups: BTreeMap<String, Halt>,
    /// The store ticket of the latest halt or resume: a view of the halts waits for it.
    pub(super) ticket: u64,
    /// Resumes submitted but not yet durable, oldest first: each halt stays in force until its
    /// resume is durable (loosening never acts before it can be kept), then ends unless a newer
    /// halt of the same scope replaced it meanwhile.
    resuming: Vec<Resuming>,
}

#[derive(Clone, Debug)]
pub(super) struct Resuming {
    ticket: u64,
    scope: Scope,
    /// The halt it ends.
    halt: Halt,
}

impl Halts {
    /// The halt in force over `scope`, if any.
    pub(super) fn get(&self, scope: &Scope) -> Option<&Halt> {
        match scope {
            Scope::Firm => self.firm.as_ref(),
            Scope::Group(name) => self.groups.get(name),
        }
    }

    pub(super) fn set(&mut self, scope: &Scope, halt: Option<Halt>) {
        match (scope, halt) {
            (Scope::Firm, halt) => self.firm = halt,
            (Scope::Group(name), Some(halt)) => {
                self.groups.insert(name.clone(), halt);
            }
            (Scope::Group(name), None) => {
                self.groups.remove(name);
            }
        }
    }

    pub(super) fn any(&self) -> bool {
        self.firm.is_some() || !self.groups.is_empty()
    }

    /// Every halt in force, firm-wide first.
    pub(super) fn list(&self) -> Vec<(Scope, Halt)> {
        self.firm
            .iter()
            .map(|h| (Scope::Firm, h.clone()))
            .chain(
                self.groups
                    .iter()
                    .map(|(name, h)| (Scope::Group(name.clone()), h.clone())),
            )
            .collect()
    }
}

impl Registry {
    /// Halts trading firm-wide or for a group: every non-cancel check of the accounts it
    /// covers is denied until resumed. Breakers keep their own state underneath. Takes effect
    /// at once, even while the store cannot write (it is then retried until it is durable, and
    /// the call says so). A halt already in force stays as it is, with its first operator,
    /// reason and time (the first responder stays visible); the call is audited all the same.
    /// Returns whether a halt began.
    pub async fn halt(&self, scope: Scope, action: OperatorAction, peer: &str) -> Result<bool> {
        self.ensure_ready()?;
        self.check_group(&scope)?;
        let now = self.clock.now();
        let halt = Halt {
            operator: action.operator.clone(),
            reason: action.reason.clone(),
            at: now,
        };
        let (commit, began) = {
            let mut halts = write(&self.halts);
            let resuming = halts.resuming.iter().any(|r| r.scope == scope);
            match halts.get(&scope).cloned() {
                Some(first) if !resuming => {
                    let detail = format!(
                        "already halted by {} ({}): that halt stays in force",
                        first.operator, first.reason
                    );
                    let commit = self.audit_only(&scope, true, action, peer, now, detail);
                    halts.ticket = commit.ticket();
                    (commit, false)
                }
                before => {
                    halts.set(&scope, Some(halt.clone()));
                    // A resume still on its way to disk no longer ends anything: this halt
                    // replaced the one it ended, and reaches the store after it.
                    halts.resuming.retain(|r| r.scope != scope);
                    self.halted.store(true, Ordering::Release);
                    crate::metrics::halts(halts.firm.is_some(), halts.groups.len());
                    let from = if before.is_some() {
                        State::Open
                    } else {
                        State::Closed
                    };
                    let commit =
                        self.halt_changed(&scope, from, State::Open, Some(halt), action, peer, now);
                    halts.ticket = commit.ticket();
                    (commit, true)
                }
            }
        };
        self.wait_halt_durable(WhenDurable(Wait::Commit(commit)), "halt")
            .await?;
        Ok(began)
    }

    /// Ends a firm-wide or group halt, once the resume is durable: until then the halt stays
    /// in force (a crash before would bring it back after orders were allowed). Refused while
    /// the store cannot write. Resuming what is not halted changes nothing and is audited, as a
    /// second halt is. Returns whether a halt ended (or is ending, once durable).
    pub async fn resume(&self, scope: Scope, action: OperatorAction, peer: &str) -> Result<bool> {
        self.ensure_writable()?;
        let now = self.clock.now();
        let (when, ended) = {
            let mut halts = write(&self.halts);
            let in_force = halts.get(&scope).cloned();
            if let Some(pending) = halts.resuming.iter().find(|r| r.scope == scope) {
                // Resumed already, not yet on disk: this call waits for that resume.
                (WhenDurable(Wait::Ticket(pending.ticket)), true)
            } else if let Some(ended) = in_force {
                let commit =
                    self.halt_changed(&scope, State::Open, State::Closed, None, action, peer, now);
                halts.ticket = commit.ticket();
                halts.resuming.push(Resuming {
                    ticket: commit.ticket(),
                    scope,
                    halt: ended,
                });
                self.resuming.store(true, Ordering::Release);
                (WhenDurable(Wait::Commit(commit)), true)
            } else {
                let detail = "nothing was halted".to_owned();
                let commit = self.audit_only(&scope, false, action, peer, now, detail);
                halts.ticket = commit.ticket();
                (WhenDurable(Wait::Commit(commit)), false)
            }
        };
        self.wait_halt_durable(when, "resume").await?;
        Ok(ended)
    }

    /// The audit record of a halt or resume that changed nothing (already halted, or nothing
    /// to resume), alone in its batch.
    fn audit_only(
        &self,
        scope: &Scope,
        halt: bool,
        action: OperatorAction,
        peer: &str,
        now: Timestamp,
        detail: String,
    ) -> Commit {
        let state = if halt { State::Open } else { State::Closed };
        let audit = AuditRecord {
            group: match scope {
                Scope::Group(name) => name.clone(),
                Scope::Firm => String::new(),
            },
            state_before: state,
            state_after: state,
            detail,
            ..AuditRecord::new(AuditAction::of_halt(scope, halt), action, peer, now)
        };
        self.store.submit(Batch {
            audit: Some(audit),
            ..Batch::default()
        })
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
        for Resuming { scope, halt, .. } in durable {
            if halts.get(&scope) == Some(&halt) {
                halts.set(&scope, None);
            }
        }
        self.resuming
            .store(!halts.resuming.is_empty(), Ordering::Release);
        self.halted.store(halts.any(), Ordering::Release);
        crate::metrics::halts(halts.firm.is_some(), halts.groups.len());
    }

    /// The halts in force, firm-wide first, once they are durable.
    pub async fn halts(&self) -> Result<Vec<(Scope, Halt)>> {
        let (list, ticket) = {
            let halts = read(&self.halts);
            (halts.list(), halts.ticket)
        };
        self.durable_through(ticket).await?;
        Ok(list)
    }

    pub(super) fn check_group(&self, scope: &Scope) -> Result<()> {
        match scope {
            Scope::Group(name) if !self.rulebook().has_group(name) => {
                Err(Error::UnknownGroup(name.clone()))
            }
            _ => Ok(()),
        }
    }

    /// The event, audit record and store batch of a halt or resume. Called with the halts
    /// locked, so that halts reach the store in the order they took effect.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn halt_changed(
        &self,
        scope: &Scope,
        from: State,
        to: State,
        halt: Option<Halt>,
        action: OperatorAction,
        peer: &str,
        now: Timestamp,
    ) -> Commit {
        let begun = halt.is_some();
        let event = Event {
            from,
            to,
            ..Event::of_halt(scope, begun, &action, now, self.rulebook().version.clone())
        };
        let audit = AuditRecord {
            group: match scope {
                Scope::Group(name) => name.clone(),
                Scope::Firm => String::new(),
            },
            state_before: from,
            state_after: to,
            ..AuditRecord::new(AuditAction::of_halt(scope, begun), action, peer, now)
        };
        self.events.append(vec![event], |events| {
            self.store.submit(Batch {
                events,
                audit: Some(audit),
                halt: Some((scope.clone(), halt)),
                ..Batch::default()
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
}
