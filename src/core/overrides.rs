//! Breaker settings given by name, as the configuration file's `[breaker]` and `[accounts]`
//! tables and operators (`SetAccountSettings`) give them: each value given replaces the one of
//! the settings it is laid over, and the result is checked as a whole before it is used.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::inputs::{FailureKind, KindAction};
use super::settings::Settings;

/// The longest duration a setting may have: a year.
pub const MAX_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// The most probe permits a breaker may hand out at once.
const MAX_PROBES: u32 = 1_000;

/// Settings by their configuration key; `None` (or a kind not named): not given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_window_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_timeout_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_max_tries: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_timeout_secs: Option<f64>,
    /// 0 turns the rule off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate_threshold: Option<f64>,
    /// 0 turns the rule off (with `slow_call_rate_threshold` 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_call_rate_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_calls: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_backoff_multiplier: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_open_timeout_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_backoff_jitter: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backoff_reset_secs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_reduce_only_when_open: Option<bool>,
    /// Kind name to action name ("count", "ignore", "trip").
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub failure_kinds: BTreeMap<String, String>,
}

/// A setting that cannot be used: `key` (a configuration key) and the rule it breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingsError {
    pub key: String,
    pub rule: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key, self.rule)
    }
}

impl std::error::Error for SettingsError {}

fn refuse(key: &str, rule: String) -> SettingsError {
    SettingsError {
        key: key.to_owned(),
        rule,
    }
}

/// Every key but the failure kinds (`failure_kinds.KIND`), in the order settings are shown.
pub const SETTING_KEYS: [&str; 14] = [
    "failure_threshold",
    "failure_window_secs",
    "open_timeout_secs",
    "half_open_max_tries",
    "half_open_timeout_secs",
    "failure_rate_threshold",
    "slow_call_secs",
    "slow_call_rate_threshold",
    "minimum_calls",
    "open_backoff_multiplier",
    "max_open_timeout_secs",
    "open_backoff_jitter",
    "backoff_reset_secs",
    "allow_reduce_only_when_open",
];

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.given().next().is_none()
    }

    /// The keys given, `failure_kinds.KIND` for each kind, with their values as text.
    pub fn given(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let values: [(&str, Option<String>); 14] = [
            (
                "failure_threshold",
                self.failure_threshold.map(|v| v.to_string()),
            ),
            (
                "failure_window_secs",
                self.failure_window_secs.map(|v| v.to_string()),
            ),
            (
                "open_timeout_secs",
                self.open_timeout_secs.map(|v| v.to_string()),
            ),
            (
                "half_open_max_tries",
                self.half_open_max_tries.map(|v| v.to_string()),
            ),
            (
                "half_open_timeout_secs",
                self.half_open_timeout_secs.map(|v| v.to_string()),
            ),
            (
                "failure_rate_threshold",
                self.failure_rate_threshold.map(|v| v.to_string()),
            ),
            ("slow_call_secs", self.slow_call_secs.map(|v| v.to_string())),
            (
                "slow_call_rate_threshold",
                self.slow_call_rate_threshold.map(|v| v.to_string()),
            ),
            ("minimum_calls", self.minimum_calls.map(|v| v.to_string())),
            (
                "open_backoff_multiplier",
                self.open_backoff_multiplier.map(|v| v.to_string()),
            ),
            (
                "max_open_timeout_secs",
                self.max_open_timeout_secs.map(|v| v.to_string()),
            ),
            (
                "open_backoff_jitter",
                self.open_backoff_jitter.map(|v| v.to_string()),
            ),
            (
                "backoff_reset_secs",
                self.backoff_reset_secs.map(|v| v.to_string()),
            ),
            (
                "allow_reduce_only_when_open",
                self.allow_reduce_only_when_open.map(|v| v.to_string()),
            ),
        ];
        values
            .into_iter()
            .filter_map(|(key, value)| value.map(|v| (key.to_owned(), v)))
            .chain(
                self.failure_kinds
                    .iter()
                    .map(|(kind, action)| (format!("failure_kinds.{kind}"), action.clone())),
            )
    }

    /// `key=value, ...`: what is given, for the audit trail and logs.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.given().map(|(k, v)| format!("{k}={v}")).collect();
        parts.join(", ")
    }

    /// Lays `other` over these: each value it gives replaces this one's.
    pub fn merge(&mut self, other: &Overrides) {
        macro_rules! take {
            ($($field:ident),*) => { $( if other.$field.is_some() { self.$field = other.$field; } )* };
        }
        take!(
            failure_threshold,
            failure_window_secs,
            open_timeout_secs,
            half_open_max_tries,
            half_open_timeout_secs,
            failure_rate_threshold,
            slow_call_secs,
            slow_call_rate_threshold,
            minimum_calls,
            open_backoff_multiplier,
            max_open_timeout_secs,
            open_backoff_jitter,
            backoff_reset_secs,
            allow_reduce_only_when_open
        );
        self.failure_kinds.extend(
            other
                .failure_kinds
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
    }

    /// Gives `key` (a setting key, or `failure_kinds.KIND`) the value written as `text`, as
    /// in the configuration file (`3`, `0.5`, `true`, `ignore`); the value's own rules are
    /// checked when the settings are laid over others.
    pub fn set_text(&mut self, key: &str, text: &str) -> Result<(), SettingsError> {
        let text = text.trim();
        let whole = |key: &str| {
            text.parse::<u32>()
                .map_err(|_| refuse(key, format!("must be a whole number, not {text:?}")))
        };
        let number = |key: &str| {
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| refuse(key, format!("must be a number, not {text:?}")))
        };
        match key {
            "failure_threshold" => self.failure_threshold = Some(whole(key)?),
            "half_open_max_tries" => self.half_open_max_tries = Some(whole(key)?),
            "minimum_calls" => self.minimum_calls = Some(whole(key)?),
            "failure_window_secs" => self.failure_window_secs = Some(number(key)?),
            "open_timeout_secs" => self.open_timeout_secs = Some(number(key)?),
            "half_open_timeout_secs" => self.half_open_timeout_secs = Some(number(key)?),
            "failure_rate_threshold" => self.failure_rate_threshold = Some(number(key)?),
            "slow_call_secs" => self.slow_call_secs = Some(number(key)?),
            "slow_call_rate_threshold" => self.slow_call_rate_threshold = Some(number(key)?),
            "open_backoff_multiplier" => self.open_backoff_multiplier = Some(number(key)?),
            "max_open_timeout_secs" => self.max_open_timeout_secs = Some(number(key)?),
            "open_backoff_jitter" => self.open_backoff_jitter = Some(number(key)?),
            "backoff_reset_secs" => self.backoff_reset_secs = Some(number(key)?),
            "allow_reduce_only_when_open" => {
                self.allow_reduce_only_when_open = Some(
                    text.parse()
                        .map_err(|_| refuse(key, format!("must be true or false, not {text:?}")))?,
                )
            }
            _ => {
                let mut probe = Overrides::default();
                // The same keys as `clear` accepts, with the same answer for an unknown one.
                probe.clear(key)?;
                match key.strip_prefix("failure_kinds.") {
                    Some(kind) => {
                        self.failure_kinds.insert(kind.to_owned(), text.to_owned());
                    }
                    None => {
                        return Err(refuse(
                            key,
                            "takes one kind at a time: failure_kinds.KIND=ACTION".into(),
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// Forgets `key` (a setting key; `failure_kinds` for every kind, `failure_kinds.KIND` for
    /// one), so the value beneath applies again. An unknown key is refused.
    pub fn clear(&mut self, key: &str) -> Result<(), SettingsError> {
        match key {
            "failure_threshold" => self.failure_threshold = None,
            "failure_window_secs" => self.failure_window_secs = None,
            "open_timeout_secs" => self.open_timeout_secs = None,
            "half_open_max_tries" => self.half_open_max_tries = None,
            "half_open_timeout_secs" => self.half_open_timeout_secs = None,
            "failure_rate_threshold" => self.failure_rate_threshold = None,
            "slow_call_secs" => self.slow_call_secs = None,
            "slow_call_rate_threshold" => self.slow_call_rate_threshold = None,
            "minimum_calls" => self.minimum_calls = None,
            "open_backoff_multiplier" => self.open_backoff_multiplier = None,
            "max_open_timeout_secs" => self.max_open_timeout_secs = None,
            "open_backoff_jitter" => self.open_backoff_jitter = None,
            "backoff_reset_secs" => self.backoff_reset_secs = None,
            "allow_reduce_only_when_open" => self.allow_reduce_only_when_open = None,
            "failure_kinds" => self.failure_kinds.clear(),
            _ => match key.strip_prefix("failure_kinds.") {
                Some(kind) if FailureKind::from_key(kind).is_some() => {
                    self.failure_kinds.remove(kind);
                }
                Some(kind) => return Err(not_a_kind(key, kind)),
                None => {
                    return Err(refuse(
                        key,
                        format!(
                            "is not a breaker setting; the settings are {}, failure_kinds and failure_kinds.KIND",
                            SETTING_KEYS.join(", ")
                        ),
                    ))
                }
            },
        }
        Ok(())
    }
}

fn not_a_kind(key: &str, kind: &str) -> SettingsError {
    let known: Vec<_> = FailureKind::ALL.iter().map(|k| k.key()).collect();
    refuse(
        key,
        format!(
            "is not a failure kind ({kind:?}); the kinds are {}",
            known.join(", ")
        ),
    )
}

fn seconds(key: &str, value: f64) -> Result<Duration, SettingsError> {
    if !(value.is_finite() && value > 0.0 && value <= MAX_SECS) {
        return Err(refuse(
            key,
            format!("must be a number of seconds > 0 and <= {MAX_SECS} (a year), not {value}"),
        ));
    }
    Ok(Duration::from_secs_f64(value))
}

fn fraction(key: &str, value: f64, zero: &str) -> Result<f64, SettingsError> {
    if !(0.0..=1.0).contains(&value) {
        return Err(refuse(
            key,
            format!("must be a fraction from 0{zero} to 1, not {value}"),
        ));
    }
    Ok(value)
}

fn at_least_one(key: &str, value: u32) -> Result<u32, SettingsError> {
    if value < 1 {
        return Err(refuse(key, "must be >= 1".into()));
    }
    Ok(value)
}

impl Settings {
    /// These settings with `overrides` laid over them, each value checked and the result
    /// checked as a whole; an error names the first key at fault.
    pub fn with(&self, o: &Overrides) -> Result<Settings, SettingsError> {
        let mut s = self.clone();
        if let Some(v) = o.failure_threshold {
            s.failure_threshold = at_least_one("failure_threshold", v)?;
        }
        if let Some(v) = o.failure_window_secs {
            s.failure_window = seconds("failure_window_secs", v)?;
        }
        if let Some(v) = o.open_timeout_secs {
            s.open_timeout = seconds("open_timeout_secs", v)?;
        }
        if let Some(v) = o.half_open_max_tries {
            s.half_open_max_tries = at_least_one("half_open_max_tries", v)?;
            if v > MAX_PROBES {
                return Err(refuse(
                    "half_open_max_tries",
                    format!("must be <= {MAX_PROBES}"),
                ));
            }
        }
        if let Some(v) = o.half_open_timeout_secs {
            s.half_open_timeout = seconds("half_open_timeout_secs", v)?;
        }
        if let Some(v) = o.failure_rate_threshold {
            s.failure_rate_threshold =
                Some(fraction("failure_rate_threshold", v, " (off)")?).filter(|v| *v > 0.0);
        }
        if let Some(v) = o.slow_call_secs {
            s.slow_call = if v == 0.0 {
                None
            } else {
                Some(seconds("slow_call_secs", v)?)
            };
        }
        if let Some(v) = o.slow_call_rate_threshold {
            s.slow_call_rate_threshold =
                Some(fraction("slow_call_rate_threshold", v, " (off)")?).filter(|v| *v > 0.0);
        }
        if let Some(v) = o.minimum_calls {
            s.minimum_calls = at_least_one("minimum_calls", v)?;
        }
        if let Some(v) = o.open_backoff_multiplier {
            if !(v.is_finite() && (1.0..=100.0).contains(&v)) {
                return Err(refuse(
                    "open_backoff_multiplier",
                    format!("must be from 1 (no backoff) to 100, not {v}"),
                ));
            }
            s.open_backoff_multiplier = v;
        }
        if let Some(v) = o.max_open_timeout_secs {
            s.max_open_timeout = seconds("max_open_timeout_secs", v)?;
        }
        if let Some(v) = o.open_backoff_jitter {
            s.open_backoff_jitter = fraction("open_backoff_jitter", v, "")?;
        }
        if let Some(v) = o.backoff_reset_secs {
            s.backoff_reset = seconds("backoff_reset_secs", v)?;
        }
        if let Some(v) = o.allow_reduce_only_when_open {
            s.allow_reduce_only_when_open = v;
        }
        for (kind_name, action_name) in &o.failure_kinds {
            let key = format!("failure_kinds.{kind_name}");
            let kind =
                FailureKind::from_key(kind_name).ok_or_else(|| not_a_kind(&key, kind_name))?;
            let action = KindAction::from_key(action_name).ok_or_else(|| {
                refuse(
                    &key,
                    format!("must be \"count\", \"ignore\" or \"trip\", not {action_name:?}"),
                )
            })?;
            s.failure_kinds.set(kind, action);
        }
        if s.max_open_timeout < s.open_timeout {
            return Err(refuse(
                "max_open_timeout_secs",
                format!(
                    "must be >= open_timeout_secs ({})",
                    s.open_timeout.as_secs_f64()
                ),
            ));
        }
        if s.slow_call.is_some() != s.slow_call_rate_threshold.is_some() {
            return Err(refuse(
                "slow_call_secs",
                "and slow_call_rate_threshold are set together (both 0 turns the rule off)".into(),
            ));
        }
        Ok(s)
    }

    /// The keys (as [`SETTING_KEYS`], and `failure_kinds.KIND`) whose values differ from
    /// `other`'s.
    pub fn differing_keys(&self, other: &Settings) -> Vec<String> {
        let differs = [
            self.failure_threshold != other.failure_threshold,
            self.failure_window != other.failure_window,
            self.open_timeout != other.open_timeout,
            self.half_open_max_tries != other.half_open_max_tries,
            self.half_open_timeout != other.half_open_timeout,
            self.failure_rate_threshold != other.failure_rate_threshold,
            self.slow_call != other.slow_call,
            self.slow_call_rate_threshold != other.slow_call_rate_threshold,
            self.minimum_calls != other.minimum_calls,
            self.open_backoff_multiplier != other.open_backoff_multiplier,
            self.max_open_timeout != other.max_open_timeout,
            self.open_backoff_jitter != other.open_backoff_jitter,
            self.backoff_reset != other.backoff_reset,
            self.allow_reduce_only_when_open != other.allow_reduce_only_when_open,
        ];
        SETTING_KEYS
            .iter()
            .zip(differs)
            .filter(|(_, differs)| *differs)
            .map(|(key, _)| (*key).to_owned())
            .chain(
                FailureKind::ALL
                    .iter()
                    .filter(|k| self.failure_kinds.get(**k) != other.failure_kinds.get(**k))
                    .map(|k| format!("failure_kinds.{}", k.key())),
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_given_replace_the_settings_beneath_and_are_checked_together() {
        let base = Settings::default();
        let o = Overrides {
            failure_threshold: Some(2),
            open_timeout_secs: Some(10.0),
            failure_kinds: [("order_rejected".to_owned(), "ignore".to_owned())].into(),
            ..Overrides::default()
        };
        let s = base.with(&o).unwrap();
        assert_eq!(s.failure_threshold, 2);
        assert_eq!(s.open_timeout, Duration::from_secs(10));
        assert_eq!(
            s.failure_kinds.get(FailureKind::OrderRejected),
            KindAction::Ignore
        );
        assert_eq!(
            s.differing_keys(&base),
            [
                "failure_threshold",
                "open_timeout_secs",
                "failure_kinds.order_rejected"
            ]
        );
        assert_eq!(
            o.describe(),
            "failure_threshold=2, open_timeout_secs=10, failure_kinds.order_rejected=ignore"
        );

        for (bad, key) in [
            (
                Overrides {
                    failure_threshold: Some(0),
                    ..Overrides::default()
                },
                "failure_threshold",
            ),
            (
                Overrides {
                    open_timeout_secs: Some(f64::NAN),
                    ..Overrides::default()
                },
                "open_timeout_secs",
            ),
            (
                Overrides {
                    open_timeout_secs: Some(-1.0),
                    ..Overrides::default()
                },
                "open_timeout_secs",
            ),
            (
                Overrides {
                    max_open_timeout_secs: Some(1.0),
                    ..Overrides::default()
                },
                "max_open_timeout_secs",
            ),
            (
                Overrides {
                    slow_call_secs: Some(1.0),
                    ..Overrides::default()
                },
                "slow_call_secs",
            ),
            (
                Overrides {
                    failure_rate_threshold: Some(1.5),
                    ..Overrides::default()
                },
                "failure_rate_threshold",
            ),
            (
                Overrides {
                    half_open_max_tries: Some(1_001),
                    ..Overrides::default()
                },
                "half_open_max_tries",
            ),
            (
                Overrides {
                    failure_kinds: [("nope".to_owned(), "count".to_owned())].into(),
                    ..Overrides::default()
                },
                "failure_kinds.nope",
            ),
            (
                Overrides {
                    failure_kinds: [("order_rejected".to_owned(), "maybe".to_owned())].into(),
                    ..Overrides::default()
                },
                "failure_kinds.order_rejected",
            ),
        ] {
            assert_eq!(base.with(&bad).unwrap_err().key, key, "{bad:?}");
        }
    }

    #[test]
    fn merged_and_cleared_by_key() {
        let mut o = Overrides {
            failure_threshold: Some(2),
            ..Overrides::default()
        };
        o.merge(&Overrides {
            minimum_calls: Some(5),
            failure_kinds: [("order_rejected".to_owned(), "trip".to_owned())].into(),
            ..Overrides::default()
        });
        assert_eq!(o.given().count(), 3);
        o.clear("failure_kinds.order_rejected").unwrap();
        o.clear("failure_threshold").unwrap();
        assert_eq!(o.describe(), "minimum_calls=5");
        assert!(o.clear("failure_treshold").is_err());
        assert!(o.clear("failure_kinds.nope").is_err());
        o.clear("minimum_calls").unwrap();
        assert!(o.is_empty());
        o.set_text("failure_threshold", "3").unwrap();
        o.set_text("open_timeout_secs", "2.5").unwrap();
        o.set_text("allow_reduce_only_when_open", "true").unwrap();
        o.set_text("failure_kinds.order_rejected", "ignore")
            .unwrap();
        assert_eq!(
            o.describe(),
            "failure_threshold=3, open_timeout_secs=2.5, allow_reduce_only_when_open=true, failure_kinds.order_rejected=ignore"
        );
        for (key, text) in [
            ("failure_threshold", "-1"),
            ("open_timeout_secs", "soon"),
            ("open_timeout_secs", "inf"),
            ("allow_reduce_only_when_open", "yes"),
            ("failure_kinds", "ignore"),
            ("failure_kinds.nope", "ignore"),
            ("mode", "shadow"),
        ] {
            assert!(o.set_text(key, text).is_err(), "{key}={text}");
        }
        for key in SETTING_KEYS {
            o.clear(key).unwrap();
        }
        o.clear("failure_kinds").unwrap();
        let json = serde_json::to_string(&o).unwrap();
        assert_eq!(json, "{}");
    }
}
