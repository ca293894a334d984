//! One shard of the account map: a hash table of slots keyed by account id.
//!
//! An operation hashes the account id once, with the registry's per-process keyed hasher (so
//! that ids chosen to collide cannot slow the table down), and uses that one hash to pick the
//! shard and to find the slot in it. The account's permit tag (a hash that must stay the same
//! across processes, so it cannot be keyed) is computed once, when the slot is created, and
//! kept in it.

use std::hash::BuildHasher;
use std::sync::MutexGuard;

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashTable};

use super::Slot;

/// Accounts in one shard.
#[derive(Default)]
pub(super) struct Accounts {
    table: HashTable<(Box<str>, Slot)>,
}

/// The hash of `account_id` with `hasher`: bits 40-47 pick the shard, while the table uses the
/// low bits (its bucket) and the top seven (its control byte), so the two never overlap.
pub(super) fn hash(hasher: &DefaultHashBuilder, account_id: &str) -> u64 {
    hasher.hash_one(account_id)
}

pub(super) fn shard_index(hash: u64, shards: usize) -> usize {
    (hash >> 40) as usize & (shards - 1)
}

impl Accounts {
    pub(super) fn reserve(&mut self, additional: usize, hasher: &DefaultHashBuilder) {
        self.table.reserve(additional, |(id, _)| hash(hasher, id));
    }

    /// Puts `slot` in for `account_id`, whose hash is `hash`, in place of any it had.
    pub(super) fn insert(
        &mut self,
        hash: u64,
        account_id: Box<str>,
        slot: Slot,
        hasher: &DefaultHashBuilder,
    ) {
        match self.table.find_mut(hash, |(id, _)| **id == *account_id) {
            Some(existing) => existing.1 = slot,
            None => {
                self.table
                    .insert_unique(hash, (account_id, slot), |(id, _)| self::hash(hasher, id));
            }
        }
    }

    pub(super) fn len(&self) -> usize {
        self.table.len()
    }

    /// Removes `account_id` (whose hash is `hash`) if `removable` says so of its slot; whether
    /// it did.
    pub(super) fn remove(
        &mut self,
        hash: u64,
        account_id: &str,
        removable: impl FnOnce(&Slot) -> bool,
    ) -> bool {
        match self.table.find_entry(hash, |(id, _)| **id == *account_id) {
            Ok(entry) if removable(&entry.get().1) => {
                entry.remove();
                true
            }
            _ => false,
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&str, &Slot)> {
        self.table.iter().map(|(id, slot)| (&**id, slot))
    }

    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut Slot)> {
        self.table.iter_mut().map(|(id, slot)| (&**id, slot))
    }
}

/// A locked shard, with the hash of the account it was locked for.
pub(super) struct Locked<'a> {
    pub(super) accounts: MutexGuard<'a, Accounts>,
    pub(super) hash: u64,
    pub(super) hasher: &'a DefaultHashBuilder,
}

impl Locked<'_> {
    pub(super) fn get(&self, account_id: &str) -> Option<&Slot> {
        self.accounts
            .table
            .find(self.hash, |(id, _)| **id == *account_id)
            .map(|(_, slot)| slot)
    }

    pub(super) fn get_mut(&mut self, account_id: &str) -> Option<&mut Slot> {
        self.accounts
            .table
            .find_mut(self.hash, |(id, _)| **id == *account_id)
            .map(|(_, slot)| slot)
    }

    /// The account's slot, created with `create` if it has none; `create`'s error leaves the
    /// shard unchanged.
    pub(super) fn get_or_try_insert<E>(
        &mut self,
        account_id: &str,
        create: impl FnOnce() -> Result<Slot, E>,
    ) -> Result<&mut Slot, E> {
        let hasher = self.hasher;
        match self.accounts.table.entry(
            self.hash,
            |(id, _)| **id == *account_id,
            |(id, _)| hash(hasher, id),
        ) {
            Entry::Occupied(entry) => Ok(&mut entry.into_mut().1),
            Entry::Vacant(entry) => {
                let slot = create()?;
                Ok(&mut entry.insert((account_id.into(), slot)).into_mut().1)
            }
        }
    }
}
