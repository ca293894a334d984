//! The breaker journal: a ring of slots in `breaker_journal`, each a row of at most a page,
//! written in turn.
//!
//! A commit appends its breaker changes to the open slot (the last one written since the last
//! fold) while they fit in [`SLOT_BYTES`], and goes on in the next slot, whose changes an
//! earlier fold already moved into `breakers`. A slot row never outgrows its page, so SQLite
//! rewrites it where it is: a commit dirties one page (two when it opens a slot), and allocates,
//! frees and splits none; consecutive commits share a page, so a checkpoint copies about as many
//! pages as the changes fill. (The layouts tried before, a log of rows and a slot per commit,
//! wrote or checkpointed more pages: docs/benchmarks.md, "The breaker journal's layout".)
//!
//! Each slot holds the number of the write that opened it (1, 2, ... across the ring's turns, 0
//! for a slot never written) and its changes in order. `counters.journal_folded` is the last
//! slot whose changes `breakers` holds (a fold closes the open slot); the slots after it are
//! what a start-up folds.
//!
//! Layout of a slot: the slot's number (u64), the number of changes (u32), then each change:
//! the account id's length (u16) and bytes, the record's length (u32) and bytes, the last event
//! sequence (u64); all little-endian. A slot that must take more than fits (the ring is full, or
//! one change is longer than a slot) is longer, and SQLite keeps the rest in overflow pages.

use std::collections::HashMap;

/// A slot's most bytes: a slot row fits one 4 KiB page (SQLite keeps up to 4,061 bytes of a row
/// on its page).
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

/// Appends `changes` to the open slot (`open`, if any) while they fit in [`SLOT_BYTES`], then to
/// new slots numbered from `next`, at most `max_new` of them (the last takes whatever is left,
/// however long). Returns the slots to write, in order, each with its number; none when there is
/// no change.
pub fn append(
    open: Option<&[u8]>,
    changes: &[Change<'_>],
    next: u64,
    max_new: u64,
) -> Result<Vec<(u64, Vec<u8>)>, String> {
    let mut slots = Vec::new();
    if changes.is_empty() {
        return Ok(slots);
    }
    let mut new = 0u64;
    let (mut number, mut slot) = match open {
        Some(open) => (write_number(open)?, open.to_vec()),
        None => {
            new += 1;
            (next, empty(next))
        }
    };
    let mut count = read_u32(&slot, 8)?;
    for change in changes {
        let full = count > 0 && slot.len() + change.len() > SLOT_BYTES;
        if full && new < max_new {
            slots.push((number, finish(slot, count)));
            number = next + new;
            new += 1;
            slot = empty(number);
            count = 0;
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
    slots.push((number, finish(slot, count)));
    Ok(slots)
}

fn empty(number: u64) -> Vec<u8> {
    let mut slot = Vec::with_capacity(SLOT_BYTES);
    slot.extend_from_slice(&number.to_le_bytes());
    slot.extend_from_slice(&0u32.to_le_bytes());
    slot
}

fn finish(mut slot: Vec<u8>, count: u32) -> Vec<u8> {
    slot[8..HEADER].copy_from_slice(&count.to_le_bytes());
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

/// The latest change of each account in `slots` (write number and bytes), taken in write order,
/// and how many changes they hold. Slots are skipped unless written after `folded`.
pub fn latest<'a>(
    slots: &'a [(u64, Vec<u8>)],
    folded: u64,
) -> Result<(HashMap<&'a str, Change<'a>>, usize), String> {
    let mut written: Vec<&(u64, Vec<u8>)> = slots.iter().filter(|(n, _)| *n > folded).collect();
    written.sort_by_key(|(n, _)| *n);
    let mut latest = HashMap::new();
    let mut changes = 0;
    for (number, slot) in written {
        for change in unpack(slot).map_err(|e| format!("slot of write {number}: {e}"))? {
            latest.insert(change.account_id, change);
            changes += 1;
        }
    }
    Ok((latest, changes))
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

    fn numbers(slots: &[(u64, Vec<u8>)]) -> Vec<u64> {
        slots.iter().map(|(number, _)| *number).collect()
    }

    fn unpacked(slots: &[(u64, Vec<u8>)]) -> Vec<Change<'_>> {
        slots
            .iter()
            .flat_map(|(_, slot)| unpack(slot).expect("unpack"))
            .collect()
    }

    #[test]
    fn commits_fill_the_open_slot_then_go_on_in_new_ones() {
        let big = vec![7u8; 1500];
        let first = vec![change("A", b"one", 1), change("B", &big, 2)];
        let slots = append(None, &first, 41, 100).expect("append");
        assert_eq!(numbers(&slots), [41]);
        assert_eq!(unpacked(&slots), first);
        assert_eq!(write_number(&slots[0].1), Ok(41));

        // The next commit joins the open slot while it fits, then opens slot 42.
        let second = vec![
            change("A", &big, 3),
            change("C", b"", 4),
            change("D", &big, 5),
        ];
        let open = slots[0].1.clone();
        let slots = append(Some(&open), &second, 42, 100).expect("append");
        assert_eq!(numbers(&slots), [41, 42]);
        assert!(slots.iter().all(|(_, slot)| slot.len() <= SLOT_BYTES));
        assert_eq!(unpacked(&slots[..1]).len(), 4, "A, B, then A and C");
        let all: Vec<Change> = first.iter().chain(&second).cloned().collect();
        assert_eq!(unpacked(&slots), all);
        assert!(append(Some(&open), &[], 42, 100)
            .expect("nothing")
            .is_empty());
    }

    #[test]
    fn the_last_new_slot_allowed_takes_the_rest_and_a_long_change_gets_a_long_slot() {
        let big = vec![1u8; 3000];
        let changes = vec![
            change("A", &big, 1),
            change("B", &big, 2),
            change("C", &big, 3),
        ];
        let slots = append(None, &changes, 1, 2).expect("append");
        assert_eq!(numbers(&slots), [1, 2]);
        assert!(slots[0].1.len() <= SLOT_BYTES);
        assert!(slots[1].1.len() > SLOT_BYTES, "{}", slots[1].1.len());
        assert_eq!(unpacked(&slots), changes);

        let huge = vec![2u8; 10_000];
        let slots = append(None, &[change("H", &huge, 9)], 5, 10).expect("append");
        assert_eq!(numbers(&slots), [5]);
        assert_eq!(unpacked(&slots), [change("H", &huge, 9)]);
    }

    #[test]
    fn the_latest_change_of_each_account_after_the_fold_wins() {
        let slots: Vec<(u64, Vec<u8>)> = [
            (7, vec![change("A", b"a7", 70), change("B", b"b7", 71)]),
            (5, vec![change("A", b"a5", 50), change("C", b"c5", 51)]),
            (6, vec![change("A", b"a6", 60)]),
        ]
        .into_iter()
        .flat_map(|(number, changes)| append(None, &changes, number, 1).expect("append"))
        .chain([(0, vec![0; SLOT_BYTES])])
        .collect();
        let (latest, _) = latest(&slots, 5).expect("latest");
        let mut found: Vec<(&str, &[u8], u64)> = latest
            .values()
            .map(|c| (c.account_id, c.record, c.last_sequence))
            .collect();
        found.sort();
        // Slot 5 was folded: C's change is not in the journal's latest, and A's of slot 7
        // wins over slot 6's.
        assert_eq!(found, [("A", &b"a7"[..], 70), ("B", &b"b7"[..], 71)]);
    }

    #[test]
    fn a_damaged_slot_is_refused_with_where() {
        let (_, slot) = append(None, &[change("A", b"record", 1)], 3, 1)
            .expect("append")
            .remove(0);
        let mut cut = slot.clone();
        cut[HEADER] = 200; // the account id's length now runs past the slot
        let error = unpack(&cut).expect_err("damaged");
        assert!(error.contains("run past"), "{error}");
        let mut not_text = slot;
        not_text[HEADER + 2] = 0xff;
        assert!(unpack(&not_text).expect_err("not UTF-8").contains("UTF-8"));
        assert!(write_number(&[1, 2, 3]).is_err());
        assert!(append(Some(&[1, 2, 3]), &[change("A", b"", 1)], 4, 1).is_err());
    }
}
