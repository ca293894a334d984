//! Configuration: the embedded default, then an optional TOML file, then `RISKGATE__...`
//! environment variables, checked as a whole before anything starts.
//!
//! Owns the mapping from user-facing keys to the service's typed options; every rule a key must
//! follow is checked here, and a violation names the key and the rule.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::{Mode, Overrides, Settings, MAX_SECS};
use crate::registry::{validate_account_id, AccountPattern, RegistryOptions, Rulebook};

mod security;

pub use security::{AuthConfig, AuthMode, LimitsConfig, PrincipalConfig, TlsConfig, ROLES};

/// The embedded default configuration; documents every key.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key} {rule}")]
    Invalid { key: String, rule: String },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub breaker: BreakerConfig,
    pub store: StoreConfig,
    pub events: EventsConfig,
    pub audit: AuditConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub accounts: BTreeMap<String, BreakerOverride>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupConfig>,
    pub tls: TlsConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub metrics: MetricsConfig,
    pub console: ConsoleConfig,
    pub cluster: ClusterConfig,
    /// Where this configuration was read from, so it can be read again on reload: the file
    /// given, if any, and whether the process environment took part.
    #[serde(skip)]
    pub source: Option<ConfigSource>,
}

/// The sources a configuration was loaded from, for reloading it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSource {
    pub file: Option<PathBuf>,
}

/// `[metrics]`: the Prometheus listener.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP listener serving `/metrics`; empty: no metrics.
    pub listen: String,
}

impl MetricsConfig {
    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr("metrics.listen", &self.listen, "0.0.0.0:9090", "no metrics")
    }
}

/// `[console]`: the operators' web console.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Address of the console's HTTP listener; empty: no console. `riskgate serve` without a
    /// configuration file serves it on [`ConsoleConfig::QUICK_START`].
    pub listen: String,
    /// With `auth.mode = "none"` the console listens only on a loopback address, unless this
    /// says otherwise: anyone who reaches it may halt the firm.
    pub allow_remote_without_auth: bool,
    /// How long a signed-in session lasts without being used.
    pub session_idle_secs: f64,
    /// Marks the session cookie `Secure` (sent over HTTPS only): set it when operators reach
    /// the console through a proxy that terminates TLS.
    pub secure_cookie: bool,
    /// The quick start's console (no configuration file): an address already in use is
    /// logged and the service runs without a console, instead of not starting.
    #[serde(skip)]
    pub best_effort: bool,
}

impl ConsoleConfig {
    /// Where the console listens when `riskgate serve` runs without a configuration file.
    pub const QUICK_START: &'static str = "127.0.0.1:8080";

    pub fn listen_addr(&self) -> Result<Option<SocketAddr>, ConfigError> {
        optional_addr(
            "console.listen",
            &self.listen,
            "127.0.0.1:8080",
            "no console",
        )
    }

    fn validate(&self, auth: AuthMode) -> Result<(), ConfigError> {
        let addr = self.listen_addr()?;
        if let Some(addr) = addr {
            if auth == AuthMode::None && !addr.ip().is_loopback() && !self.allow_remote_without_auth
            {
                return Err(invalid(
                    "console.listen",
                    format!(
                        "is {addr}, not a loopback address, while auth.mode is \"none\": anyone who reaches it could halt the firm; turn authentication on, listen on 127.0.0.1, or set console.allow_remote_without_auth = true"
                    ),
                ));
            }
        }
        let secs = self.session_idle_secs;
        if !(secs.is_finite() && (60.0..=7.0 * 24.0 * 3600.0).contains(&secs)) {
            return Err(invalid(
                "console.session_idle_secs",
                format!("must be between 60 (a minute) and 604800 (a week), not {secs}"),
            ));
        }
        Ok(())
    }

    /// Turns the console on at [`ConsoleConfig::QUICK_START`], best effort, unless the
    /// environment says where (or, empty, that there is none).
    pub fn quick_start(&mut self) {
        if self.listen.is_empty() && std::env::var_os("RISKGATE__CONSOLE__LISTEN").is_none() {
            self.listen = Self::QUICK_START.to_owned();
            self.best_effort = true;
        }
    }

    pub fn session_idle(&self) -> Duration {
        Duration::from_secs_f64(self.session_idle_secs)
    }
}

/// The address of an optional listener (`key`), or `None` when `text` is empty.
fn optional_addr(
    key: &str,
    text: &str,
    example: &str,
    empty: &str,
) -> Result<Option<SocketAddr>, ConfigError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        invalid(
            key,
            format!("must be an address such as {example} (or empty: {empty}), not {text:?}"),
        )
    })
}

/// `[groups.NAME]`: accounts halted and resumed together.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Account ids, or prefixes ending in `*`.
    pub accounts: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub max_accounts: usize,
    pub shutdown_grace_secs: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub failure_window_secs: f64,
    pub open_timeout_secs: f64,
    pub half_open_max_tries: u32,
    pub half_open_timeout_secs: f64,
    pub failure_rate_threshold: f64,
    pub slow_call_secs: f64,
    pub slow_call_rate_threshold: f64,
    pub minimum_calls: u32,
    pub open_backoff_multiplier: f64,
    pub max_open_timeout_secs: f64,
    pub open_backoff_jitter: f64,
    pub backoff_reset_secs: f64,
    pub allow_reduce_only_when_open: bool,
    pub mode: String,
    pub failure_kinds: BTreeMap<String, String>,
}

/// Any `[breaker]` key, for one account.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverride {
    pub failure_threshold: Option<u32>,
    pub failure_window_secs: Option<f64>,
    pub open_timeout_secs: Option<f64>,
    pub half_open_max_tries: Option<u32>,
    pub half_open_timeout_secs: Option<f64>,
    pub failure_rate_threshold: Option<f64>,
    pub slow_call_secs: Option<f64>,
    pub slow_call_rate_threshold: Option<f64>,
    pub minimum_calls: Option<u32>,
    pub open_backoff_multiplier: Option<f64>,
    pub max_open_timeout_secs: Option<f64>,
    pub open_backoff_jitter: Option<f64>,
    pub backoff_reset_secs: Option<f64>,
    pub allow_reduce_only_when_open: Option<bool>,
    pub mode: Option<String>,
    /// Merged key by key over `[breaker.failure_kinds]`.
    pub failure_kinds: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Memory,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub path: PathBuf,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub retained: usize,
    pub retained_secs: f64,
    pub subscriber_buffer: usize,
    pub heartbeat_secs: f64,
}

/// How the configuration file stands against the configuration in force, for
/// `riskgate config`: set by the server at every reload.
#[derive(Debug, Default)]
pub struct ConfigDrift {
    inner: std::sync::Mutex<Drift>,
}

/// What differs between the file and what is in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// The last reload was refused, for this reason.
    pub reload_refused: Option<String>,
    /// Sections the file changes that need a restart.
    pub restart_needed: Vec<String>,
}

impl ConfigDrift {
    pub fn get(&self) -> Drift {
        self.lock().clone()
    }

    /// A reload was refused: the file does not validate.
    pub fn refused(&self, error: String) {
        self.lock().reload_refused = Some(error);
    }

    /// The file was read and applied, except `restart_needed`.
    pub fn applied(&self, restart_needed: Vec<String>) {
        *self.lock() = Drift {
            reload_refused: None,
            restart_needed,
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Drift> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// `[cluster]`: running as one node of a cluster on etcd (docs/cluster.md).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// etcd's client URLs; empty: a single node.
    pub etcd_endpoints: Vec<String>,
    pub node_id: String,
    pub advertise: String,
    pub lease_secs: u64,
    pub key_prefix: String,
    pub max_txn_ops: usize,
    pub audit_records: usize,
    pub etcd_username: String,
    pub etcd_password: String,
    pub etcd_ca: PathBuf,
    pub etcd_cert: PathBuf,
    pub etcd_key: PathBuf,
}

impl ClusterConfig {
    /// Whether this node runs in a cluster.
    pub fn enabled(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        for endpoint in &self.etcd_endpoints {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(invalid(
                    "cluster.etcd_endpoints",
                    format!("must be URLs such as http://10.0.0.1:2379, not {endpoint:?}"),
                ));
            }
        }
        if self.node_id.is_empty() || validate_account_id(&self.node_id).is_err() {
            return Err(invalid(
                "cluster.node_id",
                "must name this node (letters, digits, '-', '_', '.', ':'), unique in the cluster"
                    .into(),
            ));
        }
        if self.advertise.is_empty() {
            return Err(invalid(
                "cluster.advertise",
                "must be the host:port clients reach this node at".into(),
            ));
        }
        if !(1..=60).contains(&self.lease_secs) {
            return Err(invalid(
                "cluster.lease_secs",
                format!(
                    "must be whole seconds from 1 to 60, not {}",
                    self.lease_secs
                ),
            ));
        }
        if self.key_prefix.is_empty() {
            return Err(invalid("cluster.key_prefix", "must not be empty".into()));
        }
        if !(8..=10_000).contains(&self.max_txn_ops) {
            return Err(invalid(
                "cluster.max_txn_ops",
                format!(
                    "must be from 8 to 10000 (etcd's --max-txn-ops, 128 by default), not {}",
                    self.max_txn_ops
                ),
            ));
        }
        at_least("cluster.audit_records", self.audit_records, 1)?;
        if self.etcd_username.is_empty() != self.etcd_password.is_empty() {
            return Err(invalid(
                "cluster.etcd_username",
                "and cluster.etcd_password go together: set both or neither".into(),
            ));
        }
        if self.etcd_cert.as_os_str().is_empty() != self.etcd_key.as_os_str().is_empty() {
            return Err(invalid(
                "cluster.etcd_cert",
                "and cluster.etcd_key go together: set both or neither".into(),
            ));
        }
        Ok(())
    }
}

/// How long operator actions are kept (`[audit]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Records older than this many days are pruned; 0 keeps them whatever their age.
    pub retain_days: f64,
    /// All but the newest this many records are pruned; 0 keeps them whatever their number.
    pub retain_records: u64,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// The embedded default, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = Self::load_with_env(file, None)?;
        config.source = Some(ConfigSource {
            file: file.map(Path::to_path_buf),
        });
        Ok(config)
    }

    /// Reads the configuration again from the sources it was loaded from.
    pub fn reload(&self) -> Result<Self, ConfigError> {
        Self::load(self.source.as_ref().and_then(|s| s.file.as_deref()))
    }

    /// The sections a reload cannot change (they need a restart) that differ from `other`.
    pub fn fixed_sections_changed(&self, other: &Config) -> Vec<&'static str> {
        fn text<T: Serialize>(section: &T) -> String {
            toml::to_string(section).unwrap_or_default()
        }
        [
            ("server", text(&self.server) != text(&other.server)),
            ("store", text(&self.store) != text(&other.store)),
            ("events", text(&self.events) != text(&other.events)),
            ("audit", text(&self.audit) != text(&other.audit)),
            ("log", text(&self.log) != text(&other.log)),
            ("limits", text(&self.limits) != text(&other.limits)),
            ("metrics", text(&self.metrics) != text(&other.metrics)),
            ("console", text(&self.console) != text(&other.console)),
            ("cluster", text(&self.cluster) != text(&other.cluster)),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }

    /// As `load`, with `env` standing in for the process environment when given (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder().add_source(config::File::from_str(
            DEFAULT_TOML,
            config::FileFormat::Toml,
        ));
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        let environment = config::Environment::with_prefix("RISKGATE")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            // RISKGATE__CLUSTER__ETCD_ENDPOINTS=http://a:2379,http://b:2379
            .list_separator(",")
            .with_list_parse_key("cluster.etcd_endpoints")
            .source(env);
        let config: Config = builder.add_source(environment).build()?.try_deserialize()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule, naming the first key that breaks one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        at_least("server.max_accounts", self.server.max_accounts, 1)?;
        seconds(
            "server.shutdown_grace_secs",
            self.server.shutdown_grace_secs,
        )?;
        breaker_settings("breaker", &self.breaker)?;
        security::validate(&self.tls, &self.auth, &self.limits)?;
        self.metrics.listen_addr()?;
        self.console.validate(self.auth.mode)?;
        self.cluster.validate()?;
        at_least("events.subscriber_buffer", self.events.subscriber_buffer, 1)?;
        seconds("events.retained_secs", self.events.retained_secs)?;
        let days = self.audit.retain_days;
        if !(days.is_finite() && (0.0..=36_500.0).contains(&days)) {
            return Err(invalid(
                "audit.retain_days",
                format!("must be a number of days >= 0 (0: kept whatever their age) and <= 36500, not {days}"),
            ));
        }
        if self.store.kind == StoreKind::Sqlite && self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must name a directory".into()));
        }
        seconds("events.heartbeat_secs", self.events.heartbeat_secs)?;
        tracing_subscriber::EnvFilter::try_new(&self.log.level).map_err(|e| {
            invalid(
                "log.level",
                format!("must be a tracing filter such as \"info\" ({e})"),
            )
        })?;
        for (name, group) in &self.groups {
            let key = format!("groups.{name}");
            validate_account_id(name).map_err(|e| {
                invalid(
                    &key,
                    format!("is not a valid group name (the account-id rule): {e}"),
                )
            })?;
            for pattern in &group.accounts {
                AccountPattern::parse(pattern)
                    .map_err(|e| invalid(&format!("{key}.accounts"), e))?;
            }
        }
        for (account_id, overrides) in &self.accounts {
            validate_account_id(account_id).map_err(|e| {
                invalid(
                    &format!("accounts.\"{account_id}\""),
                    format!("names an invalid account: {e}"),
                )
            })?;
            breaker_settings(
                &format!("accounts.\"{account_id}\""),
                &self.breaker.with(overrides),
            )?;
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!(
                    "must be an address such as 127.0.0.1:50051, not {:?}",
                    self.server.listen
                ),
            )
        })
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs_f64(self.server.shutdown_grace_secs)
    }

    /// How long the audit trail is kept.
    pub fn audit_retention(&self) -> crate::store::AuditRetention {
        crate::store::AuditRetention {
            max_age: (self.audit.retain_days > 0.0)
                .then(|| Duration::from_secs_f64(self.audit.retain_days * 86_400.0)),
            records: (self.audit.retain_records > 0).then_some(self.audit.retain_records),
        }
    }

    pub fn retained_age(&self) -> Duration {
        Duration::from_secs_f64(self.events.retained_secs)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.events.heartbeat_secs)
    }

    /// Identifies this configuration: a digest of every value in force, the same for the same
    /// configuration wherever it came from.
    pub fn version(&self) -> String {
        let text = self.to_toml();
        // FNV-1a, 64 bits: a stable identifier, not a security measure.
        let digest = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{digest:016x}")
    }

    /// The configuration in force as TOML, every key included.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot be shown: {e}"))
    }

    /// The registry's view of the configuration: settings and groups. Call on a validated
    /// config.
    pub fn rulebook(&self) -> Rulebook {
        let defaults = Arc::new(self.breaker.settings());
        Rulebook {
            overrides: self
                .accounts
                .iter()
                .map(|(account, o)| (account.clone(), Arc::new(self.breaker.with(o).settings())))
                .collect(),
            defaults,
            builtin: Arc::new(embedded_breaker_settings()),
            groups: self
                .groups
                .iter()
                .map(|(name, group)| {
                    let patterns = group
                        .accounts
                        .iter()
                        .filter_map(|p| AccountPattern::parse(p).ok())
                        .collect();
                    (name.clone(), patterns)
                })
                .collect(),
            version: self.version().into(),
            text: self.to_toml().into(),
        }
    }

    /// The registry's options. Call on a validated config.
    pub fn registry_options(&self) -> RegistryOptions {
        RegistryOptions {
            rulebook: self.rulebook(),
            max_accounts: self.server.max_accounts,
            retained_events: self.events.retained,
            retained_age: self.retained_age(),
            subscriber_buffer: self.events.subscriber_buffer,
        }
    }
}

impl BreakerConfig {
    fn with(&self, o: &BreakerOverride) -> BreakerConfig {
        BreakerConfig {
            failure_threshold: o.failure_threshold.unwrap_or(self.failure_threshold),
            failure_window_secs: o.failure_window_secs.unwrap_or(self.failure_window_secs),
            open_timeout_secs: o.open_timeout_secs.unwrap_or(self.open_timeout_secs),
            half_open_max_tries: o.half_open_max_tries.unwrap_or(self.half_open_max_tries),
            half_open_timeout_secs: o
                .half_open_timeout_secs
                .unwrap_or(self.half_open_timeout_secs),
            failure_rate_threshold: o
                .failure_rate_threshold
                .unwrap_or(self.failure_rate_threshold),
            slow_call_secs: o.slow_call_secs.unwrap_or(self.slow_call_secs),
            slow_call_rate_threshold: o
                .slow_call_rate_threshold
                .unwrap_or(self.slow_call_rate_threshold),
            minimum_calls: o.minimum_calls.unwrap_or(self.minimum_calls),
            open_backoff_multiplier: o
                .open_backoff_multiplier
                .unwrap_or(self.open_backoff_multiplier),
            max_open_timeout_secs: o
                .max_open_timeout_secs
                .unwrap_or(self.max_open_timeout_secs),
            open_backoff_jitter: o.open_backoff_jitter.unwrap_or(self.open_backoff_jitter),
            backoff_reset_secs: o.backoff_reset_secs.unwrap_or(self.backoff_reset_secs),
            allow_reduce_only_when_open: o
                .allow_reduce_only_when_open
                .unwrap_or(self.allow_reduce_only_when_open),
            mode: o.mode.clone().unwrap_or_else(|| self.mode.clone()),
            failure_kinds: {
                let mut kinds = self.failure_kinds.clone();
                if let Some(own) = &o.failure_kinds {
                    kinds.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                kinds
            },
        }
    }

    /// The values of this table, all given, as the core lays settings over each other.
    fn as_overrides(&self) -> Overrides {
        Overrides {
            failure_threshold: Some(self.failure_threshold),
            failure_window_secs: Some(self.failure_window_secs),
            open_timeout_secs: Some(self.open_timeout_secs),
            half_open_max_tries: Some(self.half_open_max_tries),
            half_open_timeout_secs: Some(self.half_open_timeout_secs),
            failure_rate_threshold: Some(self.failure_rate_threshold),
            slow_call_secs: Some(self.slow_call_secs),
            slow_call_rate_threshold: Some(self.slow_call_rate_threshold),
            minimum_calls: Some(self.minimum_calls),
            open_backoff_multiplier: Some(self.open_backoff_multiplier),
            max_open_timeout_secs: Some(self.max_open_timeout_secs),
            open_backoff_jitter: Some(self.open_backoff_jitter),
            backoff_reset_secs: Some(self.backoff_reset_secs),
            allow_reduce_only_when_open: Some(self.allow_reduce_only_when_open),
            failure_kinds: self.failure_kinds.clone(),
        }
    }

    /// The core's settings, each value checked.
    fn try_settings(&self) -> Result<Settings, crate::core::SettingsError> {
        let settings = Settings::default().with(&self.as_overrides())?;
        Ok(Settings {
            mode: Mode::from_key(&self.mode).unwrap_or_default(),
            ..settings
        })
    }

    /// The core's settings. Call on validated values.
    fn settings(&self) -> Settings {
        self.try_settings().unwrap_or_default()
    }
}

/// The `[breaker]` settings of the embedded default configuration.
fn embedded_breaker_settings() -> Settings {
    #[derive(Deserialize)]
    struct Embedded {
        breaker: BreakerConfig,
    }
    toml::from_str::<Embedded>(DEFAULT_TOML)
        .map(|e| e.breaker.settings())
        .unwrap_or_default()
}

fn breaker_settings(section: &str, b: &BreakerConfig) -> Result<(), ConfigError> {
    b.try_settings()
        .map_err(|e| invalid(&format!("{section}.{}", e.key), e.rule))?;
    if Mode::from_key(&b.mode).is_none() {
        return Err(invalid(
            &format!("{section}.mode"),
            format!(
                "must be \"enforce\", \"shadow\" or \"disabled\", not {:?}",
                b.mode
            ),
        ));
    }
    Ok(())
}

fn at_least(key: &str, value: usize, min: usize) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(key, format!("must be >= {min}")));
    }
    Ok(())
}

pub(crate) fn seconds(key: &str, value: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_SECS) {
        return Err(invalid(
            key,
            format!("must be a number of seconds > 0 and <= {MAX_SECS} (a year), not {value}"),
        ));
    }
    Ok(())
}

pub(crate) fn invalid(key: &str, rule: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        rule,
    }
}

#[cfg(test)]
mod tests;
