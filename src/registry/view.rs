//! A read-only copy of one breaker, taken under its shard lock, for Get/List/Watch and admin
//! answers.

use std::sync::Arc;

use crate::core::{permit, Breaker, Settings, State, Timestamp};

#[derive(Clone, Debug, PartialEq)]
pub struct BreakerView {
    pub account_id: String,
    pub state: State,
    pub generation: u64,
    pub failure_count: u32,
    pub failure_times: Vec<Timestamp>,
    pub opened_at: Option<Timestamp>,
    pub recovery_at: Option<Timestamp>,
    pub probes: Vec<ProbeView>,
    pub probe_successes: u32,
    pub tripped: bool,
    /// The sequence of the breaker's last event (0 if none).
    pub last_sequence: u64,
    pub settings: Arc<Settings>,
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
        }
    }
}
