//! A node's leadership as a pure state machine: its role, the deadlines that keep it safe, and
//! what it may do at a given moment. Driven by events (a campaign, a win, each lease renewal
//! sent and acknowledged, a lagging watch, a deposition) and by `tick(now)`, with `now` always
//! passed in, so every row of its table is tested without sleeping; the etcd calls stay in a
//! thin adapter that feeds it.
//!
//! What it must not assume (etcd's `api_guarantees` and `why` documents, client-go's
//! `leaderelection` package): a lease is not mutual exclusion. A leader that is paused, or cut
//! off from etcd, does not learn that its lease expired; another node may win meanwhile. So:
//!
//! - **Self-fencing.** A leader allows orders only before its *fence*: the moment the last
//!   renewal that etcd acknowledged was *sent*, plus the lease's TTL, minus a margin. etcd
//!   counts the TTL from when it received the renewal, which is after it was sent, so the fence
//!   comes before the lease can expire as etcd sees it, as long as this node's monotonic clock
//!   does not run slower than etcd's by more than the margin over one TTL. Past the fence the
//!   node is FENCED: it allows nothing and writes nothing until it has won again.
//! - **Serving only when whole.** A new leader allows orders only once it has applied every
//!   change up to the revision at which it won (its mirror holds everything the old leader
//!   acknowledged). It could win only once the old lease had run out in etcd, by which time
//!   the old leader has passed its own fence even if its clock ran up to `margin / ttl` slow.
//! - **Every write fenced by the epoch.** The epoch is the create revision of this node's
//!   leader key; the adapter conditions every transaction on it, so a deposed leader's writes
//!   fail in etcd whatever this machine believes. This type only says when not to try.

use std::time::Duration;

use crate::core::Timestamp;

/// What a node is, in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Follows the leader's changes into its own registry; answers reads only.
    Standby,
    /// Asking etcd for the leader key.
    Candidate,
    /// Holds the leader key: decides for every account while it serves.
    Leader {
        /// The create revision of its leader key: the fencing token of its writes.
        epoch: i64,
    },
    /// Was leader, and can no longer be sure it still is (the fence passed, a renewal was
    /// refused, its watch lagged): allows nothing, writes nothing, until it wins again.
    Fenced {
        /// The epoch it held.
        epoch: i64,
    },
}

/// Why a leader is not allowing orders now; `None` from [`Leadership::refusal`] when it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// This node is not the leader.
    NotLeader,
    /// The leader has not yet applied every change up to the revision at which it won.
    CatchingUp { applied: i64, won_at_revision: i64 },
    /// The leader waits `settle` after its win.
    WaitingOutOldLease { until: Timestamp },
    /// The leader cannot be sure it still is: its fence passed, or it was told so.
    Fenced,
}

/// The settings leadership runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// The lease's time to live, as granted by etcd.
    pub ttl: Duration,
    /// How much earlier than the lease's expiry the leader stops: covers this clock running
    /// slower than etcd's, and the time between deciding and answering.
    pub margin: Duration,
    /// How long a new leader waits after its win before it decides (zero by default: see
    /// `serves_from`).
    pub settle: Duration,
}

impl LeaseTiming {
    /// The timing for a lease of `ttl`: a margin of a third of it, at least 100 ms and at most
    /// 2 s, so that a leader renewing three times per TTL keeps a fence well ahead.
    pub fn for_ttl(ttl: Duration) -> Self {
        let margin = (ttl / 3)
            .max(Duration::from_millis(100))
            .min(Duration::from_secs(2))
            .min(ttl / 2);
        LeaseTiming {
            ttl,
            margin,
            settle: Duration::ZERO,
        }
    }
}

/// A node's leadership: the role, and the instants that bound what it may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leadership {
    timing: LeaseTiming,
    role: Role,
    /// Leader: when the last acknowledged renewal (or the grant of the lease) was sent.
    renewed_sent_at: Option<Timestamp>,
    /// Leader: the revision at which it won; it serves once it has applied through it.
    won_at_revision: i64,
    /// Leader: when it won; it serves once a TTL has passed since.
    won_at: Option<Timestamp>,
    /// The latest revision applied to this node's registry (its mirror).
    applied: i64,
}

impl Leadership {
    /// A node that has just started: a standby that has applied nothing.
    pub fn new(timing: LeaseTiming) -> Self {
        Leadership {
            timing,
            role: Role::Standby,
            renewed_sent_at: None,
            won_at_revision: 0,
            won_at: None,
            applied: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The revision at which this node last won (0 if it never did): changes up to it are the
    /// old leader's, and a new leader applies them before it decides.
    pub fn won_at_revision(&self) -> i64 {
        self.won_at_revision
    }

    /// The latest revision applied to this node's registry.
    pub fn applied(&self) -> i64 {
        self.applied
    }

    /// The node asks for the leader key (it saw none, or the one it saw went away).
    pub fn campaigning(&mut self) {
        if matches!(self.role, Role::Standby | Role::Fenced { .. }) {
            self.role = Role::Candidate;
        }
    }

    /// The node's leader key was created at revision `epoch`, in a transaction that etcd
    /// answered at `revision`, on a lease whose grant (or latest renewal) was sent at `sent_at`.
    pub fn won(&mut self, epoch: i64, revision: i64, sent_at: Timestamp, now: Timestamp) {
        self.role = Role::Leader { epoch };
        self.renewed_sent_at = Some(sent_at);
        self.won_at_revision = revision;
        self.won_at = Some(now);
    }

    /// etcd acknowledged a renewal of the lease sent at `sent_at`: the fence moves to
    /// `sent_at + ttl - margin`, unless a later renewal already moved it further.
    pub fn renewed(&mut self, sent_at: Timestamp) {
        if matches!(self.role, Role::Leader { .. }) {
            self.renewed_sent_at = Some(self.renewed_sent_at.map_or(sent_at, |s| s.max(sent_at)));
        }
    }

    /// etcd said the lease is gone (expired or revoked), or a write was refused by the fence,
    /// or the watch on the leader key lagged so that a deposition may have gone unseen: the
    /// node can no longer be sure it leads, so it fences at once.
    pub fn lost(&mut self) {
        if let Role::Leader { epoch } = self.role {
            self.role = Role::Fenced { epoch };
        }
    }

    /// Another node's leader key was seen: this node follows it.
    pub fn deposed(&mut self) {
        self.role = match self.role {
            Role::Leader { epoch } => Role::Fenced { epoch },
            Role::Candidate | Role::Standby => Role::Standby,
            fenced @ Role::Fenced { .. } => fenced,
        };
    }

    /// A fenced node has stopped everything a leader does (answers, writes): it follows as a
    /// standby from now on.
    pub fn stood_down(&mut self) {
        if matches!(self.role, Role::Fenced { .. }) {
            self.role = Role::Standby;
            self.renewed_sent_at = None;
            self.won_at = None;
        }
    }

    /// The node's registry now holds every change up to `revision`.
    pub fn applied_through(&mut self, revision: i64) {
        self.applied = self.applied.max(revision);
    }

    /// Applies what time alone causes: a leader past its fence is fenced.
    pub fn tick(&mut self, now: Timestamp) {
        if let (Role::Leader { .. }, Some(fence)) = (self.role, self.fence()) {
            if now >= fence {
                self.lost();
            }
        }
    }

    /// The moment a leader stops allowing orders unless a renewal is acknowledged first.
    pub fn fence(&self) -> Option<Timestamp> {
        match self.role {
            Role::Leader { .. } => self.renewed_sent_at.map(|sent| {
                sent.saturating_add(self.timing.ttl.saturating_sub(self.timing.margin))
            }),
            _ => None,
        }
    }

    /// Why this node may not decide for accounts (allow orders, write changes) at `now`, or
    /// `None` if it may. Reads the fence as of `now` even before `tick` is called.
    pub fn refusal(&self, now: Timestamp) -> Option<Refusal> {
        let Role::Leader { .. } = self.role else {
            return Some(match self.role {
                Role::Fenced { .. } => Refusal::Fenced,
                _ => Refusal::NotLeader,
            });
        };
        if self.fence().is_none_or(|fence| now >= fence) {
            return Some(Refusal::Fenced);
        }
        if self.applied < self.won_at_revision {
            return Some(Refusal::CatchingUp {
                applied: self.applied,
                won_at_revision: self.won_at_revision,
            });
        }
        let serves_from = self.serves_from()?;
        if now < serves_from {
            return Some(Refusal::WaitingOutOldLease { until: serves_from });
        }
        None
    }

    /// Whether this node may decide for accounts at `now`.
    pub fn may_decide(&self, now: Timestamp) -> bool {
        self.refusal(now).is_none()
    }

    /// The epoch to fence writes with, while leader.
    pub fn epoch(&self) -> Option<i64> {
        match self.role {
            Role::Leader { epoch } => Some(epoch),
            _ => None,
        }
    }

    /// When a leader may start serving, as far as time goes: at its win. The key it won was
    /// free only because the old leader's lease ran out in etcd (or was given up by a leader
    /// that had stopped deciding), and an old leader's fence comes a margin before that expiry
    /// even on a clock up to `margin / ttl` slow (the proptest below); waiting a further TTL
    /// would double every failover for no safety it does not already have.
    fn serves_from(&self) -> Option<Timestamp> {
        self.won_at
            .map(|won| won.saturating_add(self.timing.settle))
    }

    /// The next moment at which time alone changes what this node may do: the fence, or the
    /// end of the wait after a win. The adapter schedules a `tick` for it.
    pub fn next_deadline(&self, now: Timestamp) -> Option<Timestamp> {
        let fence = self.fence();
        let serving = self.serves_from().filter(|at| *at > now);
        match (fence, serving) {
            (Some(f), Some(s)) => Some(f.min(s)),
            (f, s) => f.or(s),
        }
    }
}

#[cfg(test)]
#[path = "leadership_tests.rs"]
mod tests;
