//! Operator actions on one account: reset, trip, set the mode or settings. Each is audited, and answered
//! once durable with the breaker as it then is.

use super::*;

impl Registry {
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
            .map(|u| format!("until {}", human_duration(u.saturating_duration_since(now))))
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

    /// Lays `set` over the account's configured settings, on top of what an operator set
    /// before, and clears the keys in `clear` (`failure_kinds` for every kind) so the
    /// configured values apply again; until changed again, configuration reloads keep them.
    /// Refused, changing nothing, when the result would not be valid settings. Audited and
    /// durable; the breaker's state is untouched and its next decision uses them.
    pub async fn set_settings(
        &self,
        account_id: &str,
        set: &Overrides,
        clear: &[String],
        action: OperatorAction,
        peer: &str,
    ) -> Result<BreakerView> {
        validate_account_id(account_id)?;
        if set.is_empty() && clear.is_empty() {
            return Err(Error::InvalidArgument(
                "nothing to change: give settings to set or keys to clear".into(),
            ));
        }
        let when = {
            // Held until the change is applied: no other change of operator settings, and no
            // reload, comes between reading the account's settings and replacing them.
            let _changing = self.settings_changes.lock().await;
            let current = self
                .shard(account_id)
                .get(account_id)
                .and_then(|slot| slot.overrides.clone());
            let mut merged = current.as_deref().cloned().unwrap_or_default();
            merged.merge(set);
            for key in clear {
                merged
                    .clear(key)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
            let policy = self.rulebook();
            let settings = policy
                .resolve(account_id, Some(&merged))
                .map_err(|e| Error::InvalidArgument(format!("{e}")))?;
            let mut detail = Vec::new();
            if !set.is_empty() {
                detail.push(format!("set {}", set.describe()));
            }
            if !clear.is_empty() {
                detail.push(format!("cleared {}", clear.join(", ")));
            }
            let overrides = (!merged.is_empty()).then(|| Arc::new(merged));
            self.operator_update(
                account_id,
                &action,
                peer,
                AuditAction::SetSettings,
                detail.join("; "),
                |slot, _| {
                    slot.settings = settings;
                    slot.overrides = overrides;
                    None
                },
            )?
        };
        self.wait_durable(when).await?;
        self.get(account_id).await
    }

    pub(super) async fn operator_action(
        &self,
        account_id: &str,
        action: OperatorAction,
        peer: &str,
        kind: AuditAction,
        detail: String,
        act: impl FnOnce(&mut Slot, Timestamp) -> Option<Transition>,
    ) -> Result<BreakerView> {
        validate_account_id(account_id)?;
        let when = self.operator_update(account_id, &action, peer, kind, detail, act)?;
        self.wait_durable(when).await?;
        self.get(account_id).await
    }

    /// Applies an operator action to the account's breaker and submits it with its audit
    /// record; the answer waits for what this returns.
    fn operator_update(
        &self,
        account_id: &str,
        action: &OperatorAction,
        peer: &str,
        kind: AuditAction,
        detail: String,
        act: impl FnOnce(&mut Slot, Timestamp) -> Option<Transition>,
    ) -> Result<Option<WhenDurable>> {
        self.ensure_writable()?;
        let audit = |before: State, after: State, at: Timestamp| AuditRecord {
            account_id: account_id.to_owned(),
            state_before: before,
            state_after: after,
            detail: detail.clone(),
            ..AuditRecord::new(kind, action.clone(), peer, at)
        };
        let ((), when) = self.update(
            account_id,
            Time::Exact,
            Some(action),
            Some(&audit),
            |slot, now| Applied {
                result: (),
                transitions: act(slot, now).map(Transitions::one).unwrap_or_default(),
                persist: true,
                relies_on: Reliance::Everything,
            },
        )?;
        Ok(when)
    }
}
