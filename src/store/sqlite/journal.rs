//! The breaker journal: a ring of fixed-size slots in `breaker_journal`, overwritten in turn.
//!
//! A commit packs its breaker changes into one slot (more if they do not fit) and writes it over
//! the oldest slot, whose changes an earlier fold already moved into `breakers`. A slot row keeps
//! its size, so SQLite overwrites it in place: the commit dirties that one page, and no page is
//! allocated, freed or split. (Appending one row per change and deleting them at each fold wrote
//! 5.3 pages a commit: the log's leaves, its root, page 1 and the freelist's trunk.)
//!
//! Each slot holds the number of the write that filled it (1, 2, ... across the ring's turns, 0
//! for a slot never written) and its changes in order. `counters.journal_folded` is the last
//! write whose changes `breakers` holds; the slots after it are what a start-up folds.
//!
//! Layout of a slot: the write number (u64), the number of changes (u32), then each change: the
//! account id's length (u16) and bytes, the record's length (u32) and bytes, the last event
//! sequence (u64); all little-endian, then zeros up to [`SLOT_BYTES`]. A slot whose changes do
//! not fit is longer (SQLite then keeps the rest in overflow pages).

use std::collections::HashMap;

/// A slot's size: one slot row fills one 4 KiB page (SQLite keeps up to 4,061 bytes of a row on
/// its page). The migration that creates the ring writes slots of this size.
pub const SLOT_BYTES: usize = 4000;
/// Bytes before a slot's changes.
const HEADER: usize = 12;

/// One breaker change as the journal holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Change<'a> {
    pub account_id: &'a str,
    pub record: &'a [u8],
    pub last_sequence: u64,
}

impl Change<'_> {
    fn len(&self) -> usize {
        2 + self.account_id.len() + 4 + self.record.len() + 8
    }
}

/// Packs `changes` into slots numbered from `first`: as many as fit in each slot of
/// [`SLOT_BYTES`], at most `max_slots` slots (the last takes whatever is left, however long).
/// Returns the slots in order; no slot when there is no change.
pub fn pack(changes: &[Change<'_>], first: u64, max_slots: u64) -> Result<Vec<Vec<u8>>, String> {
    let mut slots = Vec::new();
    let mut slot = Vec::new();
    let mut count = 0u32;
    for change in changes {
        let full = slot.len() > HEADER && slot.len() + change.len() > SLOT_BYTES;
        if full && (slots.len() as u64) + 1 < max_slots {
            slots.push(finish(slot, count));
            slot = Vec::new();
            count = 0;
        }
        if slot.is_empty() {
            slot.reserve(SLOT_BYTES);
            slot.extend_from_slice(&(first + slots.len() as u64).to_le_bytes());
            slot.extend_from_slice(&0u32.to_le_bytes());
        }
        let account = u16::try_from(change.account_id.len())
            .map_err(|_| format!("account id of {} bytes", change.account_id.len()))?;
        let record = u32::try_from(change.record.len())
            .map_err(|_| format!("breaker record of {} bytes", change.record.len()))?;
        slot.extend_from_slice(&account.to_le_bytes());
        slot.extend_from_slice(change.account_id.as_bytes());
        slot.extend_from_slice(&record.to_le_bytes());
        slot.extend_from_slice(change.record);
        slot.extend_from_slice(&change.last_sequence.to_le_bytes());
        count += 1;
    }
    if count > 0 {
        slots.push(finish(slot, count));
    }
    Ok(slots)
}

fn finish(mut slot: Vec<u8>, count: u32) -> Vec<u8> {
    slot[8..HEADER].copy_from_slice(&count.to_le_bytes());
    if slot.len() < SLOT_BYTES {
        slot.resize(SLOT_BYTES, 0);
    }
    slot
}

/// The write number of a slot (0 for a slot never written).
pub fn write_number(slot: &[u8]) -> Result<u64, String> {
    read_u64(slot, 0)
}

/// The changes of a slot, in order.
pub fn unpack(slot: &[u8]) -> Result<Vec<Change<'_>>, String> {
    let count = read_u32(slot, 8)?;
    let mut at = HEADER;
    let mut changes = Vec::new();
    for _ in 0..count {
        let account_len = usize::from(read_u16(slot, at)?);
        at += 2;
        let account = take(slot, at, account_len)?;
        let account_id = std::str::from_utf8(account)
            .map_err(|_| format!("an account id at byte {at} is not UTF-8"))?;
        at += account_len;
        let record_len = read_u32(slot, at)? as usize;
        at += 4;
        let record = take(slot, at, record_len)?;
        at += record_len;
        let last_sequence = read_u64(slot, at)?;
        at += 8;
        changes.push(Change {
            account_id,
            record,
            last_sequence,
        });
    }
    Ok(changes)
}

/// The latest change of each account in `slots` (write number and bytes), taken in write order.
/// Slots are skipped unless written after `folded`.
pub fn latest<'a>(
    slots: &'a [(u64, Vec<u8>)],
    folded: u64,
) -> Result<HashMap<&'a str, Change<'a>>, String> {
    let mut written: Vec<&(u64, Vec<u8>)> = slots.iter().filter(|(n, _)| *n > folded).collect();
    written.sort_by_key(|(n, _)| *n);
    let mut latest = HashMap::new();
    for (number, slot) in written {
        for change in unpack(slot).map_err(|e| format!("slot of write {number}: {e}"))? {
            latest.insert(change.account_id, change);
        }
    }
    Ok(latest)
}

fn take(slot: &[u8], at: usize, len: usize) -> Result<&[u8], String> {
    at.checked_add(len)
        .and_then(|end| slot.get(at..end))
        .ok_or_else(|| {
            format!(
                "{len} bytes at byte {at} run past the slot's {}",
                slot.len()
            )
        })
}

fn read_u16(slot: &[u8], at: usize) -> Result<u16, String> {
    let bytes = take(slot, at, 2)?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn read_u32(slot: &[u8], at: usize) -> Result<u32, String> {
    let mut bytes = [0u8; 4];
    bytes.copy_from_slice(take(slot, at, 4)?);
    Ok(u32::from_le_bytes(bytes))
}

fn read_u64(slot: &[u8], at: usize) -> Result<u64, String> {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(take(slot, at, 8)?);
    Ok(u64::from_le_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change<'a>(account_id: &'a str, record: &'a [u8], last_sequence: u64) -> Change<'a> {
        Change {
            account_id,
            record,
            last_sequence,
        }
    }

    #[test]
    fn changes_come_back_from_their_slots_in_order() {
        let big = vec![7u8; 1500];
        let changes = vec![
            change("A", b"one", 1),
            change("B", &big, 2),
            change("A", &big, 3),
            change("C", b"", 4),
            change("D", &big, 5),
        ];
        let slots = pack(&changes, 41, 100).expect("pack");
        assert_eq!(slots.len(), 2, "each slot is filled before the next");
        assert!(slots.iter().all(|slot| slot.len() == SLOT_BYTES));
        assert_eq!(write_number(&slots[0]), Ok(41));
        assert_eq!(write_number(&slots[1]), Ok(42));
        let back: Vec<Change> = slots
            .iter()
            .flat_map(|slot| unpack(slot).expect("unpack"))
            .collect();
        assert_eq!(back, changes);
        assert!(pack(&[], 1, 10).expect("nothing").is_empty());
    }

    #[test]
    fn the_last_slot_allowed_takes_the_rest_and_a_long_change_gets_a_long_slot() {
        let big = vec![1u8; 3000];
        let changes = vec![
            change("A", &big, 1),
            change("B", &big, 2),
            change("C", &big, 3),
        ];
        let slots = pack(&changes, 1, 2).expect("pack");
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[0].len(), SLOT_BYTES);
        assert!(slots[1].len() > SLOT_BYTES, "{}", slots[1].len());
        assert_eq!(unpack(&slots[1]).expect("unpack").len(), 2);

        let huge = vec![2u8; 10_000];
        let slots = pack(&[change("H", &huge, 9)], 5, 10).expect("pack");
        assert_eq!(slots.len(), 1);
        assert_eq!(unpack(&slots[0]).expect("unpack"), [change("H", &huge, 9)]);
    }

    #[test]
    fn the_latest_change_of_each_account_after_the_fold_wins() {
        let slots: Vec<(u64, Vec<u8>)> = [
            (7, vec![change("A", b"a7", 70), change("B", b"b7", 71)]),
            (5, vec![change("A", b"a5", 50), change("C", b"c5", 51)]),
            (6, vec![change("A", b"a6", 60)]),
            (0, vec![]),
        ]
        .into_iter()
        .map(|(number, changes)| {
            let slot = pack(&changes, number, 1)
                .expect("pack")
                .pop()
                .unwrap_or_else(|| vec![0; SLOT_BYTES]);
            (number, slot)
        })
        .collect();
        let latest = latest(&slots, 5).expect("latest");
        let mut found: Vec<(&str, &[u8], u64)> = latest
            .values()
            .map(|c| (c.account_id, c.record, c.last_sequence))
            .collect();
        found.sort();
        // Write 5 was folded: C's change is not in the journal's latest, and A's of write 7
        // wins over write 6's.
        assert_eq!(found, [("A", &b"a7"[..], 70), ("B", &b"b7"[..], 71)]);
    }

    #[test]
    fn a_damaged_slot_is_refused_with_where() {
        let slot = pack(&[change("A", b"record", 1)], 3, 1)
            .expect("pack")
            .remove(0);
        let mut cut = slot.clone();
        cut[HEADER] = 200; // the account id's length now runs past the change
        cut.truncate(HEADER + 20);
        let error = unpack(&cut).expect_err("damaged");
        assert!(error.contains("run past"), "{error}");
        let mut not_text = slot;
        not_text[HEADER + 2] = 0xff;
        assert!(unpack(&not_text).expect_err("not UTF-8").contains("UTF-8"));
        assert!(write_number(&[1, 2, 3]).is_err());
    }
}
