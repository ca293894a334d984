//! The service's one error type. `api::status` maps every variant to a gRPC status in a
//! single exhaustive match, so a new variant forces a decision about its code.

use thiserror::Error;

use crate::core::PermitError;
use crate::history::HistoryError;
use crate::store::StoreError;

#[derive(Debug, Error)]
pub enum Error {
    #[error("account_id {0}")]
    InvalidAccountId(&'static str),
    #[error("permit_id is not valid for account {account}: {source}")]
    InvalidPermit {
        account: String,
        #[source]
        source: PermitError,
    },
    #[error("{field} is required")]
    MissingField { field: &'static str },
    #[error("{field} must be at most {max} bytes")]
    FieldTooLong { field: &'static str, max: usize },
    #[error("{field} must be one of {allowed}")]
    InvalidEnum {
        field: &'static str,
        allowed: &'static str,
    },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the registry holds its maximum of {max} accounts (server.max_accounts) and none is idle enough to evict (each is OPEN, tripped, in an operator's mode or holding failures); no breaker can be created for a new account")]
    AccountLimit { max: usize },
    #[error("account {0} has no breaker yet; one is created, CLOSED, on its first CheckTrade")]
    UnknownAccount(String),
    #[error("events after sequence {after} are no longer retained (oldest retained: {oldest}); re-read the snapshot by watching without after_sequence")]
    HistoryExpired { after: u64, oldest: u64 },
    #[error("after_sequence {after} is ahead of the latest sequence {latest}: the server's history does not include it; re-read the snapshot by watching without after_sequence")]
    HistoryAhead { after: u64, latest: u64 },
    #[error("no group {0} is defined in the configuration ([groups.{0}])")]
    UnknownGroup(String),
    #[error("riskgate is loading its store and does not answer yet")]
    Loading,
    #[error("overloaded: more than {max} calls in flight; retry with backoff")]
    Overloaded { max: usize },
    #[error("authentication required: {0}")]
    Unauthenticated(&'static str),
    #[error("{principal} may not call {path}: it needs the {needs} role")]
    RoleRequired {
        principal: String,
        path: String,
        needs: &'static str,
    },
    #[error("{principal} may not trade account {account}")]
    AccountNotGranted { principal: String, account: String },
    #[error("{principal} is over its limit of {per_sec} GateService calls per second")]
    RateLimited { principal: String, per_sec: u32 },
    #[error("{client} has more than {max} calls in flight (limits.max_in_flight_per_client); wait for answers before sending more")]
    ClientOverloaded { client: String, max: usize },
    #[error(
        "the configuration was reloaded and this session's credentials are no longer accepted: {0}"
    )]
    CredentialsRevoked(&'static str),
    #[error("the configuration was reloaded and {principal} no longer has the bot role")]
    RoleRevoked { principal: String },
    #[error("at most {max} watch streams may be open at once (limits.max_watchers)")]
    TooManyWatchers { max: usize },
    #[error("this watcher fell behind by {missed} events and was ended; resume with after_sequence={resume_after}")]
    WatcherLagged { missed: u64, resume_after: u64 },
    #[error("riskgate is shutting down; resume with after_sequence={resume_after}")]
    WatchShutdown { resume_after: u64 },
    #[error("riskgate is shutting down; every message sent before was answered")]
    SessionShutdown,
    #[error("a batch holds at most {max} messages, not {got}")]
    BatchTooLarge { max: usize, got: usize },
    #[error("a batch cannot hold another batch")]
    NestedBatch,
    #[error("a trade session message holds a check, a report or a batch")]
    EmptySessionMessage,
    /// A broken invariant of the server's own (a bug), answered rather than panicking.
    #[error("internal error: {0}")]
    Internal(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<HistoryError> for Error {
    fn from(error: HistoryError) -> Self {
        match error {
            HistoryError::MissingField { field } => Error::MissingField { field },
            HistoryError::FieldTooLong { field, max } => Error::FieldTooLong { field, max },
            HistoryError::ControlCharacters => Error::InvalidArgument(error.to_string()),
        }
    }
}
