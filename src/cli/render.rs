//! How the CLI prints breakers and events: plain text for a terminal, one fact per column.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use crate::api::json::{cause_name, kind_name, role_name, std_duration, system_time, time};
pub use crate::api::json::{mode_name, state_name};
use crate::core::human_duration;
use crate::proto::{
    AuditAction, AuditRecord, Breaker, BreakerEvent, BreakerState, GetClusterResponse, Halt, Layer,
    Mode, NodeRole, SettingSource, TransitionCause,
};

/// The halts in force, one line each.
pub fn halts(halts: &[Halt]) -> String {
    if halts.is_empty() {
        return "no halt in force\n".to_owned();
    }
    halts_text(halts)
}

fn halts_text(halts: &[Halt]) -> String {
    let mut out = String::new();
    for h in halts {
        let scope = match Layer::try_from(h.layer) {
            Ok(Layer::Group) => format!("group {}", h.group),
            _ => "firm-wide".to_owned(),
        };
        let since = h.since.as_ref().map(time).unwrap_or_default();
        let _ = writeln!(
            out,
            "HALTED {scope} since {since} by {}: {}",
            h.operator, h.reason
        );
        if h.group_undefined {
            let _ = writeln!(
                out,
                "  (group {} is no longer in the configuration: this halt holds no account until it is configured again; `riskgate resume --group {}` ends it)",
                h.group, h.group
            );
        }
    }
    out
}

/// `in 4m12s` (or `due` once passed).
/// How far ahead `at` is, for people: a time within a day, a date beyond.
fn from_now(at: &prost_types::Timestamp) -> String {
    match system_time(at).duration_since(SystemTime::now()) {
        Ok(left) => ahead(left, system_time(at)),
        Err(_) => "due".to_owned(),
    }
}

/// `in 4m12s` within a day, `in 19 days` beyond: beside a time already written out.
fn how_long(at: &prost_types::Timestamp) -> String {
    match system_time(at).duration_since(SystemTime::now()) {
        Ok(left) if left.as_secs() < 24 * 3600 => format!("in {}", human_duration(left)),
        Ok(left) => format!("in {} days", left.as_secs() / (24 * 3600)),
        Err(_) => "due".to_owned(),
    }
}

/// `in 4m12s` within a day; `on 2026-12-24 at 09:00:00Z (in 19 days)` beyond.
pub fn ahead(left: Duration, at: SystemTime) -> String {
    const DAY: u64 = 24 * 3600;
    if left.as_secs() < DAY {
        return format!("in {}", human_duration(left));
    }
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    let (date, clock) = stamp.split_once('T').unwrap_or((stamp.as_str(), ""));
    format!("on {date} at {clock} (in {} days)", left.as_secs() / DAY)
}

fn note(b: &Breaker) -> String {
    if b.tripped_by_operator && b.recovery_at.is_none() {
        "held open by an operator until reset".to_owned()
    } else if let Some(at) = &b.recovery_at {
        format!("recovery tested {}", from_now(at))
    } else if !b.probes.is_empty() || b.probe_successes > 0 {
        let tries = b.settings.as_ref().map_or(0, |s| s.half_open_max_tries);
        format!(
            "{} probes out, {}/{} succeeded",
            b.probes.len(),
            b.probe_successes,
            tries
        )
    } else {
        String::new()
    }
}

pub fn breaker_table(breakers: &[Breaker]) -> String {
    if breakers.is_empty() {
        return "no breakers yet: a breaker is created on an account's first CheckTrade\n"
            .to_owned();
    }
    let width = breakers
        .iter()
        .map(|b| b.account_id.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<9}  {:<8}  {:>8}  {:>10}  NOTE",
        "ACCOUNT", "STATE", "MODE", "FAILURES", "GENERATION"
    );
    for b in breakers {
        let _ = writeln!(
            out,
            "{:<width$}  {:<9}  {:<8}  {:>8}  {:>10}  {}",
            b.account_id,
            state_name(b.state),
            mode_name(b.mode),
            b.failure_count,
            b.generation,
            note(b)
        );
    }
    let open = breakers
        .iter()
        .filter(|b| b.state != BreakerState::Closed as i32)
        .count();
    let unprotected = breakers
        .iter()
        .filter(|b| b.mode != Mode::Enforce as i32)
        .count();
    let _ = write!(out, "{} breakers, {} not CLOSED", breakers.len(), open);
    if unprotected > 0 {
        let _ = write!(out, ", {unprotected} not enforcing (shadow or disabled)");
    }
    out.push('\n');
    out
}

/// The halts in force, as a banner over a status; empty when none is.
pub fn halt_banner(halts: &[Halt]) -> String {
    if halts.is_empty() {
        return String::new();
    }
    let mut out = halts_text(halts);
    out.push('\n');
    out
}

/// One breaker in full; `trip`, the audit record of the operator trip holding it open, if known.
pub fn breaker_detail(b: &Breaker, trip: Option<&AuditRecord>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "account      {}", b.account_id);
    let _ = writeln!(out, "state        {}", state_name(b.state));
    let _ = writeln!(out, "generation   {}", b.generation);
    let _ = writeln!(
        out,
        "mode         {}{}",
        mode_name(b.mode),
        if b.mode_set_by_operator {
            " (set by an operator)"
        } else {
            ""
        }
    );
    if !b.groups.is_empty() {
        let _ = writeln!(out, "groups       {}", b.groups.join(", "));
    }
    let _ = writeln!(out, "failures     {}", b.failure_count);
    for f in &b.failures {
        let mut line = format!(
            "  failed at  {} {}",
            f.time.as_ref().map(time).unwrap_or_default(),
            kind_name(f.kind)
        );
        if !f.order_id.is_empty() {
            let _ = write!(line, " order {}", f.order_id);
        }
        if !f.detail.is_empty() {
            let _ = write!(line, ": {}", f.detail);
        }
        let _ = writeln!(out, "{line}");
    }
    if b.opened_by != TransitionCause::Unspecified as i32 {
        let _ = writeln!(out, "opened by    {}", cause_name(b.opened_by));
    }
    if b.open_streak > 1 {
        let _ = writeln!(out, "backoff      opening {} in a row", b.open_streak);
    }
    if let Some(at) = &b.opened_at {
        let _ = writeln!(out, "opened at    {}", time(at));
    }
    if let Some(at) = &b.recovery_at {
        let _ = writeln!(out, "recovery     {} ({})", time(at), how_long(at));
    }
    let by = trip.map_or("an operator".to_owned(), |t| {
        let at = t.time.as_ref().map(time).unwrap_or_default();
        format!("{} at {at} ({})", t.operator, t.reason)
    });
    if b.tripped_by_operator && b.recovery_at.is_none() {
        let _ = writeln!(out, "tripped      held open by {by} until reset");
    } else if b.tripped_by_operator {
        let _ = writeln!(
            out,
            "tripped      held open by {by} until the recovery time"
        );
    }
    if b.state == BreakerState::HalfOpen as i32 {
        let _ = writeln!(
            out,
            "probes       {} out, {} succeeded",
            b.probes.len(),
            b.probe_successes
        );
        for p in &b.probes {
            if let Some(at) = &p.expires_at {
                let _ = writeln!(out, "  probe      expires {}", from_now(at));
            }
        }
    }
    if let Some(s) = &b.settings {
        let secs = |d: &Option<prost_types::Duration>| {
            d.as_ref()
                .map_or(String::from("?"), |d| human_duration(std_duration(d)))
        };
        let _ = writeln!(
            out,
            "settings     threshold {} in {}, open {}, {} probes, probe timeout {}",
            s.failure_threshold,
            secs(&s.failure_window),
            secs(&s.open_timeout),
            s.half_open_max_tries,
            secs(&s.half_open_timeout)
        );
    }
    if let Some(o) = &b.operator_settings {
        let mut set: Vec<String> = b
            .setting_sources
            .iter()
            .filter(|(_, s)| **s == SettingSource::Operator as i32)
            .map(|(k, _)| k.clone())
            .collect();
        set.sort();
        if !set.is_empty() || !o.failure_kinds.is_empty() {
            let _ = writeln!(
                out,
                "operator set {} (riskgate config {} shows all)",
                set.join(", "),
                b.account_id
            );
        }
    }
    let _ = writeln!(out, "last event   #{}", b.last_sequence);
    out
}

/// An account's settings in force, one `key = value` line each as in the configuration
/// file, with where each comes from.
pub fn settings_in_force(b: &Breaker) -> String {
    let mut out = format!("# settings in force for {}\n", b.account_id);
    let lines = crate::api::json::settings(b);
    let width = lines
        .iter()
        .map(|s| s.key.len() + s.value.len())
        .max()
        .unwrap_or(0);
    for s in lines {
        let pad = width - s.key.len() - s.value.len();
        let _ = writeln!(out, "{} = {}{:pad$}  # {}", s.key, s.value, "", s.source);
    }
    out
}

pub fn event_line(e: &BreakerEvent) -> String {
    let at = e.time.as_ref().map(time).unwrap_or_default();
    match Layer::try_from(e.layer) {
        Ok(Layer::Firm) => {
            return format!(
                "{at} #{} FIRM {}: {}",
                e.sequence,
                cause_name(e.cause),
                e.reason
            )
        }
        Ok(Layer::Group) => {
            return format!(
                "{at} #{} GROUP {} {}: {}",
                e.sequence,
                e.group,
                cause_name(e.cause),
                e.reason
            )
        }
        _ => {}
    }
    format!(
        "{at} #{} {} {} -> {} ({}): {}",
        e.sequence,
        e.account_id,
        state_name(e.from_state),
        state_name(e.to_state),
        cause_name(e.cause),
        e.reason
    )
}

pub fn snapshot_line(b: &Breaker) -> String {
    let note = note(b);
    format!(
        "now {} {} failures={}{}{}",
        b.account_id,
        state_name(b.state),
        b.failure_count,
        if note.is_empty() { "" } else { " " },
        note
    )
}

pub fn audit_table(records: &[AuditRecord]) -> String {
    if records.is_empty() {
        return "no operator actions recorded\n".to_owned();
    }
    let account_width = records
        .iter()
        .map(|r| r.account_id.len().max(r.group.len() + 6))
        .max()
        .unwrap_or(0)
        .max(7);
    let operator_width = records
        .iter()
        .map(|r| r.operator.len())
        .max()
        .unwrap_or(0)
        .max(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<24}  {:<account_width$}  {:<8}  {:<operator_width$}  {:<9}  {:<9}  {:<21}  REASON",
        "TIME", "ACCOUNT", "ACTION", "OPERATOR", "BEFORE", "AFTER", "PEER"
    );
    for r in records {
        let action = match AuditAction::try_from(r.action) {
            Ok(AuditAction::Reset) => "reset",
            Ok(AuditAction::Trip) => "trip",
            Ok(AuditAction::SetMode) => "mode",
            Ok(AuditAction::SetSettings) => "settings",
            Ok(AuditAction::HaltAll) => "halt",
            Ok(AuditAction::ResumeAll) => "resume",
            Ok(AuditAction::HaltGroup) => "halt-g",
            Ok(AuditAction::ResumeGroup) => "resume-g",
            _ => "?",
        };
        let target = if !r.group.is_empty() {
            format!("group:{}", r.group)
        } else if r.account_id.is_empty() {
            "(firm)".to_owned()
        } else {
            r.account_id.clone()
        };
        let reason = if r.detail.is_empty() {
            r.reason.clone()
        } else {
            format!("{} [{}]", r.reason, r.detail)
        };
        let _ = writeln!(
            out,
            "{:<24}  {:<account_width$}  {:<8}  {:<operator_width$}  {:<9}  {:<9}  {:<21}  {}",
            r.time.as_ref().map(time).unwrap_or_default(),
            target,
            action,
            r.operator,
            state_name(r.state_before),
            state_name(r.state_after),
            r.peer,
            reason
        );
    }
    out
}

/// The line `riskgate status` ends with in a cluster.
pub fn answered_by(cluster: &GetClusterResponse) -> String {
    let role = role_name(cluster.role);
    if NodeRole::try_from(cluster.role) == Ok(NodeRole::Leader) {
        format!(
            "answered by {} ({role}, epoch {})",
            cluster.node_id, cluster.epoch
        )
    } else if cluster.leader_id.is_empty() {
        format!(
            "answered by {} ({role}; no leader elected)",
            cluster.node_id
        )
    } else {
        format!(
            "answered by {} ({role}; leader {} at {}, epoch {})",
            cluster.node_id, cluster.leader_id, cluster.leader_address, cluster.epoch
        )
    }
}

/// `riskgate cluster`.
pub fn cluster(cluster: &GetClusterResponse) -> String {
    if !cluster.clustered {
        return "single node: not in a cluster ([cluster] etcd_endpoints is empty)\n".into();
    }
    let mut out = String::new();
    let _ = writeln!(out, "{}", answered_by(cluster));
    if cluster.leader_id.is_empty() {
        let _ = writeln!(out, "LEADER  none elected");
    } else {
        let _ = writeln!(
            out,
            "LEADER  {} at {}, epoch {}",
            cluster.leader_id, cluster.leader_address, cluster.epoch
        );
    }
    let _ = writeln!(out, "etcd revision {}", cluster.etcd_revision);
    let _ = writeln!(
        out,
        "{:<20} {:<24} {:<8} {:>10} {:>12} {:>10}",
        "NODE", "ADDRESS", "ROLE", "LAG(REVS)", "REPORTED", "LEASE LEFT"
    );
    for member in &cluster.members {
        let ago = member
            .reported_ago
            .map(|d| human_duration(std_duration(&d)) + " ago")
            .unwrap_or_else(|| "-".into());
        let lease = member
            .lease_left
            .map(|d| human_duration(std_duration(&d)))
            .unwrap_or_else(|| "expired".into());
        let _ = writeln!(
            out,
            "{:<20} {:<24} {:<8} {:>10} {:>12} {:>10}",
            member.node_id,
            member.address,
            if member.leader { "leader" } else { "standby" },
            member.lag_revisions,
            ago,
            lease
        );
    }
    out
}

/// A breaker as one JSON object (`riskgate status --json`).
pub fn breaker_json(b: &Breaker) -> String {
    crate::api::json::breaker(b).to_string()
}

/// A halt as one JSON object (`riskgate halts --json`).
pub fn halt_json(h: &Halt) -> String {
    crate::api::json::halt(h).to_string()
}

/// One audit record as a JSON object on one line, every field named as in the API.
pub fn audit_json(r: &AuditRecord) -> String {
    crate::api::json::audit(r).to_string()
}

/// The cluster as JSON lines, one per member (`riskgate cluster --json`); a single node is one
/// line saying so.
pub fn cluster_json(c: &GetClusterResponse) -> Vec<String> {
    crate::api::json::cluster(c)
        .iter()
        .map(|v| v.to_string())
        .collect()
}
