//! OAuth 1.0a user-context signing (RFC 5849, `HMAC-SHA1`), as X accepts for the user-context calls
//! (`POST /2/tweets`, `GET /2/users/me`). Unlike OAuth 2.0 user tokens (2 hours), these tokens do not expire.
//!
//! The signature base string is `METHOD&enc(base URL)&enc(normalized parameters)`, where the parameters
//! are the `oauth_*` ones and the URL's query (form bodies would count too; X API v2 sends JSON, whose
//! body is not signed). Each name and value is percent-encoded over the RFC 3986 unreserved set, pairs are
//! sorted by name then value and joined `name=value` with `&`. The key is `enc(consumer_secret)&enc(token_secret)`.
//!
//! Secrets stay in [`OAuth1Credentials`] (redacted `Debug`); the header carries only the consumer key,
//! the access token (public identifiers, as on the wire) and the signature.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::distributions::{Alphanumeric, DistString};
use sha1::Sha1;

use super::client::Secret;

/// The four OAuth 1.0a credentials of an app acting for one user (X developer portal: "Keys and tokens").
#[derive(Clone, PartialEq, Eq)]
pub struct OAuth1Credentials {
    /// The API key (consumer key).
    pub consumer_key: String,
    /// The API key secret (consumer secret).
    pub consumer_secret: Secret,
    /// The user's access token.
    pub access_token: Secret,
    /// The user's access token secret.
    pub access_token_secret: Secret,
}

impl std::fmt::Debug for OAuth1Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth1Credentials")
            .field("consumer_key", &self.consumer_key)
            .field("consumer_secret", &self.consumer_secret)
            .field("access_token", &self.access_token)
            .field("access_token_secret", &self.access_token_secret)
            .finish()
    }
}

/// Percent-encodes `s` per RFC 5849 §3.6: every byte but `A-Z a-z 0-9 - . _ ~` as `%XX` (upper-case hex).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The signature base string of `method` on `base_url` (no query) with `params` (decoded name/value pairs:
/// `oauth_*` and query/form parameters).
pub fn base_string(method: &str, base_url: &str, params: &[(String, String)]) -> String {
    let mut encoded: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (percent_encode(k), percent_encode(v)))
        .collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!(
        "{}&{}&{}",
        method.to_ascii_uppercase(),
        percent_encode(base_url),
        percent_encode(&normalized)
    )
}

/// `base64(HMAC-SHA1(enc(consumer_secret)&enc(token_secret), base_string))`.
pub fn signature(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    let key = format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(token_secret)
    );
    // HMAC takes keys of any length.
    let mut mac =
        <Hmac<Sha1>>::new_from_slice(key.as_bytes()).expect("HMAC accepts any key length");
    mac.update(base_string.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl OAuth1Credentials {
    /// The `Authorization` header of `method` on `url` (its query is signed), with a random nonce and the
    /// current time.
    pub fn authorization(&self, method: &str, url: &reqwest::Url) -> String {
        let nonce = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        self.authorization_with(method, url, &[], &nonce, timestamp)
    }

    /// The `Authorization` header with a given nonce and timestamp; `extra` are form parameters to sign.
    pub fn authorization_with(
        &self,
        method: &str,
        url: &reqwest::Url,
        extra: &[(String, String)],
        nonce: &str,
        timestamp: u64,
    ) -> String {
        let mut oauth = vec![
            ("oauth_consumer_key".to_string(), self.consumer_key.clone()),
            ("oauth_nonce".to_string(), nonce.to_string()),
            (
                "oauth_signature_method".to_string(),
                "HMAC-SHA1".to_string(),
            ),
            ("oauth_timestamp".to_string(), timestamp.to_string()),
            (
                "oauth_token".to_string(),
                self.access_token.expose().to_string(),
            ),
            ("oauth_version".to_string(), "1.0".to_string()),
        ];
        let mut base_url = url.clone();
        base_url.set_query(None);
        base_url.set_fragment(None);
        let mut params: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        params.extend(extra.iter().cloned());
        params.extend(oauth.iter().cloned());
        let base = base_string(method, base_url.as_str(), &params);
        let signature = signature(
            &base,
            self.consumer_secret.expose(),
            self.access_token_secret.expose(),
        );
        oauth.push(("oauth_signature".to_string(), signature));
        oauth.sort();
        let fields = oauth
            .iter()
            .map(|(k, v)| format!("{}=\"{}\"", percent_encode(k), percent_encode(v)))
            .collect::<Vec<_>>()
            .join(", ");
        format!("OAuth {fields}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn twitter_example() -> OAuth1Credentials {
        OAuth1Credentials {
            consumer_key: "xvz1evFS4wEEPTGEFPHBog".into(),
            consumer_secret: Secret::new("kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw"),
            access_token: Secret::new("370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
            access_token_secret: Secret::new("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"),
        }
    }

    /// Twitter's worked example ("Creating a signature"): `include_entities` in the query, `status` in the
    /// form body.
    #[test]
    fn the_documented_example_signs_as_documented() {
        let url = reqwest::Url::parse(
            "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
        )
        .unwrap();
        let status = (
            "status".to_string(),
            "Hello Ladies + Gentlemen, a signed OAuth request!".to_string(),
        );
        let header = twitter_example().authorization_with(
            "post",
            &url,
            &[status],
            "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg",
            1_318_622_958,
        );
        assert!(
            header.contains(r#"oauth_signature="hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D""#),
            "{header}"
        );
        assert_eq!(
            header,
            "OAuth oauth_consumer_key=\"xvz1evFS4wEEPTGEFPHBog\", \
             oauth_nonce=\"kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg\", \
             oauth_signature=\"hCtSmYh%2BiHYCEqBWrE7C7hYmtUk%3D\", \
             oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"1318622958\", \
             oauth_token=\"370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb\", oauth_version=\"1.0\""
        );
    }

    #[test]
    fn the_base_string_and_signature_of_the_example() {
        let params: Vec<(String, String)> = [
            (
                "status",
                "Hello Ladies + Gentlemen, a signed OAuth request!",
            ),
            ("include_entities", "true"),
            ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
            ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"),
            ("oauth_signature_method", "HMAC-SHA1"),
            ("oauth_timestamp", "1318622958"),
            (
                "oauth_token",
                "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb",
            ),
            ("oauth_version", "1.0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let base = base_string(
            "POST",
            "https://api.twitter.com/1.1/statuses/update.json",
            &params,
        );
        assert_eq!(
            base,
            "POST&https%3A%2F%2Fapi.twitter.com%2F1.1%2Fstatuses%2Fupdate.json&include_entities%3Dtrue%26\
             oauth_consumer_key%3Dxvz1evFS4wEEPTGEFPHBog%26oauth_nonce%3DkYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg%26\
             oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D1318622958%26oauth_token%3D370773112-\
             GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb%26oauth_version%3D1.0%26status%3DHello%2520Ladies%2520%252B%2520\
             Gentlemen%252C%2520a%2520signed%2520OAuth%2520request%2521"
        );
        assert_eq!(
            signature(
                &base,
                "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
                "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"
            ),
            "hCtSmYh+iHYCEqBWrE7C7hYmtUk="
        );
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved() {
        assert_eq!(
            percent_encode("Ladies + Gentlemen"),
            "Ladies%20%2B%20Gentlemen"
        );
        assert_eq!(
            percent_encode("An encoded string!"),
            "An%20encoded%20string%21"
        );
        assert_eq!(
            percent_encode("Dogs, Cats & Mice"),
            "Dogs%2C%20Cats%20%26%20Mice"
        );
        assert_eq!(percent_encode("☃"), "%E2%98%83");
        assert_eq!(percent_encode("a-b.c_d~e"), "a-b.c_d~e");
    }

    #[test]
    fn nonces_differ_and_secrets_stay_out_of_the_header_and_debug() {
        let creds = twitter_example();
        let url = reqwest::Url::parse("https://api.x.com/2/tweets").unwrap();
        let a = creds.authorization("POST", &url);
        let b = creds.authorization("POST", &url);
        assert_ne!(a, b);
        for shown in [a, format!("{creds:?}")] {
            assert!(
                !shown.contains("kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw"),
                "{shown}"
            );
            assert!(
                !shown.contains("LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE"),
                "{shown}"
            );
        }
        assert!(!format!("{creds:?}").contains("GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"));
    }
}
