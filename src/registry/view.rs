//! A read-only copy of one breaker, taken under its shard lock, for Get/List/Watch and admin
//! answers.

use std::sync::Arc;

use super::SettingSource;
use crate::core::{permit, Breaker, Cause, Failure, Mode, Overrides, Settings, State, Timestamp};

#[derive(Clone, Debug, PartialEq)]
pub struct BreakerView {
    pub account_id: String,
    pub state: State,
    pub generation: u64,
    pub failure_count: u32,
    pub failure_times: Vec<Timestamp>,
    /// The failures counted (CLOSED) or that opened the breaker (OPEN, HALF_OPEN), with the
    /// kind, order id and detail the client reported.
    pub failures: Vec<Failure>,
    /// OPEN and HALF_OPEN: the rule that opened the breaker.
    pub opened_by: Option<Cause>,
    /// Consecutive openings counted for backoff.
    pub open_streak: u32,
    /// The mode in force, and whether an operator set it (rather than configuration).
    pub mode: Mode,
    pub mode_set_by_operator: bool,
    /// The configured groups the account belongs to.
    pub groups: Vec<String>,
    pub opened_at: Option<Timestamp>,
    pub recovery_at: Option<Timestamp>,
    pub probes: Vec<ProbeView>,
    pub probe_successes: u32,
    pub tripped: bool,
    /// The sequence of the breaker's last event (0 if none).
    pub last_sequence: u64,
    pub settings: Arc<Settings>,
    /// The settings an operator set for the account, if any.
    pub operator_settings: Option<Arc<Overrides>>,
    /// Where each setting in force comes from (filled in for a single breaker's view).
    pub setting_sources: Vec<(String, SettingSource)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeView {
    pub permit_id: String,
    pub expires_at: Timestamp,
}

impl BreakerView {
    pub(crate) fn of(
        account_id: &str,
        breaker: &Breaker,
        settings: &Arc<Settings>,
        mode: Option<Mode>,
        last_sequence: u64,
        now: Timestamp,
    ) -> Self {
        let tag = permit::account_tag(account_id);
        BreakerView {
            account_id: account_id.to_owned(),
            state: breaker.state(),
            generation: breaker.generation(),
            failure_count: breaker.failure_count(settings, now),
            failure_times: breaker.failure_times(settings, now).collect(),
            failures: breaker.failures(settings, now).cloned().collect(),
            opened_by: breaker.opened_by(),
            open_streak: breaker.open_streak(),
            mode: mode.unwrap_or(settings.mode),
            mode_set_by_operator: mode.is_some(),
            groups: Vec::new(),
            opened_at: breaker.opened_at(),
            recovery_at: breaker.recovery_at(),
            probes: breaker
                .probes()
                .iter()
                .map(|p| ProbeView {
                    permit_id: permit::encode(
                        tag,
                        permit::Permit {
                            generation: breaker.generation(),
                            sequence: p.sequence,
                        },
                    ),
                    expires_at: p.expires_at,
                })
                .collect(),
            probe_successes: breaker.probe_successes(),
            tripped: breaker.is_tripped(),
            last_sequence,
            settings: settings.clone(),
            operator_settings: None,
            setting_sources: Vec::new(),
        }
    }
}
