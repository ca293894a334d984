//! Who is calling, and what they may do.
//!
//! Owns authentication (a bearer token, or the TLS client certificate), the role each RPC
//! needs, a bot's accounts, the per-principal rate limit on the gate and load shedding. All of
//! it is applied in one place, [`AuthLayer`], around every service; the gate handlers only ask
//! [`authorize`] whether the principal may trade the account named in the message.

mod layer;
pub mod tls;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use subtle::ConstantTimeEq;

use crate::config::{AuthMode, Config};
use crate::error::Error;
use crate::registry::AccountPattern;

pub use layer::AuthLayer;

/// What a principal may call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub bot: bool,
    pub monitor: bool,
    pub operator: bool,
}

impl Roles {
    pub const ALL: Roles = Roles {
        bot: true,
        monitor: true,
        operator: true,
    };

    fn parse(names: &[String]) -> Self {
        Roles {
            bot: names.iter().any(|r| r == "bot"),
            monitor: names.iter().any(|r| r == "monitor"),
            operator: names.iter().any(|r| r == "operator"),
        }
    }
}

/// An authenticated caller.
#[derive(Debug)]
pub struct Principal {
    pub name: Arc<str>,
    pub roles: Roles,
    /// The accounts a bot may trade; all when empty.
    pub accounts: Vec<AccountPattern>,
    /// Whether authentication is on: if not, the principal is everyone, and names from
    /// requests (an operator's) are taken as given.
    pub authenticated: bool,
    limiter: Option<DefaultDirectRateLimiter>,
    gate_calls_per_sec: u32,
    /// Calls of this principal in flight (counted when authentication is on).
    pub(crate) in_flight: std::sync::atomic::AtomicUsize,
    token_sha256: [u8; 32],
    cert_name: String,
}

impl Principal {
    /// Takes one GateService call from the principal's rate, or says the limit.
    pub fn admit_gate_call(&self) -> Result<(), Error> {
        match &self.limiter {
            Some(limiter) if limiter.check().is_err() => {
                crate::metrics::auth_refused("rate_limited");
                Err(Error::RateLimited {
                    principal: self.name.to_string(),
                    per_sec: self.gate_calls_per_sec,
                })
            }
            _ => Ok(()),
        }
    }

    /// Whether this principal may trade `account_id`.
    pub fn may_trade(&self, account_id: &str) -> bool {
        self.accounts.is_empty() || self.accounts.iter().any(|p| p.matches(account_id))
    }
}

/// The service an RPC path belongs to, and the roles that may call it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Gate,
    Monitor,
    Admin,
    Health,
    Reflection,
    Unknown,
}

/// The service a call's path names: `riskgate.v1.GateService` in
/// `/riskgate.v1.GateService/CheckTrade`.
pub fn service_name(path: &str) -> &str {
    path.trim_start_matches('/').split('/').next().unwrap_or("")
}

impl Service {
    pub fn of_path(path: &str) -> Service {
        match service_name(path) {
            "riskgate.v1.GateService" => Service::Gate,
            "riskgate.v1.MonitorService" => Service::Monitor,
            // AdminService's reads (halts, the audit trail, the configuration) are monitoring.
            "riskgate.v1.AdminService" if crate::cluster::routing::ADMIN_READS.contains(&path) => {
                Service::Monitor
            }
            "riskgate.v1.AdminService" => Service::Admin,
            "grpc.health.v1.Health" => Service::Health,
            "grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection" => {
                Service::Reflection
            }
            _ => Service::Unknown,
        }
    }

    /// Whether `roles` may call this service.
    pub fn allows(self, roles: Roles) -> bool {
        match self {
            Service::Gate => roles.bot,
            Service::Monitor => roles.monitor || roles.operator,
            Service::Admin => roles.operator,
            // Any authenticated principal may discover the API; unknown paths are answered
            // UNIMPLEMENTED by the router.
            Service::Reflection | Service::Unknown => true,
            Service::Health => true,
        }
    }
}

/// Refusals, counted for operators (and metrics).
#[derive(Debug, Default)]
pub struct AuthCounters {
    pub unauthenticated: AtomicU64,
    pub permission_denied: AtomicU64,
    pub rate_limited: AtomicU64,
    pub shed: AtomicU64,
}

/// The authentication configuration in force, replaced on reload.
pub struct AuthPolicy {
    mode: AuthMode,
    principals: Vec<Arc<Principal>>,
    /// Everyone, when authentication is off.
    anonymous: Arc<Principal>,
    /// Certificates already matched to a principal (by DER bytes), so a connection's
    /// certificate is parsed once, not on every call.
    by_cert: RwLock<HashMap<Vec<u8>, Option<Arc<Principal>>>>,
}

/// Most client certificates remembered by `by_cert`.
const CERT_CACHE: usize = 4_096;

fn limiter(per_sec: u32) -> Option<DefaultDirectRateLimiter> {
    NonZeroU32::new(per_sec).map(|n| RateLimiter::direct(Quota::per_second(n)))
}

impl AuthPolicy {
    /// The policy of a validated configuration.
    pub fn from_config(config: &Config) -> Self {
        let default_rate = config.limits.gate_calls_per_sec;
        let principals = config
            .auth
            .principals
            .iter()
            .map(|p| {
                let rate = p.gate_calls_per_sec.unwrap_or(default_rate);
                let mut token_sha256 = [0u8; 32];
                for (i, byte) in token_sha256.iter_mut().enumerate() {
                    *byte = p
                        .token_sha256
                        .get(2 * i..2 * i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .unwrap_or(0);
                }
                Arc::new(Principal {
                    name: p.name.as_str().into(),
                    roles: Roles::parse(&p.roles),
                    accounts: p
                        .accounts
                        .iter()
                        .filter_map(|a| AccountPattern::parse(a).ok())
                        .collect(),
                    authenticated: true,
                    limiter: limiter(rate),
                    gate_calls_per_sec: rate,
                    in_flight: Default::default(),
                    token_sha256,
                    cert_name: p.cert_name.clone(),
                })
            })
            .collect();
        AuthPolicy {
            mode: config.auth.mode,
            principals,
            anonymous: Arc::new(Principal {
                name: "anonymous".into(),
                roles: Roles::ALL,
                accounts: Vec::new(),
                authenticated: false,
                limiter: limiter(default_rate),
                gate_calls_per_sec: default_rate,
                in_flight: Default::default(),
                token_sha256: [0; 32],
                cert_name: String::new(),
            }),
            by_cert: RwLock::new(HashMap::new()),
        }
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The principal whose token signs in to the web console, or why not; everyone when
    /// authentication is off. Under mutual TLS a principal may hold a token for the console
    /// beside its certificate.
    pub fn sign_in(&self, token: &str) -> Result<Arc<Principal>, &'static str> {
        if self.mode == AuthMode::None {
            return Ok(self.anonymous.clone());
        }
        let token = token.trim();
        if token.is_empty() {
            return Err("no token given");
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let mut found = None;
        for principal in &self.principals {
            let has_token = principal.token_sha256 != [0; 32];
            if has_token && bool::from(principal.token_sha256.ct_eq(digest.as_ref())) {
                found = Some(principal.clone());
            }
        }
        found.ok_or("unknown token")
    }

    /// The caller of a request with these headers and TLS client certificate, or why not.
    pub fn authenticate(
        &self,
        headers: &http::HeaderMap,
        client_cert: Option<&[u8]>,
    ) -> Result<Arc<Principal>, &'static str> {
        match self.mode {
            AuthMode::None => Ok(self.anonymous.clone()),
            AuthMode::Token => {
                let value = headers
                    .get(http::header::AUTHORIZATION)
                    .ok_or("no credentials: send `authorization: Bearer <token>`")?;
                let token = value
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or("the authorization header is not `Bearer <token>`")?;
                let digest = ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes());
                // Compare against every principal, in constant time each, so the time taken
                // says nothing about which (if any) matched.
                let mut found = None;
                for principal in &self.principals {
                    if bool::from(principal.token_sha256.ct_eq(digest.as_ref())) {
                        found = Some(principal.clone());
                    }
                }
                found.ok_or("unknown token")
            }
            AuthMode::Mtls => {
                let der = client_cert.ok_or("no client certificate")?;
                if let Some(known) = self
                    .by_cert
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(der)
                {
                    return known
                        .clone()
                        .ok_or("the client certificate names no principal");
                }
                let names = tls::certificate_names(der);
                let found = self
                    .principals
                    .iter()
                    .find(|p| names.iter().any(|n| n == &p.cert_name))
                    .cloned();
                let mut cache = self
                    .by_cert
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= CERT_CACHE {
                    cache.clear();
                }
                cache.insert(der.to_vec(), found.clone());
                found.ok_or("the client certificate names no principal")
            }
        }
    }
}

/// What `token_sha256` holds for `token`: its SHA-256, in lowercase hex (`riskgate hash-token`).
pub fn token_sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Refuses a gate call (or trade session message) for an account the principal may not trade.
/// The message does not say whether the account exists.
pub fn authorize(principal: Option<&Principal>, account_id: &str) -> Result<(), Error> {
    match principal {
        Some(principal) if !principal.may_trade(account_id) => {
            tracing::warn!(principal = %principal.name, account_id, "permission denied: account not granted to this principal");
            crate::metrics::auth_refused("account_not_granted");
            Err(Error::AccountNotGranted {
                principal: principal.name.to_string(),
                account: account_id.to_owned(),
            })
        }
        _ => Ok(()),
    }
}

/// The authenticated principal's name, to record in place of a name from the request; `None`
/// when authentication is off.
pub fn principal_name<T>(request: &tonic::Request<T>) -> Option<Arc<str>> {
    request
        .extensions()
        .get::<Arc<Principal>>()
        .filter(|p| p.authenticated)
        .map(|p| p.name.clone())
}

/// What a long-lived call (a trade session) needs to authenticate its caller again: a reload
/// may remove the principal, take its role away or narrow its accounts, and that must reach a
/// stream that is already open, at its next message.
pub struct SessionCredentials {
    auth: Arc<Auth>,
    authorization: Option<http::HeaderValue>,
    client_cert: Option<Vec<u8>>,
    /// The policy the call was authenticated under.
    authenticated_under: Arc<AuthPolicy>,
}

impl SessionCredentials {
    /// The policy the call was authenticated under: where the session's `seen` starts.
    pub fn authenticated_under(&self) -> Arc<AuthPolicy> {
        self.authenticated_under.clone()
    }

    /// The principal under the policy in force: `None` (keep `principal`) while the policy is
    /// still `seen`, which costs one pointer comparison; after a reload, the principal the same
    /// credentials name now (and `seen` becomes the new policy), or why the session may not go
    /// on (`UNAUTHENTICATED`, `PERMISSION_DENIED`).
    pub fn refresh(
        &self,
        seen: &mut Arc<AuthPolicy>,
        principal: &Arc<Principal>,
    ) -> Result<Option<Arc<Principal>>, Error> {
        let current = self.auth.policy.load();
        if Arc::ptr_eq(&current, seen) {
            return Ok(None);
        }
        let mut headers = http::HeaderMap::new();
        if let Some(value) = &self.authorization {
            headers.insert(http::header::AUTHORIZATION, value.clone());
        }
        let renewed = match current.authenticate(&headers, self.client_cert.as_deref()) {
            Ok(renewed) => renewed,
            Err(why) => {
                crate::metrics::auth_refused("unauthenticated");
                tracing::warn!(principal = %principal.name, why, "trade session ended: its credentials are no longer accepted");
                return Err(Error::CredentialsRevoked(why));
            }
        };
        if !Service::Gate.allows(renewed.roles) {
            crate::metrics::auth_refused("permission_denied");
            tracing::warn!(principal = %renewed.name, "trade session ended: the principal no longer has the bot role");
            return Err(Error::RoleRevoked {
                principal: renewed.name.to_string(),
            });
        }
        *seen = arc_swap::Guard::into_inner(current);
        Ok(Some(renewed))
    }
}

/// Shared by the layer and the server: the policy in force (swapped on reload) and counters.
pub struct Auth {
    /// Read on every call without a lock (arc-swap), replaced whole on reload.
    policy: arc_swap::ArcSwap<AuthPolicy>,
    pub counters: AuthCounters,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: usize,
    max_in_flight_per_client: usize,
    /// How long a request's body may take to arrive after its headers.
    body_timeout: std::time::Duration,
}

impl Auth {
    pub fn new(config: &Config) -> Arc<Self> {
        Arc::new(Auth {
            policy: arc_swap::ArcSwap::from_pointee(AuthPolicy::from_config(config)),
            counters: AuthCounters::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            max_in_flight: config.limits.max_in_flight,
            max_in_flight_per_client: config.limits.max_in_flight_per_client,
            body_timeout: std::time::Duration::from_secs_f64(
                config.limits.request_body_timeout_secs,
            ),
        })
    }

    pub fn policy(&self) -> arc_swap::Guard<Arc<AuthPolicy>> {
        self.policy.load()
    }

    /// Puts the principals of a new configuration in force.
    pub fn reload(&self, config: &Config) {
        self.policy.store(Arc::new(AuthPolicy::from_config(config)));
    }

    fn count(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
