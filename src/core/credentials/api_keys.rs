//! API keys: configured only as SHA-256 digests, looked up by the digest of what the client sent.
//! The key itself is opaque bytes (`ek_live_…`, `sk-…`, anything); it is never stored or logged.

use std::collections::HashMap;
use std::rc::Rc;

use chrono::DateTime;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::core::config_error::ConfigError;
use crate::core::identity::Identity;
use crate::core::request::Request;

pub mod raw {
    //! The api_keys section exactly as written.
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApiKeys {
        pub headers: Option<Vec<String>>,
        #[serde(default)]
        pub forward: bool,
        pub keys: Vec<ApiKey>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ApiKey {
        pub id: String,
        pub sha256: String,
        pub principal: String,
        #[serde(default)]
        pub scopes: Vec<String>,
        pub expires_at: Option<String>,
        pub active: Option<bool>,
    }
}

const DEFAULT_HEADER: &str = "x-api-key";

pub type KeyDigest = [u8; 32];

#[derive(Debug)]
pub struct ApiKeys {
    /// Header names the key may arrive in; `authorization` means `Bearer <key>`.
    pub headers: Vec<String>,
    /// Keep the key header on the request sent upstream (default: strip it).
    pub forward: bool,
    keys: Vec<ApiKey>,
    by_digest: HashMap<KeyDigest, usize>,
}

#[derive(Debug)]
pub struct ApiKey {
    pub id: String,
    digest: KeyDigest,
    /// Seconds since the epoch; None = never expires.
    expires_at: Option<i64>,
    active: bool,
    pub identity: Rc<Identity>,
}

/// Why a presented key is refused. Names the key id at most, never the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiKeyError {
    Unknown,
    Inactive { id: String },
    Expired { id: String },
}

impl ApiKeyError {
    /// The `error_description` the client sees: no key id, so a guesser learns nothing.
    pub fn description(&self) -> &'static str {
        match self {
            ApiKeyError::Unknown => "unknown API key",
            ApiKeyError::Inactive { .. } => "API key is not active",
            ApiKeyError::Expired { .. } => "API key expired",
        }
    }

    /// For the debug log: which configured key, if any.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            ApiKeyError::Unknown => None,
            ApiKeyError::Inactive { id } | ApiKeyError::Expired { id } => Some(id),
        }
    }
}

/// An API key found on a request, and the header it came in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedKey<'a> {
    pub value: &'a str,
    pub header: &'a str,
}

impl ApiKeys {
    pub fn compile(raw: raw::ApiKeys, identity_prefix: &str) -> Result<ApiKeys, ConfigError> {
        let headers = match raw.headers {
            None => vec![DEFAULT_HEADER.to_string()],
            Some(list) if list.is_empty() => {
                return Err(ConfigError::new(
                    "api_keys.headers",
                    "list at least one header, or leave it out for x-api-key",
                ))
            }
            Some(list) => {
                let mut headers = Vec::with_capacity(list.len());
                for (i, name) in list.into_iter().enumerate() {
                    let name = name.to_ascii_lowercase();
                    if !crate::core::syntax::is_header_name(&name) {
                        return Err(ConfigError::new(
                            format!("api_keys.headers[{i}]"),
                            "not a valid header name",
                        ));
                    }
                    headers.push(name);
                }
                headers
            }
        };
        let mut keys = Vec::with_capacity(raw.keys.len());
        let mut by_digest = HashMap::with_capacity(raw.keys.len());
        for (i, key) in raw.keys.into_iter().enumerate() {
            let at = |field: &str| format!("api_keys.keys[{i}].{field}");
            let compiled = compile_key(key, identity_prefix, &at)?;
            if keys.iter().any(|k: &ApiKey| k.id == compiled.id) {
                return Err(ConfigError::new(at("id"), "duplicate key id"));
            }
            if by_digest.insert(compiled.digest, keys.len()).is_some() {
                return Err(ConfigError::new(
                    at("sha256"),
                    "the same key digest is configured twice",
                ));
            }
            keys.push(compiled);
        }
        Ok(ApiKeys {
            headers,
            forward: raw.forward,
            keys,
            by_digest,
        })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The first configured header carrying a non-empty key.
    pub fn find<'a>(&'a self, request: &Request<'a>) -> Option<PresentedKey<'a>> {
        self.headers.iter().find_map(|header| {
            let value = request.header(header)?;
            let value = if header == "authorization" {
                strip_bearer(value)?
            } else {
                value.trim()
            };
            (!value.is_empty()).then_some(PresentedKey { value, header })
        })
    }

    /// Whether `presented` is one of the configured keys, in whatever state.
    pub fn is_configured(&self, presented: &str) -> bool {
        let digest: KeyDigest = Sha256::digest(presented.as_bytes()).into();
        self.by_digest.contains_key(&digest)
    }

    pub fn check(&self, presented: &str, now_s: i64) -> Result<&ApiKey, ApiKeyError> {
        let digest: KeyDigest = Sha256::digest(presented.as_bytes()).into();
        // The map is keyed by the digest, not the key, so its lookup time says nothing useful
        // about the key; the final comparison is constant-time regardless.
        let key = self
            .by_digest
            .get(&digest)
            .and_then(|&i| self.keys.get(i))
            .filter(|key| bool::from(key.digest.ct_eq(&digest)))
            .ok_or(ApiKeyError::Unknown)?;
        if !key.active {
            return Err(ApiKeyError::Inactive { id: key.id.clone() });
        }
        if key.expires_at.is_some_and(|at| now_s >= at) {
            return Err(ApiKeyError::Expired { id: key.id.clone() });
        }
        Ok(key)
    }
}

/// `Bearer <key>`, the scheme case-insensitive (RFC 6750).
pub fn strip_bearer(value: &str) -> Option<&str> {
    let scheme = value.get(..7)?;
    scheme
        .eq_ignore_ascii_case("bearer ")
        .then(|| value[7..].trim())
}

fn compile_key(
    raw: raw::ApiKey,
    identity_prefix: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<ApiKey, ConfigError> {
    if raw.id.is_empty() || raw.id.chars().any(|c| c.is_control()) {
        return Err(ConfigError::new(at("id"), "must be a non-empty name"));
    }
    let digest = parse_digest(&raw.sha256).ok_or_else(|| {
        ConfigError::new(
            at("sha256"),
            "must be the key's SHA-256 as 64 hex digits (printf %s \"$KEY\" | sha256sum), \
             never the key itself",
        )
    })?;
    if raw.principal.trim().is_empty() || raw.principal.chars().any(|c| c.is_control()) {
        return Err(ConfigError::new(at("principal"), "must not be empty"));
    }
    if let Some(i) = raw
        .scopes
        .iter()
        .position(|s| s.is_empty() || s.contains(char::is_whitespace) || s.contains(','))
    {
        return Err(ConfigError::new(
            format!("{}[{i}]", at("scopes")),
            "must be a single non-empty name without spaces or commas",
        ));
    }
    let expires_at = match raw.expires_at {
        None => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(&text)
                .map_err(|_| {
                    ConfigError::new(
                        at("expires_at"),
                        "must be an RFC 3339 time, e.g. 2027-01-01T00:00:00Z",
                    )
                })?
                .timestamp(),
        ),
    };
    let identity = Rc::new(Identity::from_api_key(
        identity_prefix,
        &raw.id,
        &raw.principal,
        &raw.scopes,
        expires_at,
        digest,
    ));
    Ok(ApiKey {
        id: raw.id,
        digest,
        expires_at,
        active: raw.active.unwrap_or(true),
        identity,
    })
}

fn parse_digest(text: &str) -> Option<KeyDigest> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut digest).ok()?;
    Some(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    fn keys(json: serde_json::Value) -> Result<ApiKeys, ConfigError> {
        let raw: raw::ApiKeys = serde_json::from_value(json).unwrap();
        ApiKeys::compile(raw, "x-auth-")
    }

    #[test]
    fn looks_up_by_digest_and_refuses_inactive_and_expired() {
        let table = keys(serde_json::json!({"keys": [
            {"id": "ci", "sha256": sha("ek_live_abc"), "principal": "svc:ci", "scopes": ["deploy"]},
            {"id": "old", "sha256": sha("k2"), "principal": "svc:old", "active": false},
            {"id": "tmp", "sha256": sha("k3").to_uppercase(), "principal": "svc:tmp",
             "expires_at": "2026-01-01T00:00:00+01:00"}
        ]}))
        .unwrap();
        assert_eq!(table.check("ek_live_abc", 0).unwrap().id, "ci");
        assert_eq!(
            table.check("ek_live_abd", 0).unwrap_err(),
            ApiKeyError::Unknown
        );
        assert!(matches!(
            table.check("k2", 0),
            Err(ApiKeyError::Inactive { .. })
        ));
        let expiry = 1_767_222_000; // 2025-12-31T23:00:00Z
        assert!(table.check("k3", expiry - 1).is_ok());
        assert!(matches!(
            table.check("k3", expiry),
            Err(ApiKeyError::Expired { .. })
        ));
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |json| keys(json).unwrap_err().path;
        assert_eq!(
            err(
                serde_json::json!({"keys": [{"id": "a", "sha256": "ek_live_abc", "principal": "p"}]})
            ),
            "api_keys.keys[0].sha256"
        );
        assert_eq!(
            err(
                serde_json::json!({"keys": [{"id": "a", "sha256": sha("x"), "principal": "p",
                                             "expires_at": "tomorrow"}]})
            ),
            "api_keys.keys[0].expires_at"
        );
        assert_eq!(
            err(serde_json::json!({"keys": [
                {"id": "a", "sha256": sha("x"), "principal": "p"},
                {"id": "a", "sha256": sha("y"), "principal": "p"}]})),
            "api_keys.keys[1].id"
        );
        assert_eq!(
            err(serde_json::json!({"headers": ["bad header"], "keys": []})),
            "api_keys.headers[0]"
        );
    }

    #[test]
    fn finds_the_key_in_its_headers() {
        let table =
            keys(serde_json::json!({"headers": ["X-Api-Key", "authorization"], "keys": []}))
                .unwrap();
        let bearer = [("authorization", "bearer sk-123")];
        let found = table.find(&Request::new(&bearer)).unwrap();
        assert_eq!((found.value, found.header), ("sk-123", "authorization"));
        let basic = [("authorization", "Basic abc")];
        assert_eq!(table.find(&Request::new(&basic)), None);
        let plain = [("x-api-key", " k ")];
        assert_eq!(table.find(&Request::new(&plain)).unwrap().value, "k");
    }
}
