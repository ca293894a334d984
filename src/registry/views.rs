//! What monitors read: one breaker, pages of breakers, a watch's starting point, the audit
//! trail; each given once everything it shows is durable.

use super::*;

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
        let (views, more, ticket) = self.list_now(state, after, limit);
        self.durable_through(ticket).await?;
        Ok((views, more))
    }

    /// [`Registry::list`] as memory holds it, with the ticket it must wait for.
    pub(super) fn list_now(
        &self,
        state: Option<State>,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<BreakerView>, bool, u64) {
        let now = self.clock.now();
        let mut views = Vec::new();
        let mut ticket = 0;
        for shard in self.shards.iter() {
            let shard = lock(shard);
            views.extend(
                shard
                    .iter()
                    .filter(|(id, _)| after.is_none_or(|after| *id > after))
                    .filter(|(_, slot)| state.is_none_or(|s| slot.breaker.state() == s))
                    .map(|(id, slot)| {
                        ticket = ticket.max(slot.ticket);
                        slot.view(id, now)
                    }),
            );
        }
        views.sort_unstable_by(|a, b| a.account_id.cmp(&b.account_id));
        let more = views.len() > limit;
        views.truncate(limit);
        self.add_groups(&mut views);
        (views, more, ticket)
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
                    let (views, _, ticket) = self.list_now(None, None, usize::MAX);
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
