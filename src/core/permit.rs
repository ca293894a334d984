//! Permits: the opaque token a bot gets from an allowed check and hands back with the outcome.
//!
//! A permit names the breaker generation that issued it and its number within that generation,
//! and carries a tag of the account it was issued for, so that a permit reported against
//! another account is refused rather than silently counted there.
//!
//! The text form is a version prefix and the fields in URL-safe base64 (no padding):
//! `p2` + base64(tag as 8 big-endian bytes, generation and sequence as LEB128 varints), 18
//! characters for the permits of a young breaker and at most 40. It is most of an allowed
//! check's answer, so its length is paid on every order. Permits of the first form, `p1` and
//! the three fields as 16 lowercase hex digits each (50 characters), are still accepted: a bot
//! may report one issued before an upgrade.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use thiserror::Error;

const PREFIX: &str = "p2";
/// The fields' bytes: the tag and two varints of at most ten bytes each.
const MAX_RAW: usize = 8 + 2 * 10;
/// Base64 of `MAX_RAW` bytes, without padding.
const MAX_BODY: usize = (MAX_RAW * 4).div_ceil(3);
const V1_PREFIX: &str = "p1";
const V1_LEN: usize = V1_PREFIX.len() + 3 * 16;

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
    #[error("permit is not one that CheckTrade returned (it must be the permit_id text as it was given)")]
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
    let mut raw = [0u8; MAX_RAW];
    raw[..8].copy_from_slice(&account_tag.to_be_bytes());
    let mut len = 8;
    for value in [permit.generation, permit.sequence] {
        len += put_varint(value, &mut raw[len..]);
    }
    // Into a buffer on the stack, then one allocation of the exact length.
    let mut text = [0u8; PREFIX.len() + MAX_BODY];
    text[..PREFIX.len()].copy_from_slice(PREFIX.as_bytes());
    // The buffer has room for the longest body, so this cannot fail.
    let written = URL_SAFE_NO_PAD
        .encode_slice(&raw[..len], &mut text[PREFIX.len()..])
        .unwrap_or(0);
    // Only ASCII was written.
    std::str::from_utf8(&text[..PREFIX.len() + written])
        .map(str::to_owned)
        .unwrap_or_default()
}

/// Writes `value` as a LEB128 varint at the start of `out` (which has room for ten bytes);
/// returns how many bytes it took.
fn put_varint(mut value: u64, out: &mut [u8]) -> usize {
    let mut len = 0;
    while value >= 0x80 {
        out[len] = (value as u8) | 0x80;
        value >>= 7;
        len += 1;
    }
    out[len] = value as u8;
    len + 1
}

/// Reads a LEB128 varint from the start of `bytes`: the value and the bytes it took. `None` if
/// it is cut short or does not fit in 64 bits.
fn take_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (index, byte) in bytes.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if index == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}

/// Parses a permit and checks that it was issued for the account with tag `account_tag`.
pub fn decode(account_tag: u64, text: &str) -> Result<Permit, PermitError> {
    let (tag, permit) = match text.strip_prefix(PREFIX) {
        Some(body) => decode_body(body)?,
        None => decode_v1(text)?,
    };
    if tag != account_tag {
        return Err(PermitError::OtherAccount);
    }
    Ok(permit)
}

fn decode_body(body: &str) -> Result<(u64, Permit), PermitError> {
    if body.len() > MAX_BODY {
        return Err(PermitError::Malformed);
    }
    let mut raw = [0u8; MAX_RAW];
    let len = URL_SAFE_NO_PAD
        .decode_slice(body, &mut raw)
        .map_err(|_| PermitError::Malformed)?;
    let raw = &raw[..len];
    let tag = raw
        .first_chunk::<8>()
        .map(|bytes| u64::from_be_bytes(*bytes))
        .ok_or(PermitError::Malformed)?;
    let (generation, taken) = take_varint(&raw[8..]).ok_or(PermitError::Malformed)?;
    let (sequence, rest) = take_varint(&raw[8 + taken..]).ok_or(PermitError::Malformed)?;
    if 8 + taken + rest != raw.len() {
        return Err(PermitError::Malformed);
    }
    Ok((
        tag,
        Permit {
            generation,
            sequence,
        },
    ))
}

/// The first form: `p1` and three fields of 16 lowercase hex digits.
fn decode_v1(text: &str) -> Result<(u64, Permit), PermitError> {
    if text.len() != V1_LEN || !text.starts_with(V1_PREFIX) {
        return Err(PermitError::Malformed);
    }
    let body = &text[V1_PREFIX.len()..];
    let field = |index: usize| -> Result<u64, PermitError> {
        let digits = body
            .get(index * 16..(index + 1) * 16)
            .ok_or(PermitError::Malformed)?;
        if !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(PermitError::Malformed);
        }
        u64::from_str_radix(digits, 16).map_err(|_| PermitError::Malformed)
    };
    Ok((
        field(0)?,
        Permit {
            generation: field(1)?,
            sequence: field(2)?,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A permit in the first form, as releases before `p2` wrote it.
    fn v1(tag: u64, permit: Permit) -> String {
        format!(
            "p1{tag:016x}{:016x}{:016x}",
            permit.generation, permit.sequence
        )
    }

    #[test]
    fn round_trips() {
        let tag = account_tag("ACC-1");
        let permit = Permit {
            generation: 7,
            sequence: u64::MAX,
        };
        let text = encode(tag, permit);
        assert_eq!(text.len(), 28, "{text}");
        assert_eq!(decode(tag, &text), Ok(permit));
    }

    #[test]
    fn a_young_breakers_permits_are_18_characters_and_none_is_longer_than_40() {
        let tag = account_tag("ACC-1");
        let young = encode(
            tag,
            Permit {
                generation: 3,
                sequence: 1_000_000,
            },
        );
        assert_eq!(young.len(), 18, "{young}");
        let longest = encode(
            tag,
            Permit {
                generation: u64::MAX,
                sequence: u64::MAX,
            },
        );
        assert_eq!(longest.len(), PREFIX.len() + MAX_BODY);
        assert_eq!(longest.len(), 40);
    }

    #[test]
    fn permits_of_the_first_form_are_still_accepted() {
        let tag = account_tag("ACC-1");
        let permit = Permit {
            generation: 12,
            sequence: 345,
        };
        assert_eq!(decode(tag, &v1(tag, permit)), Ok(permit));
        assert_eq!(
            decode(account_tag("ACC-2"), &v1(tag, permit)),
            Err(PermitError::OtherAccount)
        );
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
        let permit = Permit {
            generation: 1,
            sequence: 2,
        };
        let good = encode(tag, permit);
        let old = v1(tag, permit);
        // Valid base64 whose bytes are not a permit: too short, a varint cut short, a
        // trailing byte, a varint past 64 bits.
        let raw = |bytes: &[u8]| format!("p2{}", URL_SAFE_NO_PAD.encode(bytes));
        let mut cut = tag.to_be_bytes().to_vec();
        cut.extend_from_slice(&[1, 0x80]);
        let mut trailing = tag.to_be_bytes().to_vec();
        trailing.extend_from_slice(&[1, 2, 3]);
        let mut overflow = tag.to_be_bytes().to_vec();
        overflow.extend_from_slice(&[
            1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
        ]);
        for bad in [
            String::new(),
            "p1".to_string(),
            "p2".to_string(),
            good.to_uppercase(),
            format!("x{}", &good[1..]),
            format!("{good}A"),
            format!("{good}="),
            format!("{}*", &good[..good.len() - 1]),
            format!("{}é", &good[..good.len() - 2]),
            format!("p2{}", "A".repeat(MAX_BODY + 1)),
            raw(&tag.to_be_bytes()[..7]),
            raw(&cut),
            raw(&trailing),
            raw(&overflow),
            old.to_uppercase(),
            format!("{old}0"),
            old.replace('0', "g"),
            format!("{}é", &old[..old.len() - 2]),
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
        fn decoding_arbitrary_base64_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode(account_tag("a"), &format!("p2{}", URL_SAFE_NO_PAD.encode(bytes)));
        }

        #[test]
        fn every_permit_round_trips(account in "[A-Za-z0-9._:-]{1,128}", generation: u64, sequence: u64) {
            let permit = Permit { generation, sequence };
            let text = encode(account_tag(&account), permit);
            prop_assert!(text.len() <= 40);
            prop_assert_eq!(decode(account_tag(&account), &text), Ok(permit));
            prop_assert_eq!(decode(account_tag(&account), &v1(account_tag(&account), permit)), Ok(permit));
        }
    }
}
