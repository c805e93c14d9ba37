//! TOTP (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits), the second factor of admin actions.

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECS: u64 = 30;

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored).
pub fn decode_base32(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    let mut any = false;
    for c in text.chars().filter(|c| !c.is_whitespace() && *c != '=') {
        let v = match c.to_ascii_uppercase() {
            c @ 'A'..='Z' => c as u64 - 'A' as u64,
            c @ '2'..='7' => c as u64 - '2' as u64 + 26,
            _ => return None,
        };
        any = true;
        buffer = (buffer << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    any.then_some(out)
}

/// Encodes bytes as RFC 4648 base32 without padding.
pub fn encode_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buffer, mut bits) = (0u64, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | b as u64;
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The 6-digit code of `secret` at step `counter` (HOTP, RFC 4226).
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("hmac takes any key length");
    mac.update(&counter.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    binary % 1_000_000
}

/// Whether `code` is the code of `secret` at `unix_secs`, or one step either side (clock drift).
pub fn verify(secret: &[u8], code: &str, unix_secs: u64) -> bool {
    let code = code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(code) = code.parse::<u32>() else {
        return false;
    };
    let step = unix_secs / STEP_SECS;
    [step.saturating_sub(1), step, step + 1]
        .iter()
        .fold(false, |ok, &s| ok | (hotp(secret, s) == code))
}

/// A new random secret (20 bytes, as RFC 4226 recommends), base32.
pub fn new_secret() -> String {
    encode_base32(&rand::random::<[u8; 20]>())
}

/// The current code of `secret` (for tests and `jarvis gateway totp-secret`).
pub fn code_now(secret: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    format!("{:06}", hotp(secret, now / STEP_SECS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vectors() {
        // RFC 6238 appendix B, SHA1, secret "12345678901234567890" (8-digit codes; we keep 6).
        let secret = b"12345678901234567890";
        assert_eq!(hotp(secret, 59 / 30), 94287082 % 1_000_000);
        assert_eq!(hotp(secret, 1111111109 / 30), 7081804 % 1_000_000);
        assert_eq!(hotp(secret, 1234567890 / 30), 89005924 % 1_000_000);
        assert!(verify(secret, "287082", 59));
        assert!(verify(secret, "287082", 59 + 30));
        assert!(!verify(secret, "287082", 59 + 90));
        assert!(!verify(secret, "28708", 59));
    }

    #[test]
    fn base32_round_trip() {
        let secret = b"12345678901234567890";
        let text = encode_base32(secret);
        assert_eq!(text, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(decode_base32(&text.to_lowercase()).unwrap(), secret);
        assert!(decode_base32("not base32!").is_none());
    }
}
