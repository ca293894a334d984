//! Permits: the opaque token a bot gets from an allowed check and hands back with the outcome.
//!
//! A permit names the breaker generation that issued it and its number within that generation,
//! and carries a tag of the account it was issued for, so that a permit reported against
//! another account is refused rather than silently counted there. The text form is fixed-width
//! lowercase hex behind a version prefix: `p1` + tag + generation + sequence (50 bytes).

use thiserror::Error;

const PREFIX: &str = "p1";
const ENCODED_LEN: usize = PREFIX.len() + 3 * 16;

/// The part of a permit the breaker itself checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Permit {
    /// The breaker generation that issued the permit; any transition makes it stale.
    pub generation: u64,
    /// The permit's number within its generation; a probe permit is found by it.
    pub sequence: u64,
}

/// Why a permit string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PermitError {
    #[error("permit must be {ENCODED_LEN} characters starting with `{PREFIX}`, as returned by CheckTrade")]
    Malformed,
    #[error("permit was issued for a different account")]
    OtherAccount,
}

/// The tag of an account id inside its permits: 64-bit FNV-1a, stable across processes and
/// releases (unlike the standard library's randomly keyed hasher), so that permits stay valid
/// across a restart.
pub fn account_tag(account_id: &str) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    account_id.bytes().fold(OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// The text form of `permit`, issued for the account with tag `account_tag`.
pub fn encode(account_tag: u64, permit: Permit) -> String {
    // On every allowed check: hex digits written directly, without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut bytes = [0u8; ENCODED_LEN];
    bytes[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
    for (field, value) in [account_tag, permit.generation, permit.sequence]
        .into_iter()
        .enumerate()
    {
        let start = PREFIX.len() + field * 16;
        for (digit, byte) in bytes[start..start + 16].iter_mut().enumerate() {
            *byte = HEX[((value >> ((15 - digit) * 4)) & 0xf) as usize];
        }
    }
    // Only ASCII was written.
    std::str::from_utf8(&bytes)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Parses a permit and checks that it was issued for the account with tag `account_tag`.
pub fn decode(account_tag: u64, text: &str) -> Result<Permit, PermitError> {
    if text.len() != ENCODED_LEN || !text.starts_with(PREFIX) {
        return Err(PermitError::Malformed);
    }
    let body = &text[PREFIX.len()..];
    let field = |index: usize| -> Result<u64, PermitError> {
        let digits = &body[index * 16..(index + 1) * 16];
        if !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(PermitError::Malformed);
        }
        u64::from_str_radix(digits, 16).map_err(|_| PermitError::Malformed)
    };
    if field(0)? != account_tag {
        return Err(PermitError::OtherAccount);
    }
    Ok(Permit {
        generation: field(1)?,
        sequence: field(2)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trips() {
        let tag = account_tag("ACC-1");
        let permit = Permit {
            generation: 7,
            sequence: u64::MAX,
        };
        let text = encode(tag, permit);
        assert_eq!(text.len(), ENCODED_LEN);
        assert_eq!(decode(tag, &text), Ok(permit));
    }

    #[test]
    fn refuses_a_permit_of_another_account() {
        let text = encode(
            account_tag("ACC-1"),
            Permit {
                generation: 1,
                sequence: 2,
            },
        );
        assert_eq!(
            decode(account_tag("ACC-2"), &text),
            Err(PermitError::OtherAccount)
        );
    }

    #[test]
    fn refuses_malformed_text() {
        let tag = account_tag("ACC-1");
        let good = encode(
            tag,
            Permit {
                generation: 1,
                sequence: 2,
            },
        );
        for bad in [
            String::new(),
            "p1".to_string(),
            good.to_uppercase(),
            format!("x{}", &good[1..]),
            format!("{}0", good),
            good.replace('0', "g"),
            format!("{}é", &good[..good.len() - 2]),
        ] {
            assert_eq!(decode(tag, &bad), Err(PermitError::Malformed), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_text_never_panics(text in ".{0,80}") {
            let _ = decode(account_tag("a"), &text);
        }

        #[test]
        fn every_permit_round_trips(account in "[A-Za-z0-9._:-]{1,128}", generation: u64, sequence: u64) {
            let permit = Permit { generation, sequence };
            prop_assert_eq!(decode(account_tag(&account), &encode(account_tag(&account), permit)), Ok(permit));
        }
    }
}
