//! `[gateway]`: where the gateway listens, who may log in, and its limits.

use serde::Deserialize;

use crate::auth::{Role, Scope};

/// A secret from the configuration: never printed by `Debug`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Whether `jarvis up` runs the gateway.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `host:port` to listen on.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The HS256 key of access and refresh tokens (at least 32 bytes unless bound to loopback). Unset on
    /// loopback: a random key per process (tokens die with it).
    #[serde(default)]
    pub jwt_secret: Option<Secret>,
    /// Lifetime of an access token, in seconds.
    #[serde(default = "default_access_ttl")]
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds.
    #[serde(default = "default_refresh_ttl")]
    pub refresh_ttl_secs: u64,
    /// `[[gateway.users]]`: who may log in.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// `[[gateway.api_keys]]`: keys for services, stored as SHA-256 (more can be minted by an admin).
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Requests per second per client IP (0: unlimited).
    #[serde(default = "default_ip_rate")]
    pub rate_limit_per_ip_per_sec: u32,
    /// Requests per second per API key or user (0: unlimited).
    #[serde(default = "default_key_rate")]
    pub rate_limit_per_key_per_sec: u32,
    /// How many requests above the rate a client may burst (the bucket's size is rate + burst).
    #[serde(default = "default_burst")]
    pub rate_limit_burst: u32,
    /// Largest request body, in bytes.
    #[serde(default = "default_body_limit")]
    pub body_limit_bytes: usize,
    /// Longest a request may take (not the event stream), in milliseconds.
    #[serde(default = "default_timeout")]
    pub request_timeout_ms: u64,
    /// How long a command waits for the bus service's reply, in milliseconds.
    #[serde(default = "default_command_timeout")]
    pub command_timeout_ms: u64,
    /// Origins allowed by CORS (empty: same origin only; `"*"`: any, without credentials).
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// One structured log line per request (target `jarvis::access`).
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Keep-alive comment interval of the event stream, in seconds.
    #[serde(default = "default_keep_alive")]
    pub sse_keep_alive_secs: u64,
}

/// `[[gateway.users]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub username: String,
    /// Argon2 PHC string (`jarvis gateway hash-password`).
    pub password_hash: Secret,
    /// viewer, operator or admin.
    pub role: Role,
    /// Base32 TOTP secret (`jarvis gateway totp-secret`); required for admin routes.
    #[serde(default)]
    pub totp_secret: Option<Secret>,
}

/// `[[gateway.api_keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// A name for logs and the admin list.
    pub name: String,
    /// Hex SHA-256 of the key (`jarvis gateway api-key` prints both).
    pub key_sha256: String,
    /// viewer or operator (API keys never pass admin routes).
    pub role: Role,
    /// What the key may do: read, stream, commands.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
}

fn yes() -> bool {
    true
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_access_ttl() -> u64 {
    900
}
fn default_refresh_ttl() -> u64 {
    7 * 24 * 3600
}
fn default_ip_rate() -> u32 {
    100
}
fn default_key_rate() -> u32 {
    200
}
fn default_burst() -> u32 {
    200
}
fn default_body_limit() -> usize {
    64 * 1024
}
fn default_timeout() -> u64 {
    10_000
}
fn default_command_timeout() -> u64 {
    5_000
}
fn default_keep_alive() -> u64 {
    15
}
fn default_scopes() -> Vec<Scope> {
    vec![Scope::Read, Scope::Stream]
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: default_listen(),
            jwt_secret: None,
            access_ttl_secs: default_access_ttl(),
            refresh_ttl_secs: default_refresh_ttl(),
            users: Vec::new(),
            api_keys: Vec::new(),
            rate_limit_per_ip_per_sec: default_ip_rate(),
            rate_limit_per_key_per_sec: default_key_rate(),
            rate_limit_burst: default_burst(),
            body_limit_bytes: default_body_limit(),
            request_timeout_ms: default_timeout(),
            command_timeout_ms: default_command_timeout(),
            cors_origins: Vec::new(),
            access_log: true,
            sse_keep_alive_secs: default_keep_alive(),
        }
    }
}

/// Secrets that are refused off loopback whatever their length.
const WEAK_SECRETS: &[&str] = &[
    "changeme",
    "secret",
    "jarvis",
    "password",
    "change-me",
    "dev",
];

impl GatewayConfig {
    /// Checks values that parse but make no sense, and the secret against the address.
    ///
    /// # Errors
    /// The key, its value (never a secret's) and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        let addr: std::net::SocketAddr = self.listen.parse().map_err(|e| {
            format!(
                "gateway.listen = {:?}: expected host:port, e.g. 127.0.0.1:8080 ({e})",
                self.listen
            )
        })?;
        if !addr.ip().is_loopback() {
            match &self.jwt_secret {
                None => {
                    return Err(format!(
                        "gateway.jwt_secret is unset: required when gateway.listen = {:?} is not loopback",
                        self.listen
                    ))
                }
                Some(Secret(s))
                    if s.len() < 32 || WEAK_SECRETS.iter().any(|w| s.eq_ignore_ascii_case(w)) =>
                {
                    return Err(format!(
                        "gateway.jwt_secret is weak (a default or shorter than 32 bytes): refused when \
                         gateway.listen = {:?} is not loopback",
                        self.listen
                    ))
                }
                Some(_) => {}
            }
        }
        if self.access_ttl_secs == 0 || self.refresh_ttl_secs <= self.access_ttl_secs {
            return Err(format!(
                "gateway.access_ttl_secs = {}, refresh_ttl_secs = {}: both positive, refresh longer",
                self.access_ttl_secs, self.refresh_ttl_secs
            ));
        }
        if self.body_limit_bytes < 1024 {
            return Err(format!(
                "gateway.body_limit_bytes = {}: must be at least 1024",
                self.body_limit_bytes
            ));
        }
        if self.request_timeout_ms == 0 || self.command_timeout_ms == 0 {
            return Err(
                "gateway.request_timeout_ms and command_timeout_ms must be positive".into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, user) in self.users.iter().enumerate() {
            if user.username.trim().is_empty() || !names.insert(user.username.as_str()) {
                return Err(format!(
                    "gateway.users[{i}].username = {:?}: must be non-empty and unique",
                    user.username
                ));
            }
            argon2::PasswordHash::new(&user.password_hash.0).map_err(|e| {
                format!(
                    "gateway.users[{i}].password_hash (user {:?}): not an argon2 PHC string ({e}); \
                     make one with `jarvis gateway hash-password`",
                    user.username
                )
            })?;
            if let Some(secret) = &user.totp_secret {
                crate::totp::decode_base32(&secret.0).ok_or_else(|| {
                    format!(
                        "gateway.users[{i}].totp_secret (user {:?}): not base32",
                        user.username
                    )
                })?;
            }
        }
        for (i, key) in self.api_keys.iter().enumerate() {
            if key.key_sha256.len() != 64 || !key.key_sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(format!(
                    "gateway.api_keys[{i}].key_sha256 (key {:?}): expected 64 hex digits",
                    key.name
                ));
            }
            if key.role == Role::Admin {
                return Err(format!(
                    "gateway.api_keys[{i}].role = \"admin\" (key {:?}): API keys may be viewer or operator",
                    key.name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_secret_refused_off_loopback_only() {
        let mut c = GatewayConfig::default();
        assert!(c.validate().is_ok());
        c.listen = "0.0.0.0:8080".into();
        assert!(c.validate().unwrap_err().contains("jwt_secret is unset"));
        c.jwt_secret = Some(Secret("changeme".into()));
        let err = c.validate().unwrap_err();
        assert!(err.contains("weak") && !err.contains("changeme"), "{err}");
        c.jwt_secret = Some(Secret("x".repeat(40)));
        assert!(c.validate().is_ok());
        assert!(!format!("{c:?}").contains("xxxx"));
    }

    #[test]
    fn bad_values_are_named() {
        let c = GatewayConfig {
            listen: "nope".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("gateway.listen"));
        let mut c = GatewayConfig::default();
        c.users.push(UserConfig {
            username: "a".into(),
            password_hash: Secret("plain".into()),
            role: Role::Viewer,
            totp_secret: None,
        });
        assert!(c.validate().unwrap_err().contains("users[0].password_hash"));
    }
}
