//! TOTP second factor (RFC 6238: HMAC-SHA1, 30 s steps, 6 digits — what every authenticator app
//! speaks). Pure: time is a parameter.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

pub const STEP_SECS: i64 = 30;
const DIGITS: u32 = 6;

/// A new 160-bit shared secret (the size RFC 4226 recommends).
pub fn new_secret() -> Vec<u8> {
    let mut secret = vec![0u8; 20];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    secret
}

pub fn secret_base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The `otpauth://` URI an authenticator app scans from a QR code.
pub fn otpauth_uri(secret: &[u8], issuer: &str, account: &str) -> String {
    // Authenticator apps show the label as written: an address keeps its `@`.
    const LABEL: &percent_encoding::AsciiSet = &stayopen_shared::url::RESERVED.remove(b'@');
    let escape = |s: &str| percent_encoding::utf8_percent_encode(s, LABEL).to_string();
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        escape(issuer),
        escape(account),
        secret_base32(secret),
        escape(issuer)
    )
}

pub fn step_at(unix_secs: i64) -> i64 {
    unix_secs.div_euclid(STEP_SECS)
}

/// The code for one time step (RFC 4226 dynamic truncation).
pub fn code_for_step(secret: &[u8], step: i64) -> String {
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(secret) else {
        // HMAC accepts keys of any length; this branch cannot be taken.
        return String::new();
    };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = usize::from(digest[19] & 0x0f);
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!(
        "{:0width$}",
        binary % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// Checks `code` at `unix_secs`, accepting one step of clock drift either way. Returns the step it
/// matched, which must be stored: a step at or before `last_used_step` is refused, so a code
/// cannot be replayed.
pub fn verify(
    secret: &[u8],
    code: &str,
    unix_secs: i64,
    last_used_step: Option<i64>,
) -> Option<i64> {
    let code = code.trim().replace(' ', "");
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(unix_secs);
    (now - 1..=now + 1)
        .filter(|step| last_used_step.is_none_or(|last| *step > last))
        .find(|step| {
            crate::domain::access::digests_equal(
                code_for_step(secret, *step).as_bytes(),
                code.as_bytes(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn codes_match_the_rfc_6238_test_vectors() {
        // RFC 6238 appendix B (SHA-1), last six digits of the eight-digit values.
        for (time, expected) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            assert_eq!(
                code_for_step(RFC_SECRET, step_at(time)),
                expected,
                "t={time}"
            );
        }
    }

    #[test]
    fn a_code_from_the_previous_or_next_step_is_accepted() {
        let now = 1_700_000_000;
        for drift in [-STEP_SECS, 0, STEP_SECS] {
            let code = code_for_step(RFC_SECRET, step_at(now + drift));
            assert!(verify(RFC_SECRET, &code, now, None).is_some(), "{drift}");
        }
        let stale = code_for_step(RFC_SECRET, step_at(now - 3 * STEP_SECS));
        assert_eq!(verify(RFC_SECRET, &stale, now, None), None);
    }

    #[test]
    fn a_code_cannot_be_used_twice() {
        let now = 1_700_000_000;
        let code = code_for_step(RFC_SECRET, step_at(now));
        let step = verify(RFC_SECRET, &code, now, None).expect("first use");
        assert_eq!(verify(RFC_SECRET, &code, now + 1, Some(step)), None);
    }

    #[test]
    fn malformed_codes_are_refused() {
        for code in ["", "12345", "1234567", "abcdef", "12 34 5x"] {
            assert_eq!(verify(RFC_SECRET, code, 59, None), None, "{code:?}");
        }
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_secret() {
        let uri = otpauth_uri(RFC_SECRET, "StayOpen", "a b@example.com");
        assert!(
            uri.starts_with(
                "otpauth://totp/StayOpen:a%20b@example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
            ),
            "{uri}"
        );
    }
}
