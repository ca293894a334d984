//! The account id rule: 1-128 bytes of `[A-Za-z0-9._:-]`.
//!
//! Checked before anything else touches an id, so that no breaker, event or log line ever holds
//! an id outside the rule.

use crate::error::Error;

pub const MAX_ACCOUNT_ID_LEN: usize = 128;

/// Checks `account_id` against the rule, naming what is wrong.
pub fn validate_account_id(account_id: &str) -> Result<(), Error> {
    if account_id.is_empty() {
        return Err(Error::InvalidAccountId(
            "is required (1-128 bytes of [A-Za-z0-9._:-])",
        ));
    }
    if account_id.len() > MAX_ACCOUNT_ID_LEN {
        return Err(Error::InvalidAccountId(
            "must be at most 128 bytes of [A-Za-z0-9._:-]",
        ));
    }
    if !account_id.bytes().all(is_allowed) {
        return Err(Error::InvalidAccountId(
            "may contain only the characters [A-Za-z0-9._:-]",
        ));
    }
    Ok(())
}

fn is_allowed(byte: u8) -> bool {
    ALLOWED[usize::from(byte)]
}

/// The rule as a table: one load per byte, on every call of the gate.
const ALLOWED: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        byte += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_the_documented_alphabet_and_length() {
        assert!(validate_account_id("ACC-1").is_ok());
        assert!(validate_account_id("desk.a:strat_7-x").is_ok());
        assert!(validate_account_id(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn refuses_empty_oversized_and_ill_charactered_ids() {
        for bad in ["", " ", "a b", "acc/1", "acc\n", "é", "acc\0"] {
            assert!(validate_account_id(bad).is_err(), "{bad:?}");
        }
        assert!(validate_account_id(&"a".repeat(129)).is_err());
    }

    proptest! {
        #[test]
        fn accepts_exactly_the_rule(id in "\\PC{0,140}") {
            let rule = !id.is_empty()
                && id.len() <= 128
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
            prop_assert_eq!(validate_account_id(&id).is_ok(), rule);
        }
    }
}
