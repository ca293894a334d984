//! The journal writer against real SQLite files: folds from memory and from the journal agree,
//! the ring turns only over folded slots, migrations and damage.

use super::*;
use crate::history::Scope;
use crate::store::sqlite::writer::Reply;
use crate::store::StoredBreaker;

fn folded_mark(conn: &Connection) -> i64 {
    conn.query_row(
        "SELECT value FROM counters WHERE name = 'journal_folded'",
        [],
        |row| row.get(0),
    )
    .expect("the fold mark")
}

/// A store's writer-side journal, as the store opens it.
fn opened(conn: &mut Connection) -> JournalWriter {
    let (_, journal) = fold(conn).expect("open fold");
    JournalWriter::new(journal)
}

fn breaker(account_id: &str, last_sequence: u64, generation: u64) -> Batch {
    let mut record = rows::tests::record(Vec::new());
    record.generation = generation;
    record.next_sequence = last_sequence + 1;
    Batch {
        breaker: Some(StoredBreaker {
            account_id: account_id.to_string(),
            record,
            last_sequence,
            mode: None,
            settings: None,
        }),
        ..Batch::default()
    }
}

fn pending(batches: Vec<Batch>) -> Vec<(Batch, Option<Reply>)> {
    batches.into_iter().map(|batch| (batch, None)).collect()
}

fn store() -> Connection {
    let mut conn = Connection::open_in_memory().expect("database");
    super::super::schema::migrate(&mut conn, 0).expect("schema");
    conn
}

fn breakers(conn: &Connection) -> Vec<(String, Vec<u8>, i64)> {
    conn.prepare("SELECT account_id, record, last_sequence FROM breakers ORDER BY account_id")
        .expect("query")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .expect("rows")
        .collect::<rusqlite::Result<_>>()
        .expect("read")
}

#[test]
fn a_fold_from_memory_leaves_what_a_fold_of_the_journal_leaves() {
    let transactions = [
        vec![breaker("A", 1, 1), breaker("B", 2, 1), breaker("A", 3, 2)],
        vec![breaker("C", 4, 1)],
        vec![breaker("B", 5, 2), breaker("C", 6, 2), breaker("B", 7, 3)],
    ];
    let mut from_memory = store();
    let mut from_journal = store();
    let mut log = opened(&mut from_memory);
    let mut unfolded = opened(&mut from_journal);
    assert_eq!(
        log.journal,
        Journal {
            slots: 1024,
            next: 1,
            folded: 0
        }
    );
    for (round, batches) in transactions.iter().enumerate() {
        log.write(&mut from_memory, &pending(batches.clone()))
            .expect("write");
        unfolded
            .write(&mut from_journal, &pending(batches.clone()))
            .expect("write");
        if round == 1 {
            // A transaction that fails after writing a record is not the latest of
            // anything: its ended halt cannot be written.
            from_memory
                .execute_batch("ALTER TABLE halts RENAME TO halts_away")
                .expect("rename");
            let ended_halt = Batch {
                halt: Some((Scope::Firm, None)),
                ..Batch::default()
            };
            assert!(log
                .write(
                    &mut from_memory,
                    &pending(vec![breaker("A", 99, 9), ended_halt])
                )
                .is_err());
            from_memory
                .execute_batch("ALTER TABLE halts_away RENAME TO halts")
                .expect("rename back");
        }
    }
    assert_eq!(log.changes, 7);
    assert_eq!(log.latest.len(), 3);
    assert!(log.staged.is_empty());
    assert_eq!(
        log.journal.next, 2,
        "the commits share the slot they opened"
    );

    log.fold(&mut from_memory).expect("fold from memory");
    let (changes, journal) = fold(&mut from_journal).expect("fold the journal");
    assert_eq!(changes, 7);
    assert_eq!((log.changes, log.latest.len()), (0, 0));
    assert_eq!(log.journal, journal);
    assert_eq!(folded_mark(&from_memory), 1);
    assert_eq!(folded_mark(&from_journal), 1);
    let folded = breakers(&from_memory);
    assert_eq!(folded, breakers(&from_journal));
    let sequences: Vec<(&str, i64)> = folded
        .iter()
        .map(|(account, _, sequence)| (account.as_str(), *sequence))
        .collect();
    assert_eq!(sequences, [("A", 3), ("B", 7), ("C", 6)]);
    assert_eq!(
        fold(&mut from_journal).expect("fold again").0,
        0,
        "a folded journal holds nothing more"
    );
}

/// A commit of `n` changes, to accounts `{prefix}0`, `{prefix}1`, ...
fn many(prefix: &str, n: u64, last_sequence: u64) -> Vec<(Batch, Option<Reply>)> {
    pending(
        (0..n)
            .map(|i| breaker(&format!("{prefix}{i}"), last_sequence, 1))
            .collect(),
    )
}

/// Commits `many(prefix, 100, ..)` with sequences after `sequence` until every slot of the
/// ring is unfolded; returns the last sequence committed.
fn fill_ring(
    log: &mut JournalWriter,
    conn: &mut Connection,
    prefix: &str,
    mut sequence: u64,
) -> u64 {
    let most = sequence + 2 * log.journal.slots;
    while log.journal.free() > 0 {
        sequence += 1;
        assert!(sequence <= most, "{:?}", log.journal);
        log.write(conn, &many(prefix, 100, sequence))
            .expect("write");
        assert!(log
            .open
            .as_ref()
            .is_some_and(|slot| slot.len() <= journal::SLOT_BYTES));
    }
    sequence
}

#[test]
fn the_ring_turns_over_folded_slots_and_never_over_unfolded_ones() {
    let mut conn = store();
    conn.execute_batch("DELETE FROM breaker_journal WHERE slot >= 4")
        .expect("a ring of 4");
    let mut log = opened(&mut conn);
    assert_eq!(log.journal.slots, 4);
    let commits = fill_ring(&mut log, &mut conn, "A", 0);
    assert!(log.due(), "the ring is unfolded");
    assert_eq!(log.journal.next, 5);
    // The ring is full: the next commit folds first, then goes on over the oldest slots.
    log.write(&mut conn, &many("B", 100, 100))
        .expect("fold, then write");
    assert_eq!(log.journal.folded, 4);
    assert_eq!(folded_mark(&conn), 4);
    assert_eq!(log.journal.next, 6, "one slot opened after the fold");

    // Fill the ring again with folds failing: a commit that would overwrite an unfolded
    // slot fails instead, and every change written stays for the fold at start-up.
    conn.execute_batch("ALTER TABLE breakers RENAME TO breakers_away")
        .expect("rename");
    let sequence = fill_ring(&mut log, &mut conn, "C", 100);
    let written = 100 + (sequence - 100) as usize * 100;
    let full = log.journal;
    assert!(log.write(&mut conn, &many("D", 1, 999)).is_err());
    assert_eq!(log.journal, full, "nothing was written over");
    conn.execute_batch("ALTER TABLE breakers_away RENAME TO breakers")
        .expect("rename back");
    let (changes, journal) = fold(&mut conn).expect("the fold at start-up");
    assert_eq!(changes, written);
    assert_eq!(
        journal,
        Journal {
            slots: 4,
            next: full.next,
            folded: full.next - 1
        }
    );
    let folded = breakers(&conn);
    assert_eq!(folded.len(), 300);
    let sequence_of = |account: &str| {
        folded
            .iter()
            .find(|(a, _, _)| a == account)
            .map(|(_, _, s)| *s)
    };
    assert_eq!(sequence_of("A7"), Some(commits as i64));
    assert_eq!(sequence_of("B7"), Some(100));
    assert_eq!(sequence_of("C7"), Some(sequence as i64));
    assert_eq!(sequence_of("D0"), None);
}

#[test]
fn the_migration_folds_the_old_log_and_makes_a_ring_of_page_sized_slots() {
    let mut conn = Connection::open_in_memory().expect("database");
    {
        let tx = conn.transaction().expect("tx");
        for migration in &super::super::schema::MIGRATIONS[..4] {
            tx.execute_batch(migration).expect("schema 4");
        }
        tx.execute_batch(
            "INSERT INTO breakers VALUES ('A', x'00', 1), ('B', x'01', 2);
             INSERT INTO breaker_log (account_id, record, last_sequence)
               VALUES ('A', x'10', 3), ('C', x'20', 4), ('A', x'11', 5);
             PRAGMA user_version = 4;",
        )
        .expect("a store of schema 4 with changes in its log");
        tx.commit().expect("commit");
    }
    super::super::schema::migrate(&mut conn, 4).expect("migrate");
    assert_eq!(
        breakers(&conn),
        [
            ("A".into(), vec![0x11], 5),
            ("B".into(), vec![0x01], 2),
            ("C".into(), vec![0x20], 4)
        ]
    );
    let log: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'breaker_log'",
            [],
            |row| row.get(0),
        )
        .expect("schema");
    assert_eq!(log, 0, "the old log is gone");
    let (slots, sizes): (i64, i64) = conn
        .query_row(
            "SELECT count(*), count(DISTINCT length(data)) FROM breaker_journal
             WHERE length(data) = ?1",
            [journal::SLOT_BYTES as i64],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("ring");
    assert_eq!((slots, sizes), (1024, 1));
    let (changes, journal) = fold(&mut conn).expect("open fold");
    assert_eq!(changes, 0);
    assert_eq!(
        journal,
        Journal {
            slots: 1024,
            next: 1,
            folded: 0
        }
    );
}

#[test]
fn a_damaged_journal_is_refused_as_corrupt() {
    let mut conn = store();
    conn.execute_batch("UPDATE breaker_journal SET data = x'0100000000000000' WHERE slot = 3")
        .expect("damage");
    let error = fold(&mut conn).expect_err("refused");
    assert_eq!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt)
    );
    assert!(error.to_string().contains("breaker journal"), "{error}");
}

#[test]
fn a_failed_fold_keeps_the_journal_and_waits_before_the_next_attempt() {
    let mut conn = store();
    let mut log = opened(&mut conn);
    log.write(&mut conn, &pending(vec![breaker("A", 7, 1)]))
        .expect("write");
    // Commits still succeed but a fold cannot: its target is gone.
    conn.execute_batch("ALTER TABLE breakers RENAME TO breakers_away")
        .expect("rename");
    assert!(log.may_fold());
    let before = Instant::now();
    assert!(log.fold(&mut conn).is_err());
    assert_eq!(log.changes, 1, "a failed fold forgets no change");
    assert_eq!(log.latest.len(), 1);
    assert_eq!(log.journal.unfolded(), 1);
    assert_eq!(folded_mark(&conn), 0, "the journal still holds the change");
    assert!(!log.may_fold(), "the next attempt waits");
    assert!(
        log.retry_at
            .is_some_and(|at| at >= before + FOLD_RETRY_AFTER),
        "{:?}",
        log.retry_at
    );

    // The disk recovers and the wait is over: the next fold moves the change and clears
    // the wait.
    conn.execute_batch("ALTER TABLE breakers_away RENAME TO breakers")
        .expect("rename back");
    log.retry_at = Some(Instant::now());
    assert!(log.may_fold());
    log.fold(&mut conn).expect("fold");
    assert_eq!(log.changes, 0);
    assert_eq!(log.retry_at, None);
    assert_eq!(folded_mark(&conn), 1);
    let folded: i64 = conn
        .query_row(
            "SELECT last_sequence FROM breakers WHERE account_id = 'A'",
            [],
            |row| row.get(0),
        )
        .expect("the change is in breakers");
    assert_eq!(folded, 7);
}
