//! What monitors read: one breaker, pages of breakers, a watch's starting point, the audit
//! trail; each given once everything it shows is durable.

use std::cmp::Ordering as ByOrder;
use std::collections::BinaryHeap;

use super::*;

/// What [`Registry::survey`] found.
#[derive(Debug, Default)]
pub struct Survey {
    pub counts: Counts,
    /// The breakers that need attention among the matching accounts, by account id.
    pub attention: Vec<BreakerView>,
    /// The first calm breakers among the matching accounts, by account id.
    pub calm: Vec<BreakerView>,
    /// Calm breakers among the matching accounts, shown or not.
    pub calm_matching: usize,
}

/// Breakers by state and by mode, of every account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: usize,
    pub closed: usize,
    pub open: usize,
    pub half_open: usize,
    pub shadow: usize,
    pub disabled: usize,
    pub tripped: usize,
}

impl Counts {
    fn add(&mut self, state: State, mode: Mode, tripped: bool) {
        self.total += 1;
        match state {
            State::Closed => self.closed += 1,
            State::Open => self.open += 1,
            State::HalfOpen => self.half_open += 1,
        }
        match mode {
            Mode::Shadow => self.shadow += 1,
            Mode::Disabled => self.disabled += 1,
            Mode::Enforce => {}
        }
        if tripped {
            self.tripped += 1;
        }
    }
}

/// Whether `id` contains `needle`, ignoring ASCII case (account ids are ASCII).
fn contains_ignoring_case(id: &str, needle: &str) -> bool {
    needle.is_empty()
        || id
            .as_bytes()
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle.as_bytes()))
}

/// Kept breakers sorted in the turn that asked: a page of 10,000 takes milliseconds, a million
/// (a snapshot of every breaker) about 400 ms.
const SORT_IN_TURN: usize = 16_384;

/// A breaker kept for a page, ordered by account id.
struct Picked {
    view: BreakerView,
    ticket: u64,
}

impl PartialEq for Picked {
    fn eq(&self, other: &Self) -> bool {
        self.view.account_id == other.view.account_id
    }
}

impl Eq for Picked {}

impl PartialOrd for Picked {
    fn partial_cmp(&self, other: &Self) -> Option<ByOrder> {
        Some(self.cmp(other))
    }
}

impl Ord for Picked {
    fn cmp(&self, other: &Self) -> ByOrder {
        self.view.account_id.cmp(&other.view.account_id)
    }
}

/// The `keep` breakers with the lowest account ids among those offered: a view is built only
/// for an account that is among the lowest so far.
struct Lowest {
    keep: usize,
    /// The highest kept id on top.
    heap: BinaryHeap<Picked>,
}

impl Lowest {
    fn new(keep: usize) -> Self {
        Lowest {
            keep,
            heap: BinaryHeap::new(),
        }
    }

    fn offer(&mut self, id: &str, picked: impl FnOnce() -> (BreakerView, u64)) {
        if self.keep == 0 {
            return;
        }
        if self.heap.len() == self.keep {
            match self.heap.peek_mut() {
                Some(highest) if id < highest.view.account_id.as_str() => {
                    std::collections::binary_heap::PeekMut::pop(highest);
                }
                _ => return,
            }
        }
        let (view, ticket) = picked();
        self.heap.push(Picked { view, ticket });
    }

    /// The kept breakers, lowest id first (sorted as a vector: a heap's own sort reads its
    /// ids in an order the cache likes far less). Beyond [`SORT_IN_TURN`] (a snapshot of every
    /// breaker) the sort runs on a blocking thread rather than in one turn of the runtime.
    async fn into_sorted(self) -> Result<Vec<Picked>> {
        let mut picked = self.heap.into_vec();
        if picked.len() <= SORT_IN_TURN {
            picked.sort_unstable();
            return Ok(picked);
        }
        tokio::task::spawn_blocking(move || {
            picked.sort_unstable();
            picked
        })
        .await
        .map_err(|_| Error::Internal("sorting the breakers to show stopped"))
    }
}

/// Where a watcher starts: an optional snapshot, then the feed of events.
pub struct Subscription {
    /// The current state of the watched breakers; `None` when resuming.
    pub snapshot: Option<Vec<BreakerView>>,
    /// Events to replay when resuming, oldest first.
    pub replay: Vec<Arc<Event>>,
    pub live: tokio::sync::broadcast::Receiver<Arc<Event>>,
    /// The snapshot (or resume point) reflects every event up to this sequence.
    pub as_of: u64,
}

impl Registry {
    /// The full view of one breaker, once everything it shows is durable.
    pub async fn get(&self, account_id: &str) -> Result<BreakerView> {
        validate_account_id(account_id)?;
        self.ensure_ready()?;
        let now = self.clock.now();
        let (mut view, ticket) = {
            let shard = self.shard(account_id);
            let slot = shard
                .get(account_id)
                .ok_or_else(|| Error::UnknownAccount(account_id.to_owned()))?;
            (slot.view(account_id, now), slot.ticket)
        };
        self.durable_through(ticket).await?;
        self.add_groups(std::slice::from_mut(&mut view));
        view.setting_sources = self
            .rulebook()
            .sources(account_id, view.operator_settings.as_deref());
        Ok(view)
    }

    /// Fills in the groups each viewed account belongs to.
    pub(super) fn add_groups(&self, views: &mut [BreakerView]) {
        let policy = self.rulebook();
        if policy.groups.is_empty() {
            return;
        }
        for view in views {
            view.groups = policy
                .groups_of(&view.account_id)
                .map(str::to_owned)
                .collect();
        }
    }

    /// Breakers ordered by account id, after `after` (exclusive), at most `limit`, optionally
    /// only those in `state`, once everything they show is durable. Returns the page and
    /// whether more follow.
    pub async fn list(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BreakerView>, bool)> {
        self.ensure_ready()?;
        let (views, more, ticket) = self.page(state, after, limit).await?;
        self.durable_through(ticket).await?;
        Ok((views, more))
    }

    /// [`Registry::list`] as memory holds it, with the ticket it must wait for.
    ///
    /// The accounts sit in hash tables, so a page reads every breaker in the registry: it keeps
    /// the `limit` (and one more, to tell whether more follow) with the lowest ids above
    /// `after` and builds views of those alone, holding one shard's lock at a time and giving
    /// the thread back to the runtime every [`SCAN_TURN`] breakers, so that the checks served
    /// on the same thread wait for a slice of the walk rather than all of it.
    pub(super) async fn page(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<BreakerView>, bool, u64)> {
        let now = self.clock.now();
        let mut lowest = Lowest::new(limit.saturating_add(1));
        self.walk(|id, slot| {
            if after.is_some_and(|after| id <= after)
                || state.is_some_and(|state| slot.breaker.state() != state)
            {
                return;
            }
            lowest.offer(id, || (slot.view(id, now), slot.ticket));
        })
        .await;
        let mut picked = lowest.into_sorted().await?;
        let more = picked.len() > limit;
        picked.truncate(limit);
        let ticket = picked.iter().map(|p| p.ticket).max().unwrap_or(0);
        let mut views: Vec<BreakerView> = picked.into_iter().map(|p| p.view).collect();
        self.add_groups(&mut views);
        Ok((views, more, ticket))
    }

    /// What an overview of the whole registry shows, in one walk: counts of every breaker,
    /// each breaker that needs attention (not CLOSED, not enforcing, or tripped by an
    /// operator) and the first `calm_shown` of the others by account id, those last two only
    /// among accounts whose id contains `needle` (ignoring case; empty: all). Given once
    /// everything it counts is durable.
    pub async fn survey(&self, needle: &str, calm_shown: usize) -> Result<Survey> {
        self.ensure_ready()?;
        let now = self.clock.now();
        let mut survey = Survey::default();
        let mut attention = Vec::new();
        let mut calm = Lowest::new(calm_shown);
        let mut ticket = 0;
        self.walk(|id, slot| {
            ticket = ticket.max(slot.ticket);
            let state = slot.breaker.state();
            let mode = slot.mode.unwrap_or(slot.settings.mode);
            let tripped = slot.breaker.is_tripped();
            survey.counts.add(state, mode, tripped);
            if !contains_ignoring_case(id, needle) {
                return;
            }
            if state == State::Closed && mode == Mode::Enforce && !tripped {
                survey.calm_matching += 1;
                calm.offer(id, || (slot.view(id, now), slot.ticket));
            } else {
                attention.push(slot.view(id, now));
            }
        })
        .await;
        self.durable_through(ticket).await?;
        attention.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id));
        survey.attention = attention;
        survey.calm = calm
            .into_sorted()
            .await?
            .into_iter()
            .map(|p| p.view)
            .collect();
        self.add_groups(&mut survey.attention);
        self.add_groups(&mut survey.calm);
        Ok(survey)
    }

    /// Calls `visit` with every account and its slot (see [`Registry::each_shard`]).
    async fn walk(&self, mut visit: impl FnMut(&str, &Slot)) {
        self.each_shard(|shard| {
            for (id, slot) in shard.iter() {
                visit(id, slot);
            }
        })
        .await;
    }

    /// Starts following events: with `after` (resume), the retained events after it; without,
    /// a snapshot of the watched breakers (all when `accounts` is empty), given once everything
    /// it shows is durable.
    pub async fn subscribe(&self, accounts: &[String], after: Option<u64>) -> Result<Subscription> {
        for account_id in accounts {
            validate_account_id(account_id)?;
        }
        self.ensure_ready()?;
        // Subscribe first: every event after `as_of` reaches the feed, and the snapshot read
        // afterwards is at least as new as `as_of`.
        let Feed {
            replay,
            live,
            as_of,
        } = self.events.subscribe(after)?;
        let snapshot = match after {
            Some(_) => None,
            None => {
                let now = self.clock.now();
                let (views, ticket) = if accounts.is_empty() {
                    let (views, _, ticket) = self.page(None, None, usize::MAX).await?;
                    (views, ticket)
                } else {
                    let mut ticket = 0;
                    let mut views: Vec<BreakerView> = accounts
                        .iter()
                        .filter_map(|id| {
                            self.shard(id).get(id.as_str()).map(|slot| {
                                ticket = ticket.max(slot.ticket);
                                slot.view(id, now)
                            })
                        })
                        .collect();
                    self.add_groups(&mut views);
                    (views, ticket)
                };
                self.durable_through(ticket).await?;
                Some(views)
            }
        };
        Ok(Subscription {
            snapshot,
            replay,
            live,
            as_of,
        })
    }

    /// Reads the audit trail, newest first.
    pub async fn audit(&self, query: AuditQuery) -> Result<Vec<AuditRecord>> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.audit_records(&query))
            .await
            .map_err(|e| Error::Store(crate::store::StoreError::Unavailable(e.to_string())))?
            .map_err(Error::from)
    }
}
