//! The store's schema and its migrations.
//!
//! `PRAGMA user_version` holds the schema version; `MIGRATIONS[n]` takes a store from version `n`
//! to `n + 1`, inside the same transaction that records the new version. A release that changes
//! the schema appends a migration and never edits an earlier one. `PRAGMA application_id` marks
//! the file as riskgate's, so a foreign SQLite database is refused rather than written into.

use rusqlite::{Connection, OptionalExtension};

/// "RGT1" as a big-endian integer.
pub const APPLICATION_ID: i64 = 0x5247_5431;

pub const MIGRATIONS: &[&str] = &[
    // 0 -> 1: breakers, events, audit trail, counters.
    "CREATE TABLE breakers (
         account_id    TEXT PRIMARY KEY NOT NULL,
         record        BLOB NOT NULL,
         last_sequence INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE TABLE events (
         sequence   INTEGER PRIMARY KEY,
         at         INTEGER NOT NULL,
         account_id TEXT NOT NULL,
         event      BLOB NOT NULL
     );
     CREATE INDEX events_by_time ON events (at);
     CREATE TABLE audit (
         id           INTEGER PRIMARY KEY AUTOINCREMENT,
         at           INTEGER NOT NULL,
         account_id   TEXT NOT NULL,
         action       TEXT NOT NULL,
         operator     TEXT NOT NULL,
         reason       TEXT NOT NULL,
         state_before TEXT NOT NULL,
         state_after  TEXT NOT NULL,
         peer         TEXT NOT NULL
     );
     CREATE INDEX audit_by_account ON audit (account_id, id);
     CREATE TABLE counters (
         name  TEXT PRIMARY KEY NOT NULL,
         value INTEGER NOT NULL
     ) WITHOUT ROWID;",
    // 1 -> 2: firm-wide and group halts; group and detail of audit records.
    "CREATE TABLE halts (
         scope TEXT PRIMARY KEY NOT NULL,
         halt  BLOB NOT NULL
     ) WITHOUT ROWID;
     ALTER TABLE audit ADD COLUMN group_name TEXT NOT NULL DEFAULT '';
     ALTER TABLE audit ADD COLUMN detail TEXT NOT NULL DEFAULT '';",
    // 2 -> 3: each breaker change is appended to a log, which is folded into `breakers` in
    // bulk (a group commit then writes one or two pages, not one per account it touches).
    "CREATE TABLE breaker_log (
         seq           INTEGER PRIMARY KEY,
         account_id    TEXT NOT NULL,
         record        BLOB NOT NULL,
         last_sequence INTEGER NOT NULL
     );",
    // 3 -> 4: breaker records keep their failures in packed columns, which earlier releases
    // would read as no failures at all: the version bump makes them refuse the store instead.
    // Rows already written keep decoding. Nothing in the tables changes.
    "INSERT INTO counters (name, value) VALUES ('breaker_record_format', 2)
     ON CONFLICT (name) DO UPDATE SET value = excluded.value;",
    // 4 -> 5: breaker changes go to a ring of page-sized slots, rewritten in place (see
    // `journal`), instead of a log appended to and emptied. What the log holds (a crash leaves
    // changes there) is folded into `breakers` first, the latest change of each account winning.
    // Each slot starts at `journal::SLOT_BYTES` (4,000) bytes, so that it has a page to itself and
    // later grows within it without splitting a page.
    "INSERT INTO breakers (account_id, record, last_sequence)
     SELECT account_id, record, last_sequence FROM breaker_log
     WHERE seq IN (SELECT max(seq) FROM breaker_log GROUP BY account_id)
     ON CONFLICT (account_id) DO UPDATE
     SET record = excluded.record, last_sequence = excluded.last_sequence;
     DROP TABLE breaker_log;
     CREATE TABLE breaker_journal (
         slot INTEGER PRIMARY KEY,
         data BLOB NOT NULL
     );
     WITH RECURSIVE slots (slot) AS (SELECT 0 UNION ALL SELECT slot + 1 FROM slots WHERE slot < 1023)
     INSERT INTO breaker_journal (slot, data) SELECT slot, zeroblob(4000) FROM slots;
     INSERT INTO counters (name, value) VALUES ('journal_folded', 0);",
];

pub const CURRENT_VERSION: i64 = MIGRATIONS.len() as i64;

/// What the file at hand is.
pub enum Found {
    /// A new, empty database: ready to be initialised.
    Empty,
    /// A riskgate store at this schema version.
    Riskgate(i64),
    /// A SQLite database of something else.
    Foreign,
}

pub fn inspect(conn: &Connection) -> rusqlite::Result<Found> {
    let application_id: i64 = conn.query_row("PRAGMA application_id", [], |row| row.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |row| row.get(0))?;
    let any_table: Option<String> = conn
        .query_row("SELECT name FROM sqlite_schema LIMIT 1", [], |row| {
            row.get(0)
        })
        .optional()?;
    Ok(match (application_id, any_table) {
        (APPLICATION_ID, _) => Found::Riskgate(version),
        (0, None) => Found::Empty,
        _ => Found::Foreign,
    })
}

/// Brings a store at `version` up to the current schema.
pub fn migrate(conn: &mut Connection, version: i64) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    if version == 0 {
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        tx.execute_batch(migration)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
    }
    tx.commit()
}
