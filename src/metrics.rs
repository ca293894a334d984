//! Prometheus metrics, through the `metrics` facade and its Prometheus exporter, served on a
//! listener of their own (`[metrics] listen`).
//!
//! Every name and label is defined here. Labels take a small fixed set of values (a decision, a
//! layer, a cause, a state): never an account id, so the number of series stays bounded however
//! many accounts trade. Which accounts are open is a question for `ListBreakers` (or
//! `riskgate status`), not for Prometheus. Without a listener no recorder is installed and
//! every call here is a no-op.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

use crate::core::{Disposition, FailureKind, State, Transition};

/// Handling-time buckets, in seconds: 25 µs to 1 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0,
];

/// Whether a recorder is installed: without one, handling times are not even measured.
static RECORDING: AtomicBool = AtomicBool::new(false);

/// The series every check and every successful report touch, registered once when the
/// recorder is installed: a handle increments its series directly, where a `counter!` looks
/// it up in the exporter's registry (a hash and a lock) on every call.
struct Hot {
    checks_allowed: metrics::Counter,
    checks_passed: metrics::Counter,
    check_seconds: metrics::Histogram,
    outcomes_success: metrics::Counter,
    report_seconds: metrics::Histogram,
}

static HOT: std::sync::OnceLock<Hot> = std::sync::OnceLock::new();

fn hot() -> &'static Hot {
    HOT.get_or_init(|| Hot {
        checks_allowed: counter!(
            "riskgate_checks_total", "decision" => "allowed", "layer" => "none", "reason" => "none"
        ),
        checks_passed: counter!(
            "riskgate_checks_total", "decision" => "passed", "layer" => "none", "reason" => "none"
        ),
        check_seconds: histogram!("riskgate_check_seconds"),
        outcomes_success: counter!(
            "riskgate_outcomes_total", "result" => "success", "kind" => "none", "disposition" => "recorded"
        ),
        report_seconds: histogram!("riskgate_report_seconds"),
    })
}

/// Measures how long a call is handled, for its histogram. Reads no clock when nothing
/// records (a clock read costs a tenth of a check).
pub struct Timer(Option<Instant>);

impl Timer {
    pub fn start() -> Self {
        Timer(RECORDING.load(Ordering::Relaxed).then(Instant::now))
    }

    /// The time since the start, or `None` when nothing records (the call's metrics are then
    /// not even looked up).
    fn elapsed(&self) -> Option<Duration> {
        self.0.map(|started| started.elapsed())
    }
}

/// Installs the recorder and serves `/metrics` on `listen`. Returns the exporter's task.
pub fn serve(listen: SocketAddr) -> Result<tokio::task::JoinHandle<()>, String> {
    let (recorder, exporter) = PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .and_then(|b| b.build())
        .map_err(|e| format!("cannot serve metrics on {listen}: {e}"))?;
    metrics::set_global_recorder(recorder)
        .map_err(|e| format!("cannot install the metrics recorder: {e}"))?;
    // The handles are taken from the recorder just installed, before anything records.
    let _ = hot();
    RECORDING.store(true, Ordering::Relaxed);
    describe();
    Ok(tokio::spawn(async move {
        if let Err(error) = exporter.await {
            tracing::error!(?error, "the metrics listener stopped");
        }
    }))
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "riskgate_checks_total",
        "CheckTrade answers, by decision and by the layer and reason that denied"
    );
    describe_counter!(
        "riskgate_outcomes_total",
        "ReportOutcome answers, by result, failure kind and disposition (stale, duplicate...)"
    );
    describe_counter!(
        "riskgate_transitions_total",
        "Breaker state changes, by from, to and cause"
    );
    describe_counter!("riskgate_events_sent_total", "Events sent to watchers");
    describe_counter!(
        "riskgate_watchers_lagged_total",
        "Watch streams ended for falling behind"
    );
    describe_counter!("riskgate_store_commits_total", "Store transactions written");
    describe_counter!(
        "riskgate_breakers_evicted_total",
        "Idle breakers forgotten to make room for new accounts at server.max_accounts"
    );
    describe_counter!("riskgate_store_errors_total", "Store writes that failed");
    describe_counter!(
        "riskgate_audit_pruned_total",
        "Audit records pruned past their retention ([audit])"
    );
    describe_counter!(
        "riskgate_auth_refused_total",
        "Calls refused before any handler, by reason"
    );
    describe_histogram!(
        "riskgate_check_seconds",
        Unit::Seconds,
        "CheckTrade handling time"
    );
    describe_histogram!(
        "riskgate_report_seconds",
        Unit::Seconds,
        "ReportOutcome handling time, durable write included"
    );
    describe_histogram!(
        "riskgate_store_commit_seconds",
        Unit::Seconds,
        "Time to write and fsync one store transaction"
    );
    describe_gauge!("riskgate_breakers", "Breakers by state");
    describe_gauge!("riskgate_watchers", "Open watch streams");
    describe_gauge!(
        "riskgate_firm_halted",
        "1 while a firm-wide halt is in force"
    );
    describe_gauge!("riskgate_groups_halted", "Groups halted");
    describe_gauge!("riskgate_connections", "Client connections open");
    describe_counter!(
        "riskgate_connections_refused_total",
        "Connections closed on accept: too many in total or from one address"
    );
    describe_counter!(
        "riskgate_connections_closed_total",
        "Connections closed by the server: no HTTP/2 handshake in time, or idle"
    );
    describe_counter!(
        "riskgate_accept_errors_total",
        "Failed accepts (out of file descriptors, for one)"
    );
    describe_counter!(
        "riskgate_calls_refused_total",
        "Calls refused before a handler: a client past its calls in flight, a request body too slow"
    );
    describe_counter!(
        "riskgate_log_lines_suppressed_total",
        "Log lines a client could cause at will, not written past a few per kind and interval"
    );
}

pub fn state(state: State) -> &'static str {
    match state {
        State::Closed => "closed",
        State::Open => "open",
        State::HalfOpen => "half_open",
    }
}

/// A check's answer, as its series are labelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    Allowed,
    /// Allowed without a permit (a cancel, a reduce-only order).
    Passed,
    /// Denied (`shadow`: would have been, in shadow mode) by `layer`, for `reason`.
    Denied {
        shadow: bool,
        layer: &'static str,
        reason: &'static str,
    },
}

/// Called on every `CheckTrade`. The answers that are not denials go through the handles of
/// `Hot`; denials name their series with runtime labels, looked up on each call.
/// `checked` is asked only when a recorder is installed.
pub fn checked(timer: &Timer, checked: impl FnOnce() -> Checked) {
    let Some(took) = timer.elapsed() else {
        return;
    };
    let hot = hot();
    match checked() {
        Checked::Passed => hot.checks_passed.increment(1),
        Checked::Allowed => hot.checks_allowed.increment(1),
        Checked::Denied {
            shadow,
            layer,
            reason,
        } => counter!(
            "riskgate_checks_total",
            "decision" => if shadow { "would_deny" } else { "denied" },
            "layer" => layer,
            "reason" => reason
        )
        .increment(1),
    }
    hot.check_seconds.record(took.as_secs_f64());
}

pub fn reported(failed: bool, kind: FailureKind, disposition: Disposition, timer: &Timer) {
    let Some(took) = timer.elapsed() else {
        return;
    };
    let label = match disposition {
        Disposition::Recorded => "recorded",
        Disposition::Stale => "stale",
        Disposition::Duplicate => "duplicate",
        Disposition::Ignored => "ignored",
    };
    let hot = hot();
    if !failed && disposition == Disposition::Recorded {
        // The common answer, through its handle (see `Hot`).
        hot.outcomes_success.increment(1);
    } else {
        let (result_label, kind) = if failed {
            ("failure", kind.key())
        } else {
            ("success", "none")
        };
        counter!("riskgate_outcomes_total", "result" => result_label, "kind" => kind, "disposition" => label)
            .increment(1);
    }
    hot.report_seconds.record(took.as_secs_f64());
}

pub fn transition(t: &Transition) {
    counter!(
        "riskgate_transitions_total",
        "from" => state(t.from),
        "to" => state(t.to),
        "cause" => t.cause.key()
    )
    .increment(1);
    gauge!("riskgate_breakers", "state" => state(t.from)).decrement(1.0);
    gauge!("riskgate_breakers", "state" => state(t.to)).increment(1.0);
}

/// A new breaker (CLOSED).
pub fn breaker_created() {
    gauge!("riskgate_breakers", "state" => "closed").increment(1.0);
}

/// An idle (CLOSED) breaker forgotten to make room for a new account.
pub fn breaker_evicted() {
    gauge!("riskgate_breakers", "state" => "closed").decrement(1.0);
    counter!("riskgate_breakers_evicted_total").increment(1);
}

/// A connection admitted (`1.0`) or closed (`-1.0`).
pub fn connections_open(change: f64) {
    gauge!("riskgate_connections").increment(change);
}

/// A connection closed as soon as it was accepted: `reason` is `total` or `per_peer`.
pub fn connection_refused(reason: &'static str) {
    counter!("riskgate_connections_refused_total", "reason" => reason).increment(1);
}

/// A connection closed by the server: `handshake_timeout` or `idle`.
pub fn connection_closed(reason: &'static str) {
    counter!("riskgate_connections_closed_total", "reason" => reason).increment(1);
}

/// Accepting a connection failed (out of file descriptors, for one).
pub fn accept_error() {
    counter!("riskgate_accept_errors_total").increment(1);
}

/// A call refused because its client already has `max_in_flight_per_client` in flight.
pub fn client_in_flight_refused() {
    counter!("riskgate_calls_refused_total", "reason" => "client_in_flight").increment(1);
}

/// A request whose body did not arrive in time (`limits.request_body_timeout_secs`).
pub fn request_body_timed_out() {
    counter!("riskgate_calls_refused_total", "reason" => "body_timeout").increment(1);
}

/// A log line of `kind` not written (too many of its kind lately).
pub fn log_line_suppressed(kind: &str) {
    counter!("riskgate_log_lines_suppressed_total", "kind" => kind.to_owned()).increment(1);
}

/// The breakers loaded at start-up, by state.
pub fn breakers_loaded(closed: usize, open: usize, half_open: usize) {
    gauge!("riskgate_breakers", "state" => "closed").set(closed as f64);
    gauge!("riskgate_breakers", "state" => "open").set(open as f64);
    gauge!("riskgate_breakers", "state" => "half_open").set(half_open as f64);
}

pub fn halts(firm: bool, groups: usize) {
    gauge!("riskgate_firm_halted").set(if firm { 1.0 } else { 0.0 });
    gauge!("riskgate_groups_halted").set(groups as f64);
}

pub fn event_sent() {
    counter!("riskgate_events_sent_total").increment(1);
}

pub fn watcher_lagged() {
    counter!("riskgate_watchers_lagged_total").increment(1);
}

pub fn watchers(change: f64) {
    gauge!("riskgate_watchers").increment(change);
}

pub fn store_commit(took: Duration) {
    counter!("riskgate_store_commits_total").increment(1);
    histogram!("riskgate_store_commit_seconds").record(took.as_secs_f64());
}

/// Audit records pruned past their retention.
pub fn audit_pruned(records: usize) {
    counter!("riskgate_audit_pruned_total").increment(records as u64);
}

pub fn store_error() {
    counter!("riskgate_store_errors_total").increment(1);
}

pub fn auth_refused(reason: &'static str) {
    counter!("riskgate_auth_refused_total", "reason" => reason).increment(1);
}
