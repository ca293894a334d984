//! What configuration decides for the registry, swapped as a whole when the configuration is
//! reloaded: the settings of every account and the membership of groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::core::{FailureKind, Overrides, Settings, SettingsError, SETTING_KEYS};

/// An account id, or a prefix of one ending in `*` (`desk-a:*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccountPattern {
    Exact(String),
    Prefix(String),
}

impl AccountPattern {
    /// Parses a pattern: an account id, or an account-id prefix followed by `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (body, prefix) = match text.strip_suffix('*') {
            Some(body) => (body, true),
            None => (text, false),
        };
        if body.contains('*') {
            return Err(format!("{text:?}: `*` may only end a pattern"));
        }
        if !prefix && body.is_empty() {
            return Err("an empty pattern matches nothing".into());
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err(format!(
                "{text:?}: a pattern is an account id ([A-Za-z0-9._:-]) optionally ending in `*`"
            ));
        }
        Ok(if prefix {
            AccountPattern::Prefix(body.to_owned())
        } else {
            AccountPattern::Exact(body.to_owned())
        })
    }

    pub fn matches(&self, account_id: &str) -> bool {
        match self {
            AccountPattern::Exact(id) => id == account_id,
            AccountPattern::Prefix(prefix) => account_id.starts_with(prefix.as_str()),
        }
    }
}

/// Where the value of one of an account's settings comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingSource {
    /// The built-in default.
    Default,
    /// The configuration file (`[breaker]` or the account's `[accounts]` table).
    File,
    /// An operator (`SetAccountSettings`), until cleared.
    Operator,
}

impl SettingSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SettingSource::Default => "default",
            SettingSource::File => "file",
            SettingSource::Operator => "operator",
        }
    }
}

/// The configuration in force, as the registry uses it.
#[derive(Clone, Debug)]
pub struct Rulebook {
    pub defaults: Arc<Settings>,
    /// Per-account settings that replace the defaults for that account.
    pub overrides: HashMap<String, Arc<Settings>>,
    /// The settings of the embedded default configuration: a value that differs from its own
    /// here was given by the file.
    pub builtin: Arc<Settings>,
    /// Group name to the accounts it holds.
    pub groups: BTreeMap<String, Vec<AccountPattern>>,
    /// Identifies the configuration; recorded in every event.
    pub version: Arc<str>,
    /// The whole configuration in force, as TOML, for operators to read.
    pub text: Arc<str>,
}

impl Default for Rulebook {
    fn default() -> Self {
        Rulebook {
            defaults: Arc::new(Settings::default()),
            overrides: HashMap::new(),
            builtin: Arc::new(Settings::default()),
            groups: BTreeMap::new(),
            version: Arc::from("default"),
            text: Arc::from(""),
        }
    }
}

impl Rulebook {
    pub fn settings_for(&self, account_id: &str) -> Arc<Settings> {
        self.overrides
            .get(account_id)
            .unwrap_or(&self.defaults)
            .clone()
    }

    /// The settings in force for `account_id` with an operator's settings laid over the
    /// file's; refused (with the key at fault) when the two do not make valid settings.
    pub fn resolve(
        &self,
        account_id: &str,
        operator: Option<&Overrides>,
    ) -> Result<Arc<Settings>, SettingsError> {
        let file = self.settings_for(account_id);
        match operator {
            Some(o) if !o.is_empty() => Ok(Arc::new(file.with(o)?)),
            _ => Ok(file),
        }
    }

    /// Where each setting of `account_id` comes from, every key (and `failure_kinds.KIND`)
    /// in order.
    pub fn sources(
        &self,
        account_id: &str,
        operator: Option<&Overrides>,
    ) -> Vec<(String, SettingSource)> {
        let from_file = self.settings_for(account_id).differing_keys(&self.builtin);
        let from_operator: Vec<String> = operator
            .map(|o| o.given().map(|(key, _)| key).collect())
            .unwrap_or_default();
        SETTING_KEYS
            .iter()
            .map(|key| (*key).to_owned())
            .chain(
                FailureKind::ALL
                    .iter()
                    .map(|k| format!("failure_kinds.{}", k.key())),
            )
            .map(|key| {
                let source = if from_operator.contains(&key) {
                    SettingSource::Operator
                } else if from_file.contains(&key) {
                    SettingSource::File
                } else {
                    SettingSource::Default
                };
                (key, source)
            })
            .collect()
    }

    /// The groups `account_id` belongs to, by name.
    pub fn groups_of<'a>(&'a self, account_id: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.groups
            .iter()
            .filter(move |(_, patterns)| patterns.iter().any(|p| p.matches(account_id)))
            .map(|(name, _)| name.as_str())
    }

    pub fn has_group(&self, name: &str) -> bool {
        self.groups.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_ids_and_prefixes() {
        let exact = AccountPattern::parse("desk-a:1").unwrap();
        let prefix = AccountPattern::parse("desk-a:*").unwrap();
        assert!(exact.matches("desk-a:1") && !exact.matches("desk-a:10"));
        assert!(prefix.matches("desk-a:10") && !prefix.matches("desk-b:1"));
        assert!(AccountPattern::parse("*").unwrap().matches("anything"));
        for bad in ["", "a*b", "a b*", "dé*"] {
            assert!(AccountPattern::parse(bad).is_err(), "{bad}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn a_pattern_parses_or_is_refused_and_matches_its_own_prefix(text in "\\PC{0,40}") {
            if let Ok(pattern) = AccountPattern::parse(&text) {
                let body = text.trim_end_matches('*');
                prop_assert!(pattern.matches(body) || body.is_empty());
                prop_assert_eq!(pattern.matches(&format!("{body}x")), text.ends_with('*'));
            }
        }
    }
}
