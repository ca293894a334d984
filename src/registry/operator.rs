//! Operator actions on one account: reset, trip, set the mode. Each is audited, and answered
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
            Some(&action),
            Some(&audit),
            |slot, now| Applied {
                result: (),
                transitions: act(slot, now).map(Transitions::one).unwrap_or_default(),
                persist: true,
                relies_on: Reliance::Everything,
            },
        )?;
        self.wait_durable(when).await?;
        self.get(account_id).await
    }
}
