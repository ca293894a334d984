//! What happened, as the registry records it and the store keeps it: events, operator
//! actions, halts and the audit trail. A vocabulary shared by the two layers, below both, so
//! that neither imports the other's types; it holds no behaviour but validation.

use std::sync::Arc;

use crate::core::{Cause, FailureKind, State, Timestamp, Transition};

/// Longest operator name accepted.
pub const MAX_OPERATOR_LEN: usize = 128;
/// Longest operator reason accepted.
pub const MAX_REASON_LEN: usize = 1024;

/// Who acted, and why, for operator transitions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorAction {
    pub operator: String,
    pub reason: String,
}

/// Where a decision or an event applies: the whole firm, a group of accounts (from
/// configuration), or one account's breaker.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    Firm,
    Group(String),
    Account,
}

/// One state change: of one breaker, or a firm-wide or group halt beginning or ending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub sequence: u64,
    /// The account of a breaker's change; empty for firm-wide and group halts.
    pub account_id: String,
    /// `Account` for a breaker's change.
    pub layer: Layer,
    pub from: State,
    pub to: State,
    pub cause: Cause,
    /// What happened, for people.
    pub reason: String,
    pub failure_count: u32,
    pub at: Timestamp,
    pub generation: u64,
    pub recovery_at: Option<Timestamp>,
    pub operator: Option<OperatorAction>,
    /// For an opening by a failure kind configured to trip: the kind.
    pub failure_kind: Option<FailureKind>,
    /// The configuration version in force when the change happened.
    pub config_version: Arc<str>,
}

/// What a halt covers: the whole firm, or one group of accounts (from configuration).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Firm,
    Group(String),
}

impl Scope {
    /// How people read it: "firm-wide", "group NAME".
    pub fn describe(&self) -> String {
        match self {
            Scope::Firm => "firm-wide".to_owned(),
            Scope::Group(name) => format!("group {name}"),
        }
    }
}

impl From<&Scope> for Layer {
    fn from(scope: &Scope) -> Layer {
        match scope {
            Scope::Firm => Layer::Firm,
            Scope::Group(name) => Layer::Group(name.clone()),
        }
    }
}

/// A firm-wide or group halt in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Halt {
    pub operator: String,
    pub reason: String,
    pub at: Timestamp,
}

/// An operator action, as the audit trail keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the store; increases with every record. 0 in a submitted batch.
    pub id: u64,
    pub at: Timestamp,
    /// The account acted on; empty for firm-wide and group actions.
    pub account_id: String,
    /// The group acted on, for group actions.
    pub group: String,
    pub action: AuditAction,
    pub operator: String,
    pub reason: String,
    pub state_before: State,
    pub state_after: State,
    /// The caller's address, or empty when unknown.
    pub peer: String,
    /// What else the action said (a mode, a trip's end), or empty.
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    Reset,
    Trip,
    SetMode,
    SetSettings,
    HaltAll,
    ResumeAll,
    HaltGroup,
    ResumeGroup,
}

impl AuditAction {
    pub const ALL: [AuditAction; 8] = [
        AuditAction::Reset,
        AuditAction::Trip,
        AuditAction::SetMode,
        AuditAction::SetSettings,
        AuditAction::HaltAll,
        AuditAction::ResumeAll,
        AuditAction::HaltGroup,
        AuditAction::ResumeGroup,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Reset => "reset",
            AuditAction::Trip => "trip",
            AuditAction::SetMode => "set_mode",
            AuditAction::SetSettings => "set_settings",
            AuditAction::HaltAll => "halt_all",
            AuditAction::ResumeAll => "resume_all",
            AuditAction::HaltGroup => "halt_group",
            AuditAction::ResumeGroup => "resume_group",
        }
    }

    pub fn parse(text: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == text)
    }
}

impl OperatorAction {
    /// An operator action with both fields present and within bounds.
    pub fn new(operator: &str, reason: &str) -> Result<Self, HistoryError> {
        let operator = operator.trim();
        let reason = reason.trim();
        if operator.is_empty() {
            return Err(HistoryError::MissingField { field: "operator" });
        }
        if reason.is_empty() {
            return Err(HistoryError::MissingField { field: "reason" });
        }
        if operator.len() > MAX_OPERATOR_LEN {
            return Err(HistoryError::FieldTooLong {
                field: "operator",
                max: MAX_OPERATOR_LEN,
            });
        }
        if reason.len() > MAX_REASON_LEN {
            return Err(HistoryError::FieldTooLong {
                field: "reason",
                max: MAX_REASON_LEN,
            });
        }
        if operator.chars().chain(reason.chars()).any(char::is_control) {
            return Err(HistoryError::ControlCharacters);
        }
        Ok(OperatorAction {
            operator: operator.to_owned(),
            reason: reason.to_owned(),
        })
    }
}

/// Why an operator action is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("{field} is required")]
    MissingField { field: &'static str },
    #[error("{field} must be at most {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("operator and reason must not contain control characters")]
    ControlCharacters,
}

impl Event {
    /// The event of one breaker transition; its sequence is given when it is appended.
    pub fn of_transition(
        account_id: &str,
        transition: &Transition,
        reason: String,
        operator: Option<&OperatorAction>,
        config_version: Arc<str>,
    ) -> Event {
        Event {
            sequence: 0,
            account_id: account_id.to_owned(),
            layer: Layer::Account,
            from: transition.from,
            to: transition.to,
            cause: transition.cause,
            reason,
            failure_count: transition.failure_count,
            at: transition.at,
            generation: transition.generation,
            recovery_at: transition.recovery_at,
            operator: operator.cloned(),
            failure_kind: transition.failure_kind,
            config_version,
        }
    }

    /// The event of a halt begun or ended.
    pub fn of_halt(
        scope: &Scope,
        begun: bool,
        action: &OperatorAction,
        at: Timestamp,
        config_version: Arc<str>,
    ) -> Event {
        let (from, to, cause, verb) = if begun {
            (State::Closed, State::Open, Cause::Halted, "halted")
        } else {
            (State::Open, State::Closed, Cause::Resumed, "resumed")
        };
        Event {
            sequence: 0,
            account_id: String::new(),
            layer: Layer::from(scope),
            from,
            to,
            cause,
            reason: format!(
                "{} {verb} by {}: {}",
                scope.describe(),
                action.operator,
                action.reason
            ),
            failure_count: 0,
            at,
            generation: 0,
            recovery_at: None,
            operator: Some(action.clone()),
            failure_kind: None,
            config_version,
        }
    }
}

impl AuditRecord {
    /// An operator's action, by whom and why, from `peer`, at `at`; the account, group, states
    /// and detail empty (CLOSED) for the caller to fill in. The store gives its id.
    pub fn new(action: AuditAction, who: OperatorAction, peer: &str, at: Timestamp) -> Self {
        AuditRecord {
            id: 0,
            at,
            account_id: String::new(),
            group: String::new(),
            action,
            operator: who.operator,
            reason: who.reason,
            state_before: State::Closed,
            state_after: State::Closed,
            peer: peer.to_owned(),
            detail: String::new(),
        }
    }
}

impl AuditAction {
    /// The action of a halt begun or ended over `scope`.
    pub fn of_halt(scope: &Scope, begun: bool) -> Self {
        match (scope, begun) {
            (Scope::Group(_), true) => AuditAction::HaltGroup,
            (Scope::Group(_), false) => AuditAction::ResumeGroup,
            (Scope::Firm, true) => AuditAction::HaltAll,
            (Scope::Firm, false) => AuditAction::ResumeAll,
        }
    }
}
