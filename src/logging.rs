//! Process-wide logging through `tracing`: human-readable lines by default, JSON on request.
//!
//! Lines a client can cause at will (a refused connection, a handshake that never came, the
//! HTTP/2 library's protocol warnings) cannot flood the log: of each kind, the first
//! [`LINES_PER_INTERVAL`] in an interval of [`INTERVAL`] are written, the rest are counted
//! (`riskgate_log_lines_suppressed_total`) and summed up in one line per kind at the end of
//! the interval, with the addresses that caused most of them.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{Level, Metadata};
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Lines of one kind written per interval before the rest are only counted.
pub const LINES_PER_INTERVAL: u32 = 5;
/// How long an interval lasts.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Addresses remembered per kind and interval, for the summary.
const PEERS_REMEMBERED: usize = 1_000;

/// Installs the global subscriber. `level` is a validated tracing filter.
pub fn init(format: LogFormat, level: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(level).map_err(|e| format!("log level {level:?}: {e}"))?;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let layer = match format {
        LogFormat::Human => layer.boxed(),
        LogFormat::Json => layer.json().flatten_event(true).boxed(),
    };
    // The level filter is global, so that what it leaves out (the HTTP/2 stack's spans and
    // events on every stream) is never even recorded; only the line writer is throttled.
    tracing_subscriber::registry()
        .with(filter)
        .with(layer.with_filter(LibraryWarnings))
        .try_init()
        .map_err(|e| format!("could not install the logger: {e}"))?;
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async {
            let mut tick = tokio::time::interval(INTERVAL);
            loop {
                tick.tick().await;
                summarize(false);
            }
        });
    }
    Ok(())
}

/// One kind of throttled line, in the current interval.
#[derive(Default)]
struct Kind {
    started: Option<Instant>,
    written: u32,
    suppressed: u64,
    peers: HashMap<IpAddr, u64>,
}

fn kinds() -> &'static Mutex<HashMap<String, Kind>> {
    static KINDS: std::sync::OnceLock<Mutex<HashMap<String, Kind>>> = std::sync::OnceLock::new();
    KINDS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Whether a line of `kind` (caused by `peer`, if known) may be written now; if not, it is
/// counted for the summary.
fn admit(kind: &str, peer: Option<IpAddr>) -> bool {
    let mut kinds = kinds().lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    let entry = kinds.entry(kind.to_owned()).or_default();
    if entry
        .started
        .is_none_or(|started| now - started >= INTERVAL)
    {
        if entry.suppressed > 0 {
            write_summary(kind, entry);
        }
        *entry = Kind {
            started: Some(now),
            ..Kind::default()
        };
    }
    if entry.written < LINES_PER_INTERVAL {
        entry.written += 1;
        return true;
    }
    entry.suppressed += 1;
    if let Some(peer) = peer {
        if entry.peers.len() < PEERS_REMEMBERED || entry.peers.contains_key(&peer) {
            *entry.peers.entry(peer).or_default() += 1;
        }
    }
    crate::metrics::log_line_suppressed(kind);
    false
}

/// Writes a warning a client can cause, unless too many of its kind were written lately.
pub fn throttled_warn(kind: &str, peer: Option<IpAddr>, message: &str) {
    if admit(kind, peer) {
        tracing::warn!(peer = ?peer, "{message}");
    }
}

/// Writes the summary of every kind whose interval is over (`all`: every kind with lines
/// suppressed, as at shutdown).
pub fn summarize(all: bool) {
    let mut kinds = kinds().lock().unwrap_or_else(PoisonError::into_inner);
    let now = Instant::now();
    for (name, kind) in kinds.iter_mut() {
        let over = kind
            .started
            .is_some_and(|started| now - started >= INTERVAL);
        if kind.suppressed > 0 && (over || all) {
            write_summary(name, kind);
            kind.suppressed = 0;
            kind.peers.clear();
        }
    }
}

fn write_summary(name: &str, kind: &Kind) {
    let mut peers: Vec<_> = kind.peers.iter().collect();
    peers.sort_by(|a, b| b.1.cmp(a.1));
    let top: Vec<String> = peers
        .iter()
        .take(5)
        .map(|(ip, n)| format!("{ip} ({n})"))
        .collect();
    tracing::warn!(
        kind = name,
        suppressed = kind.suppressed,
        addresses = kind.peers.len(),
        "{} more \"{name}\" lines in the last {} s not written{}",
        kind.suppressed,
        INTERVAL.as_secs(),
        if top.is_empty() {
            String::new()
        } else {
            format!("; most from {}", top.join(", "))
        }
    );
}

thread_local! {
    /// The address of the connection this thread last read from: the HTTP/2 stack handles
    /// what a connection sent on the thread that read it, in the same poll, so its warnings
    /// are the doing of this peer.
    static READING_FROM: std::cell::Cell<Option<IpAddr>> = const { std::cell::Cell::new(None) };
}

/// Notes that this thread is handling what `peer` sent (called on every read of a client
/// connection).
pub fn reading_from(peer: IpAddr) {
    READING_FROM.with(|current| current.set(Some(peer)));
}

/// Throttles the warnings of the HTTP/2 stack (h2, hyper), which a client can cause at will
/// (one per reset flood, per malformed frame), by the place in the code that writes them; the
/// summary names the addresses whose connections were being read when they were written.
struct LibraryWarnings;

fn throttled_target(metadata: &Metadata<'_>) -> bool {
    *metadata.level() <= Level::WARN
        && (metadata.target().starts_with("h2") || metadata.target().starts_with("hyper"))
}

impl<S> Filter<S> for LibraryWarnings {
    fn enabled(&self, _metadata: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        true
    }

    fn callsite_enabled(
        &self,
        metadata: &'static Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if throttled_target(metadata) {
            tracing::subscriber::Interest::sometimes()
        } else {
            tracing::subscriber::Interest::always()
        }
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, _cx: &Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if !throttled_target(metadata) {
            return true;
        }
        let kind = format!(
            "{}:{}",
            metadata.target(),
            metadata.line().unwrap_or_default()
        );
        admit(&kind, READING_FROM.with(std::cell::Cell::get))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_one_kind_is_written_a_few_times_and_counted() {
        let peer: IpAddr = "10.9.9.9".parse().unwrap();
        let written = (0..1_000)
            .filter(|_| admit("test flood", Some(peer)))
            .count();
        assert_eq!(written, LINES_PER_INTERVAL as usize);
        let kinds = kinds().lock().unwrap();
        let kind = &kinds["test flood"];
        assert_eq!(kind.suppressed, 1_000 - u64::from(LINES_PER_INTERVAL));
        assert_eq!(kind.peers[&peer], kind.suppressed);
    }
}
