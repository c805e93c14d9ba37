//! Who is calling: users (argon2 passwords, JWT access + refresh tokens, TOTP for admin actions) and API keys
//! (stored as SHA-256, scoped). Roles are enforced per route by the extractors [`Viewer`], [`Streamer`],
//! [`Operator`] and [`Admin`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::config::{GatewayConfig, Secret};
use crate::error::ApiError;
use crate::AppState;

/// What a caller may do; each role includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, streams events.
    Viewer,
    /// Also halts, resumes and places orders.
    Operator,
    /// Also manages API keys (with a second factor).
    Admin,
}

/// What an API key may do, whatever its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// GET the read models.
    Read,
    /// The event stream.
    Stream,
    /// POST commands.
    Commands,
}

/// Whether the caller is a user or an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// Logged in with a password.
    User,
    /// An API key.
    ApiKey,
}

/// An authenticated caller.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Principal {
    /// The user name or the API key's name.
    pub subject: String,
    /// User or API key.
    pub kind: PrincipalKind,
    /// The role.
    pub role: Role,
    /// Whether the token was minted with a TOTP code.
    pub mfa: bool,
    /// What it may do.
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// How commands name their requester on the bus, e.g. `gateway:alice`.
    pub fn requester(&self) -> String {
        format!("gateway:{}", self.subject)
    }
}

/// Kind of a JWT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// Sent with every request.
    Access,
    /// Exchanged for a new pair.
    Refresh,
}

/// The claims of our tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    /// The role when minted.
    pub role: Role,
    /// Minted with a TOTP code.
    pub mfa: bool,
    /// Access or refresh.
    pub typ: TokenType,
    /// Issued at (unix seconds).
    pub iat: u64,
    /// Expires at (unix seconds).
    pub exp: u64,
    /// Token id.
    pub jti: String,
}

/// A token pair, as login and refresh return it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenPair {
    /// Send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Exchange at `/api/v1/auth/refresh`.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Seconds the refresh token lives.
    pub refresh_expires_in: u64,
    /// The user.
    pub username: String,
    /// The role.
    pub role: Role,
    /// Whether the tokens carry a second factor (admin routes need it).
    pub mfa: bool,
}

/// An API key the gateway knows (from the configuration or minted by an admin).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiKeyInfo {
    /// Id (config keys: derived from the name).
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Scopes.
    pub scopes: Vec<Scope>,
    /// Where it is defined: `config` or `database`.
    pub origin: String,
    /// First characters of the hash, to tell keys apart.
    pub hash_prefix: String,
}

struct User {
    password_hash: String,
    role: Role,
    totp: Option<Vec<u8>>,
}

/// The gateway's authentication state.
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    access_ttl: u64,
    refresh_ttl: u64,
    users: HashMap<String, User>,
    /// By hex SHA-256 of the key.
    keys: RwLock<HashMap<String, ApiKeyInfo>>,
    dummy_hash: String,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Hex SHA-256 of an API key.
pub fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random API key (`jk_` + 32 random bytes, base64url).
pub fn new_api_key() -> String {
    let bytes: [u8; 32] = rand::random();
    format!(
        "jk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// An argon2id PHC string of `password` with a random salt.
///
/// # Errors
/// When argon2 refuses the input.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = argon2::password_hash::SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Auth {
    /// Builds it from the configuration (already validated). Without a `jwt_secret`, a random key.
    pub fn new(config: &GatewayConfig) -> Self {
        let secret = match &config.jwt_secret {
            Some(Secret(s)) => s.as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let users = config
            .users
            .iter()
            .map(|u| {
                (
                    u.username.clone(),
                    User {
                        password_hash: u.password_hash.0.clone(),
                        role: u.role,
                        totp: u
                            .totp_secret
                            .as_ref()
                            .and_then(|s| crate::totp::decode_base32(&s.0)),
                    },
                )
            })
            .collect();
        let keys = config
            .api_keys
            .iter()
            .map(|k| {
                let hash = k.key_sha256.to_ascii_lowercase();
                (
                    hash.clone(),
                    ApiKeyInfo {
                        id: Uuid::new_v5(&Uuid::NAMESPACE_OID, k.name.as_bytes()),
                        name: k.name.clone(),
                        role: k.role,
                        scopes: k.scopes.clone(),
                        origin: "config".into(),
                        hash_prefix: hash[..8].to_string(),
                    },
                )
            })
            .collect();
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            validation,
            access_ttl: config.access_ttl_secs,
            refresh_ttl: config.refresh_ttl_secs,
            users,
            keys: RwLock::new(keys),
            dummy_hash: hash_password("not a password").unwrap_or_default(),
        }
    }

    fn mint(&self, sub: &str, role: Role, mfa: bool, typ: TokenType) -> Result<String, ApiError> {
        let iat = now_secs();
        let ttl = match typ {
            TokenType::Access => self.access_ttl,
            TokenType::Refresh => self.refresh_ttl,
        };
        let claims = Claims {
            sub: sub.to_string(),
            role,
            mfa,
            typ,
            iat,
            exp: iat + ttl,
            jti: Uuid::now_v7().to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))
    }

    /// A token pair for `user` (who must exist).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for an unknown user.
    pub fn issue(&self, user: &str, mfa: bool) -> Result<TokenPair, ApiError> {
        let role = self
            .users
            .get(user)
            .map(|u| u.role)
            .ok_or_else(|| ApiError::Unauthorized("unknown user".into()))?;
        Ok(TokenPair {
            access_token: self.mint(user, role, mfa, TokenType::Access)?,
            refresh_token: self.mint(user, role, mfa, TokenType::Refresh)?,
            token_type: "Bearer".into(),
            expires_in: self.access_ttl,
            refresh_expires_in: self.refresh_ttl,
            username: user.to_string(),
            role,
            mfa,
        })
    }

    /// Checks a password (and a TOTP code when given) and returns a token pair. Slow on purpose (argon2):
    /// call it off the async threads.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] with one message for every wrong input, so it does not tell which.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        totp: Option<&str>,
    ) -> Result<TokenPair, ApiError> {
        let refused = || ApiError::Unauthorized("wrong user name, password or TOTP code".into());
        let user = self.users.get(username);
        let hash = user.map_or(self.dummy_hash.as_str(), |u| u.password_hash.as_str());
        let parsed = PasswordHash::new(hash).map_err(|_| refused())?;
        let password_ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        let user = match user {
            Some(u) if password_ok => u,
            _ => return Err(refused()),
        };
        let mfa = match (totp, &user.totp) {
            (None, _) => false,
            (Some(code), Some(secret)) if crate::totp::verify(secret, code, now_secs()) => true,
            (Some(_), _) => return Err(refused()),
        };
        self.issue(username, mfa)
    }

    /// Exchanges a refresh token for a new pair (the user's current role).
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for anything but a valid refresh token of a known user.
    pub fn refresh(&self, token: &str) -> Result<TokenPair, ApiError> {
        let claims = self.decode(token)?;
        if claims.typ != TokenType::Refresh {
            return Err(ApiError::Unauthorized("not a refresh token".into()));
        }
        self.issue(&claims.sub, claims.mfa)
    }

    fn decode(&self, token: &str) -> Result<Claims, ApiError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => ApiError::TokenExpired,
                _ => ApiError::Unauthorized("invalid token".into()),
            })
    }

    /// The caller of an access token.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] or [`ApiError::TokenExpired`].
    pub fn principal_of_token(&self, token: &str) -> Result<Principal, ApiError> {
        let claims = self.decode(token)?;
        if claims.typ != TokenType::Access {
            return Err(ApiError::Unauthorized(
                "a refresh token is not an access token".into(),
            ));
        }
        let role = self
            .users
            .get(&claims.sub)
            .map(|u| u.role.min(claims.role))
            .ok_or_else(|| ApiError::Unauthorized("the token's user no longer exists".into()))?;
        Ok(Principal {
            subject: claims.sub,
            kind: PrincipalKind::User,
            role,
            mfa: claims.mfa,
            scopes: vec![Scope::Read, Scope::Stream, Scope::Commands],
        })
    }

    /// The caller of an API key.
    ///
    /// # Errors
    /// [`ApiError::Unauthorized`] for an unknown key.
    pub fn principal_of_key(&self, key: &str) -> Result<Principal, ApiError> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let info = keys
            .get(&hash_key(key))
            .ok_or_else(|| ApiError::Unauthorized("unknown API key".into()))?;
        Ok(Principal {
            subject: info.name.clone(),
            kind: PrincipalKind::ApiKey,
            role: info.role,
            mfa: false,
            scopes: info.scopes.clone(),
        })
    }

    /// Every known API key (no secrets).
    pub fn keys(&self) -> Vec<ApiKeyInfo> {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut list: Vec<_> = keys.values().cloned().collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Adds or replaces the minted keys (by hash), keeping the configured ones.
    pub fn set_minted_keys(&self, minted: Vec<(String, ApiKeyInfo)>) {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.retain(|_, k| k.origin == "config");
        keys.extend(minted);
    }
}

/// The credentials of a request: `Authorization: Bearer`, `X-API-Key`, or (stream only) `?access_token=`.
pub enum Credentials {
    /// A JWT.
    Bearer(String),
    /// An API key.
    ApiKey(String),
}

/// Reads the credentials a request carries.
pub fn credentials(parts: &Parts, allow_query: bool) -> Option<Credentials> {
    if let Some(key) = parts.headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(Credentials::ApiKey(key.trim().to_string()));
    }
    if let Some(value) = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        return Some(if token.starts_with("jk_") {
            Credentials::ApiKey(token.to_string())
        } else {
            Credentials::Bearer(token.to_string())
        });
    }
    if allow_query {
        let query = parts.uri.query().unwrap_or_default();
        for pair in query.split('&') {
            if let Some(token) = pair.strip_prefix("access_token=") {
                return Some(Credentials::Bearer(token.to_string()));
            }
        }
    }
    None
}

/// Authenticates a request, with the principal cached in the request's extensions.
///
/// # Errors
/// [`ApiError::Unauthorized`] or [`ApiError::TokenExpired`].
pub fn authenticate(
    parts: &mut Parts,
    auth: &Auth,
    allow_query: bool,
) -> Result<Principal, ApiError> {
    if let Some(p) = parts.extensions.get::<Principal>() {
        return Ok(p.clone());
    }
    let principal = match credentials(parts, allow_query) {
        None => Err(ApiError::Unauthorized(
            "no credentials: send Authorization: Bearer <token> or X-API-Key".into(),
        )),
        Some(Credentials::Bearer(t)) => auth.principal_of_token(&t),
        Some(Credentials::ApiKey(k)) => auth.principal_of_key(&k),
    }?;
    parts.extensions.insert(principal.clone());
    Ok(principal)
}

fn require(
    principal: Principal,
    role: Role,
    scope: Scope,
    mfa: bool,
) -> Result<Principal, ApiError> {
    if principal.role < role {
        return Err(ApiError::Forbidden(format!(
            "this route needs the {role:?} role; {} has {:?}",
            principal.subject, principal.role
        )));
    }
    if !principal.scopes.contains(&scope) {
        return Err(ApiError::Forbidden(format!(
            "this route needs the {scope:?} scope, which {} lacks",
            principal.subject
        )));
    }
    if mfa && principal.kind == PrincipalKind::ApiKey {
        return Err(ApiError::Forbidden(
            "API keys cannot use admin routes".into(),
        ));
    }
    if mfa && !principal.mfa {
        return Err(ApiError::MfaRequired);
    }
    Ok(principal)
}

macro_rules! extractor {
    ($(#[$doc:meta])* $name:ident, $role:expr, $scope:expr, $mfa:expr, $query:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let principal = authenticate(parts, &state.auth, $query)?;
                require(principal, $role, $scope, $mfa).map($name)
            }
        }
    };
}

extractor!(
    /// A caller that may read (viewer and up, `read` scope).
    Viewer, Role::Viewer, Scope::Read, false, false
);
extractor!(
    /// A caller that may stream events (viewer and up, `stream` scope; token also in `?access_token=`).
    Streamer, Role::Viewer, Scope::Stream, false, true
);
extractor!(
    /// A caller that may post commands (operator and up, `commands` scope).
    Operator, Role::Operator, Scope::Commands, false, false
);
extractor!(
    /// An admin with a second factor.
    Admin, Role::Admin, Scope::Commands, true, false
);

/// Shared handle.
pub type SharedAuth = Arc<Auth>;
