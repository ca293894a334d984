//! What configuration decides for the registry, swapped as a whole when the configuration is
//! reloaded: the settings of every account and the membership of groups.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::core::Settings;

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

/// The configuration in force, as the registry uses it.
#[derive(Clone, Debug)]
pub struct Rulebook {
    pub defaults: Arc<Settings>,
    /// Per-account settings that replace the defaults for that account.
    pub overrides: HashMap<String, Arc<Settings>>,
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
