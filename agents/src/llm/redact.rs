//! Secret redaction for prompts, answers and error messages before they reach events or logs.
//!
//! What counts as a secret: provider API keys (`sk-…`, `gsk_…`, `xai-…`, `sk-or-…`), bearer tokens,
//! `key=value` pairs whose key says key, token, secret or password, AWS access keys, Telegram bot tokens,
//! JWTs, Solana keypairs (a JSON array of 64 bytes) and long base58 strings (private keys), PEM private
//! keys, plus any configured key given to [`Redactor::with_secrets`].

use std::sync::OnceLock;

use regex::Regex;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

fn patterns() -> &'static [Regex] {
    static PATTERNS: OnceLock<Vec<Regex>> = OnceLock::new();
    PATTERNS.get_or_init(|| {
        [
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----|$)",
            r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{8,}",
            r"\b(sk|gsk|xai|sk-or|sk-ant|sk-proj|pk|rk)[-_][A-Za-z0-9_-]{16,}",
            r#"(?i)\b([a-z0-9_-]*(api[_-]?key|token|secret|password|passwd|private[_-]?key))("?\s*[:=]\s*"?)[^\s"',;}]{4,}"#,
            r"\bAKIA[0-9A-Z]{16}\b",
            r"\b\d{6,12}:[A-Za-z0-9_-]{30,}\b",
            r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
            r"\[\s*(\d{1,3}\s*,\s*){31,}\d{1,3}\s*\]",
            r"\b[1-9A-HJ-NP-Za-km-z]{64,}\b",
        ]
        .iter()
        .map(|p| Regex::new(p).expect("redaction pattern"))
        .collect()
    })
}

/// Replaces every secret-looking part of `text` with `[REDACTED]`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for (i, re) in patterns().iter().enumerate() {
        if !re.is_match(&out) {
            continue;
        }
        out = if i == 3 {
            // Keep the key's name: `api_key=[REDACTED]`.
            re.replace_all(&out, format!("${{1}}${{3}}{REDACTED}").as_str())
                .into_owned()
        } else {
            re.replace_all(&out, REDACTED).into_owned()
        };
    }
    out
}

/// [`redact`] plus the literal secrets Jarvis was configured with (API keys of any shape).
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    /// A redactor that also removes each of `secrets` (those shorter than 6 characters are ignored: they
    /// would redact ordinary words).
    pub fn with_secrets(secrets: impl IntoIterator<Item = String>) -> Self {
        Self {
            secrets: secrets.into_iter().filter(|s| s.len() >= 6).collect(),
        }
    }

    /// `text` without secrets.
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        redact(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_of_every_shape_are_removed() {
        let cases = [
            "my key is sk-proj-abcdefghijklmnopqrstuvwx please",
            "gsk_0123456789abcdefghijABCDEFGHIJ",
            "xai-AbCdEfGhIjKlMnOpQrStUvWxYz012345",
            "Authorization: Bearer abc.def-ghi_jkl123456",
            "OPENAI_API_KEY=hunter2hunter2",
            r#"{"api_key": "zzzzzzzzsecret"}"#,
            "password: correcthorsebattery",
            "AKIAIOSFODNN7EXAMPLE",
            "bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw-x",
            "[174,47,154,16,202,193,206,113,199,190,53,133,169,175,31,56,222,53,138,189,224,216,117,173,10,149,53,45,73,251,237,246,15,185,186,82,177,240,148,69,241,227,167,80,141,89,240,121,121,35,172,247,68,251,226,218,48,63,176,109,168,89,238,135]",
            "4NMwxzmYj2uvHuq8xoqhY8RXg63KSVJM1DXkpbmkUY7YQWuoyQgFnnzn6yo3CMnqZasnNPNuAT2TLwQsCaKkUddp",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ];
        for case in cases {
            let out = redact(case);
            assert!(out.contains(REDACTED), "not redacted: {case} -> {out}");
            for secret in [
                "abcdefghijklmnop",
                "0123456789abcdef",
                "AbCdEfGh",
                "ghi_jkl",
                "hunter2",
                "zzzzzzzz",
                "horsebattery",
                "IOSFODNN",
                "AAHdqTcv",
                "174,47,154",
                "4NMwxzmY",
                "MIIEvQ",
                "dozjgNry",
            ] {
                assert!(!out.contains(secret), "{case} -> {out}");
            }
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        let text =
            "Buy SOL at 142.5 USDT? The token's momentum is positive; risk 2% of the portfolio.";
        assert_eq!(redact(text), text);
        assert_eq!(redact("api_key=[REDACTED]"), "api_key=[REDACTED]");
    }

    #[test]
    fn configured_keys_of_any_shape_are_removed() {
        let r = Redactor::with_secrets(["plainkey42".to_string(), "abc".to_string()]);
        assert_eq!(
            r.redact("use plainkey42 with abc"),
            "use [REDACTED] with abc"
        );
        assert!(!format!("{r:?}").contains("plainkey42"));
    }
}
