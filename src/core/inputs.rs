//! What a report and a check say beyond success and failure: the kind of a failure, the intent
//! of an order, and what the settings make of each.

use std::time::Duration;

/// What went wrong with an order, as the client saw it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The client did not say.
    #[default]
    Unspecified,
    OrderRejected,
    Timeout,
    ConnectionLost,
    MarginExhausted,
    DataFeedStale,
    Other,
}

impl FailureKind {
    pub const ALL: [FailureKind; 7] = [
        FailureKind::Unspecified,
        FailureKind::OrderRejected,
        FailureKind::Timeout,
        FailureKind::ConnectionLost,
        FailureKind::MarginExhausted,
        FailureKind::DataFeedStale,
        FailureKind::Other,
    ];

    /// The configuration key of the kind (`[breaker.failure_kinds]`).
    pub fn key(self) -> &'static str {
        match self {
            FailureKind::Unspecified => "unspecified",
            FailureKind::OrderRejected => "order_rejected",
            FailureKind::Timeout => "timeout",
            FailureKind::ConnectionLost => "connection_lost",
            FailureKind::MarginExhausted => "margin_exhausted",
            FailureKind::DataFeedStale => "data_feed_stale",
            FailureKind::Other => "other",
        }
    }

    pub fn from_key(key: &str) -> Option<FailureKind> {
        FailureKind::ALL.into_iter().find(|k| k.key() == key)
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// What a failure of one kind does to the breaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KindAction {
    /// Counts toward the failure rules (the default).
    #[default]
    Count,
    /// Changes nothing: neither a failure nor a success.
    Ignore,
    /// Opens the breaker at once.
    Trip,
}

impl KindAction {
    pub fn key(self) -> &'static str {
        match self {
            KindAction::Count => "count",
            KindAction::Ignore => "ignore",
            KindAction::Trip => "trip",
        }
    }

    pub fn from_key(key: &str) -> Option<KindAction> {
        [KindAction::Count, KindAction::Ignore, KindAction::Trip]
            .into_iter()
            .find(|a| a.key() == key)
    }
}

/// The action of every failure kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct KindActions([KindAction; 7]);

impl KindActions {
    pub fn get(&self, kind: FailureKind) -> KindAction {
        self.0[kind.index()]
    }

    pub fn set(&mut self, kind: FailureKind, action: KindAction) {
        self.0[kind.index()] = action;
    }
}

/// What an order does to the account's position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Intent {
    /// A new order (also what an unspecified intent means).
    #[default]
    New,
    /// Only reduces an existing position.
    ReduceOnly,
    /// Cancels a resting order: never blocked.
    Cancel,
}

/// How strictly an account's breaker is applied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Denials deny (the default).
    #[default]
    Enforce,
    /// Everything is computed and recorded, but checks are allowed and say what they would
    /// have done.
    Shadow,
    /// Checks are always allowed and nothing is recorded.
    Disabled,
}

impl Mode {
    pub fn key(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Shadow => "shadow",
            Mode::Disabled => "disabled",
        }
    }

    pub fn from_key(key: &str) -> Option<Mode> {
        [Mode::Enforce, Mode::Shadow, Mode::Disabled]
            .into_iter()
            .find(|m| m.key() == key)
    }
}

/// Everything a client reports about how an order ended, beyond its permit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub failed: bool,
    /// The kind of failure; ignored for a success.
    pub kind: FailureKind,
    /// How long the order took, when the client measured it (for the slow-call rule).
    pub latency: Option<Duration>,
    /// The client's order id, kept with a failure to explain an opening.
    pub order_id: Option<Box<str>>,
    /// The client's free text, kept with a failure to explain an opening.
    pub detail: Option<Box<str>>,
}

impl Report {
    pub fn success() -> Self {
        Report::default()
    }

    pub fn failure(kind: FailureKind) -> Self {
        Report {
            failed: true,
            kind,
            ..Report::default()
        }
    }
}
