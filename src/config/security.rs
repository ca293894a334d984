//! `[tls]`, `[auth]` and `[limits]`: who may connect, who may do what, and how much.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{invalid, seconds, ConfigError};
use crate::registry::AccountPattern;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain; empty serves plaintext.
    pub cert: PathBuf,
    /// PEM private key of `cert`.
    pub key: PathBuf,
    /// PEM CA bundle: when set, clients must present a certificate it signed (mutual TLS).
    pub client_ca: PathBuf,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert.as_os_str().is_empty()
    }
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Every caller may do everything (the localhost quick start).
    #[default]
    None,
    /// Callers present `authorization: Bearer <token>`.
    Token,
    /// Callers are identified by their TLS client certificate.
    Mtls,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    pub name: String,
    /// Any of "bot", "monitor", "operator".
    pub roles: Vec<String>,
    /// For bots: the accounts they may trade (ids or prefixes ending in `*`); empty: all.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Hex SHA-256 of the principal's bearer token (mode "token"; under "mtls", optional, for
    /// signing in to the web console).
    #[serde(default)]
    pub token_sha256: String,
    /// The subject CN or a DNS name of the SAN of its client certificate (mode "mtls").
    #[serde(default)]
    pub cert_name: String,
    /// GateService calls per second for this principal; overrides limits.gate_calls_per_sec.
    #[serde(default)]
    pub gate_calls_per_sec: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_message_bytes: usize,
    pub max_concurrent_streams: u32,
    pub max_watchers: usize,
    pub keepalive_interval_secs: f64,
    pub keepalive_timeout_secs: f64,
    pub gate_calls_per_sec: u32,
    pub max_in_flight: usize,
    pub max_in_flight_per_client: usize,
    pub request_body_timeout_secs: f64,
    pub max_connections: usize,
    pub max_connections_per_peer: usize,
    pub handshake_timeout_secs: f64,
    pub idle_timeout_secs: f64,
    pub listen_backlog: u32,
}

pub const ROLES: [&str; 3] = ["bot", "monitor", "operator"];

pub(super) fn validate(
    tls: &TlsConfig,
    auth: &AuthConfig,
    limits: &LimitsConfig,
) -> Result<(), ConfigError> {
    let cert = !tls.cert.as_os_str().is_empty();
    let key = !tls.key.as_os_str().is_empty();
    if cert != key {
        return Err(invalid(
            "tls.cert",
            "and tls.key are set together (both empty serves plaintext)".into(),
        ));
    }
    if !tls.client_ca.as_os_str().is_empty() && !cert {
        return Err(invalid(
            "tls.client_ca",
            "needs tls.cert and tls.key: mutual TLS is TLS first".into(),
        ));
    }
    if auth.mode == AuthMode::Mtls && tls.client_ca.as_os_str().is_empty() {
        return Err(invalid(
            "auth.mode",
            "\"mtls\" needs tls.cert, tls.key and tls.client_ca".into(),
        ));
    }
    if auth.mode != AuthMode::None && auth.principals.is_empty() {
        return Err(invalid(
            "auth.principals",
            format!(
                "must name at least one principal when auth.mode is {:?}",
                auth.mode
            ),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in auth.principals.iter().enumerate() {
        let key = format!("auth.principals[{i}]");
        if p.name.trim().is_empty() || p.name.len() > 128 || p.name.chars().any(char::is_control) {
            return Err(invalid(
                &format!("{key}.name"),
                "must be 1-128 characters without control characters".into(),
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(invalid(
                &format!("{key}.name"),
                format!("{:?} names two principals", p.name),
            ));
        }
        if p.roles.is_empty() {
            return Err(invalid(
                &format!("{key}.roles"),
                "must hold at least one of \"bot\", \"monitor\", \"operator\"".into(),
            ));
        }
        for role in &p.roles {
            if !ROLES.contains(&role.as_str()) {
                return Err(invalid(
                    &format!("{key}.roles"),
                    format!(
                        "{role:?} is not a role; the roles are \"bot\", \"monitor\", \"operator\""
                    ),
                ));
            }
        }
        for pattern in &p.accounts {
            AccountPattern::parse(pattern).map_err(|e| invalid(&format!("{key}.accounts"), e))?;
        }
        match auth.mode {
            AuthMode::Token => {
                let hex = &p.token_sha256;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        &format!("{key}.token_sha256"),
                        "must be the 64 hex digits of the token's SHA-256 (riskgate hash-token prints it)".into(),
                    ));
                }
            }
            AuthMode::Mtls => {
                let hex = &p.token_sha256;
                if !hex.is_empty()
                    && (hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(invalid(
                        &format!("{key}.token_sha256"),
                        "must be empty or the 64 hex digits of the token's SHA-256 (riskgate hash-token prints it); under mtls it signs in to the web console".into(),
                    ));
                }
                if p.cert_name.is_empty() {
                    return Err(invalid(
                        &format!("{key}.cert_name"),
                        "must name the client certificate's subject CN or a SAN DNS name".into(),
                    ));
                }
            }
            AuthMode::None => {}
        }
        if p.gate_calls_per_sec == Some(0) {
            return Err(invalid(
                &format!("{key}.gate_calls_per_sec"),
                "must be >= 1 (leave it out to use limits.gate_calls_per_sec)".into(),
            ));
        }
    }
    if limits.max_message_bytes < 1024 || limits.max_message_bytes > 64 * 1024 * 1024 {
        return Err(invalid(
            "limits.max_message_bytes",
            "must be from 1024 to 67108864".into(),
        ));
    }
    for (key, value) in [
        (
            "limits.max_concurrent_streams",
            limits.max_concurrent_streams as usize,
        ),
        ("limits.max_watchers", limits.max_watchers),
        ("limits.max_in_flight", limits.max_in_flight),
        (
            "limits.max_in_flight_per_client",
            limits.max_in_flight_per_client,
        ),
        ("limits.max_connections", limits.max_connections),
        (
            "limits.max_connections_per_peer",
            limits.max_connections_per_peer,
        ),
        ("limits.listen_backlog", limits.listen_backlog as usize),
    ] {
        if value == 0 {
            return Err(invalid(key, "must be >= 1".into()));
        }
    }
    seconds(
        "limits.keepalive_interval_secs",
        limits.keepalive_interval_secs,
    )?;
    seconds(
        "limits.keepalive_timeout_secs",
        limits.keepalive_timeout_secs,
    )?;
    seconds(
        "limits.request_body_timeout_secs",
        limits.request_body_timeout_secs,
    )?;
    seconds(
        "limits.handshake_timeout_secs",
        limits.handshake_timeout_secs,
    )?;
    if limits.idle_timeout_secs != 0.0 {
        seconds("limits.idle_timeout_secs", limits.idle_timeout_secs)?;
    }
    Ok(())
}
