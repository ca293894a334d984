//! Configuration: the embedded default, then an optional TOML file, then `RISKGATE__...`
//! environment variables, checked as a whole before anything starts.
//!
//! Owns the mapping from user-facing keys to the service's typed options; every rule a key must
//! follow is checked here, and a violation names the key and the rule.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::core::Settings;
use crate::registry::{validate_account_id, RegistryOptions};

/// The embedded default configuration; documents every key.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The longest duration any setting accepts: a year.
const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("configuration could not be read: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {key} {rule}")]
    Invalid { key: String, rule: String },
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub breaker: BreakerConfig,
    pub store: StoreConfig,
    pub events: EventsConfig,
    pub log: LogConfig,
    #[serde(default)]
    pub accounts: HashMap<String, BreakerOverride>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub max_accounts: usize,
    pub shutdown_grace_secs: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    pub failure_threshold: u32,
    pub failure_window_secs: f64,
    pub open_timeout_secs: f64,
    pub half_open_max_tries: u32,
    pub half_open_timeout_secs: f64,
}

/// Any `[breaker]` key, for one account.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerOverride {
    pub failure_threshold: Option<u32>,
    pub failure_window_secs: Option<f64>,
    pub open_timeout_secs: Option<f64>,
    pub half_open_max_tries: Option<u32>,
    pub half_open_timeout_secs: Option<f64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Memory,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    pub path: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub retained: usize,
    pub retained_secs: f64,
    pub subscriber_buffer: usize,
    pub heartbeat_secs: f64,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// The embedded default, then `file`, then the process environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, None)
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
        at_least("events.subscriber_buffer", self.events.subscriber_buffer, 1)?;
        seconds("events.retained_secs", self.events.retained_secs)?;
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

    pub fn retained_age(&self) -> Duration {
        Duration::from_secs_f64(self.events.retained_secs)
    }

    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.events.heartbeat_secs)
    }

    /// The registry's options. Call on a validated config.
    pub fn registry_options(&self) -> RegistryOptions {
        RegistryOptions {
            defaults: self.breaker.settings(),
            overrides: self
                .accounts
                .iter()
                .map(|(account, o)| (account.clone(), self.breaker.with(o).settings()))
                .collect(),
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
        }
    }

    /// The core's settings. Call on validated values.
    fn settings(&self) -> Settings {
        Settings {
            failure_threshold: self.failure_threshold,
            failure_window: Duration::from_secs_f64(self.failure_window_secs),
            open_timeout: Duration::from_secs_f64(self.open_timeout_secs),
            half_open_max_tries: self.half_open_max_tries,
            half_open_timeout: Duration::from_secs_f64(self.half_open_timeout_secs),
        }
    }
}

fn breaker_settings(section: &str, b: &BreakerConfig) -> Result<(), ConfigError> {
    at_least(
        &format!("{section}.failure_threshold"),
        b.failure_threshold as usize,
        1,
    )?;
    at_least(
        &format!("{section}.half_open_max_tries"),
        b.half_open_max_tries as usize,
        1,
    )?;
    if b.half_open_max_tries > 1_000 {
        return Err(invalid(
            &format!("{section}.half_open_max_tries"),
            "must be <= 1000".into(),
        ));
    }
    seconds(
        &format!("{section}.failure_window_secs"),
        b.failure_window_secs,
    )?;
    seconds(&format!("{section}.open_timeout_secs"), b.open_timeout_secs)?;
    seconds(
        &format!("{section}.half_open_timeout_secs"),
        b.half_open_timeout_secs,
    )?;
    Ok(())
}

fn at_least(key: &str, value: usize, min: usize) -> Result<(), ConfigError> {
    if value < min {
        return Err(invalid(key, format!("must be >= {min}")));
    }
    Ok(())
}

fn seconds(key: &str, value: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_SECS) {
        return Err(invalid(
            key,
            format!("must be a number of seconds > 0 and <= {MAX_SECS} (a year), not {value}"),
        ));
    }
    Ok(())
}

fn invalid(key: &str, rule: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        rule,
    }
}

#[cfg(test)]
mod tests;
