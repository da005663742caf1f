//! A JWT provider's configuration: issuer, audiences, where its keys come from (inline or a remote
//! JWKS), where its tokens arrive, and which claims become identity headers.

use crate::core::policy::roles::RoleHierarchy;
use serde_json::Value;

use crate::core::config_error::ConfigError;
use crate::core::jwt::jwks::KeySet;
use crate::core::syntax::{is_header_name, is_protected_header, split_uri};

const DEFAULT_CLOCK_SKEW_S: u64 = 60;
const DEFAULT_JWKS_TIMEOUT_MS: u64 = 2000;
const DEFAULT_JWKS_CACHE_S: u64 = 600;

pub mod raw {
    //! The provider section exactly as written.
    use serde::Deserialize;
    use serde_json::Value;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Provider {
        pub issuer: String,
        pub audiences: Option<Vec<String>>,
        pub local_jwks: Option<Value>,
        pub remote_jwks: Option<RemoteJwks>,
        pub discovery: Option<bool>,
        pub from_headers: Option<Vec<FromHeader>>,
        #[serde(default)]
        pub from_cookies: Vec<String>,
        pub clock_skew_s: Option<u64>,
        pub require_expiration: Option<bool>,
        #[serde(default)]
        pub forward: bool,
        #[serde(default)]
        pub claim_to_headers: Vec<ClaimToHeader>,
        #[serde(default)]
        pub subject_claims: SubjectClaims,
        pub role_hierarchy: Option<std::collections::BTreeMap<String, Vec<String>>>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RemoteJwks {
        pub cluster: String,
        /// Optional with `discovery: true` (then the discovery document's `jwks_uri`).
        pub uri: Option<String>,
        pub timeout_ms: Option<u64>,
        pub cache_duration_s: Option<u64>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FromHeader {
        pub name: String,
        #[serde(default)]
        pub value_prefix: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClaimToHeader {
        pub claim: String,
        pub header: String,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct SubjectClaims {
        pub subject: Option<String>,
        pub email: Option<String>,
        pub roles: Option<String>,
        pub scopes: Option<String>,
    }
}

#[derive(Debug)]
pub struct Provider {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    pub from_headers: Vec<HeaderSource>,
    pub from_cookies: Vec<String>,
    pub clock_skew_s: u64,
    pub require_expiration: bool,
    pub forward: bool,
    pub claim_to_headers: Vec<(String, String)>,
    pub subject_claims: SubjectClaims,
    /// The provider's own `role_hierarchy`, else the top-level one (filled in by the config).
    pub role_hierarchy: Option<RoleHierarchy>,
}

#[derive(Debug)]
pub enum JwksSource {
    Local(KeySet),
    Remote(RemoteJwks),
}

#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    /// Where the key set is fetched; with discovery and no `uri`, empty until the discovery
    /// document names it.
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub cache_duration_s: u64,
    /// With `discovery: true`: the `:authority` and path of
    /// `{issuer}/.well-known/openid-configuration`, fetched (over the same cluster) before the
    /// key set, on every refresh.
    pub discovery: Option<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct HeaderSource {
    pub name: String,
    pub value_prefix: String,
}

#[derive(Debug, Clone)]
pub struct SubjectClaims {
    pub subject: String,
    pub email: String,
    pub roles: String,
    pub scopes: String,
}

pub(crate) fn compile_provider(name: String, raw: raw::Provider) -> Result<Provider, ConfigError> {
    let at = |field: &str| format!("jwt_providers.{name}.{field}");
    if name.is_empty() {
        return Err(ConfigError::new(
            "jwt_providers",
            "provider names must not be empty",
        ));
    }
    if raw.issuer.trim().is_empty() {
        return Err(ConfigError::new(at("issuer"), "must not be empty"));
    }
    let jwks = match (raw.local_jwks, raw.remote_jwks) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                at("local_jwks"),
                "set either local_jwks or remote_jwks, not both",
            ))
        }
        (None, None) => {
            return Err(ConfigError::new(
                at("remote_jwks"),
                "missing field: set remote_jwks or local_jwks",
            ))
        }
        (Some(_), None) if raw.discovery == Some(true) => {
            return Err(ConfigError::new(
                at("discovery"),
                "needs remote_jwks with the cluster that reaches the identity provider",
            ))
        }
        (Some(local), None) => JwksSource::Local(compile_local_jwks(&at("local_jwks"), local)?),
        (None, Some(remote)) => {
            let discovery = if raw.discovery == Some(true) {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    raw.issuer.trim_end_matches('/')
                );
                Some(split_uri(&url).ok_or_else(|| {
                    ConfigError::new(
                        at("discovery"),
                        "needs an http(s) issuer URL to find the discovery document",
                    )
                })?)
            } else {
                None
            };
            JwksSource::Remote(compile_remote(&at("remote_jwks"), remote, discovery)?)
        }
    };
    let from_headers = match raw.from_headers {
        None => vec![HeaderSource {
            name: "authorization".to_string(),
            value_prefix: "Bearer ".to_string(),
        }],
        Some(list) => {
            let mut sources = Vec::with_capacity(list.len());
            for (i, source) in list.into_iter().enumerate() {
                let name = source.name.to_ascii_lowercase();
                if !is_header_name(&name) {
                    return Err(ConfigError::new(
                        format!("{}[{i}].name", at("from_headers")),
                        "not a valid header name",
                    ));
                }
                sources.push(HeaderSource {
                    name,
                    value_prefix: source.value_prefix,
                });
            }
            sources
        }
    };
    for (i, cookie) in raw.from_cookies.iter().enumerate() {
        if cookie.is_empty() || cookie.contains([';', '=', ' ']) {
            return Err(ConfigError::new(
                format!("{}[{i}]", at("from_cookies")),
                "not a valid cookie name",
            ));
        }
    }
    if from_headers.is_empty() && raw.from_cookies.is_empty() {
        return Err(ConfigError::new(
            at("from_headers"),
            "no place to find the token",
        ));
    }
    let mut claim_to_headers = Vec::with_capacity(raw.claim_to_headers.len());
    for (i, mapping) in raw.claim_to_headers.into_iter().enumerate() {
        let path = format!("{}[{i}]", at("claim_to_headers"));
        if mapping.claim.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.claim"),
                "must not be empty",
            ));
        }
        let header = mapping.header.to_ascii_lowercase();
        if !is_header_name(&header) || header.starts_with(':') {
            return Err(ConfigError::new(
                format!("{path}.header"),
                "not a valid header name",
            ));
        }
        if is_protected_header(&header) {
            return Err(ConfigError::new(
                format!("{path}.header"),
                format!("{header:?} belongs to Envoy or the client; choose another name"),
            ));
        }
        claim_to_headers.push((mapping.claim, header));
    }
    let subject_claims = SubjectClaims {
        subject: raw
            .subject_claims
            .subject
            .unwrap_or_else(|| "sub".to_string()),
        email: raw
            .subject_claims
            .email
            .unwrap_or_else(|| "email".to_string()),
        roles: raw
            .subject_claims
            .roles
            .unwrap_or_else(|| "roles".to_string()),
        scopes: raw
            .subject_claims
            .scopes
            .unwrap_or_else(|| "scope".to_string()),
    };
    let role_hierarchy = raw
        .role_hierarchy
        .map(|raw| RoleHierarchy::compile(&at("role_hierarchy"), raw))
        .transpose()?;
    Ok(Provider {
        name,
        issuer: raw.issuer,
        audiences: raw.audiences.unwrap_or_default(),
        jwks,
        from_headers,
        from_cookies: raw.from_cookies,
        clock_skew_s: raw.clock_skew_s.unwrap_or(DEFAULT_CLOCK_SKEW_S),
        require_expiration: raw.require_expiration.unwrap_or(true),
        forward: raw.forward,
        claim_to_headers,
        subject_claims,
        role_hierarchy,
    })
}

/// `local_jwks` is a JWKS object, or a string holding one (the form many tools emit).
fn compile_local_jwks(path: &str, value: Value) -> Result<KeySet, ConfigError> {
    let parsed = match value {
        Value::String(text) => KeySet::parse(text.as_bytes()),
        Value::Object(_) => KeySet::from_value(value),
        _ => {
            return Err(ConfigError::new(
                path,
                "must be a JWKS object or a string holding one",
            ))
        }
    };
    let keys = parsed.map_err(|e| ConfigError::new(path, e.to_string()))?;
    if keys.is_empty() {
        return Err(ConfigError::new(path, "holds no usable signing key"));
    }
    Ok(keys)
}

fn compile_remote(
    path: &str,
    raw: raw::RemoteJwks,
    discovery: Option<(String, String)>,
) -> Result<RemoteJwks, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.cluster"),
            "must not be empty",
        ));
    }
    let (authority, request_path) = match (&raw.uri, &discovery) {
        (Some(uri), _) => split_uri(uri).ok_or_else(|| {
            ConfigError::new(
                format!("{path}.uri"),
                "must be an absolute http(s) URI with a host",
            )
        })?,
        (None, Some(_)) => (String::new(), String::new()),
        (None, None) => {
            return Err(ConfigError::new(
                format!("{path}.uri"),
                "missing field: the key set's URI (or \"discovery\": true on the provider)",
            ))
        }
    };
    let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_JWKS_TIMEOUT_MS);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err(ConfigError::new(
            format!("{path}.timeout_ms"),
            "must be 1..=60000",
        ));
    }
    let cache_duration_s = raw.cache_duration_s.unwrap_or(DEFAULT_JWKS_CACHE_S);
    if cache_duration_s == 0 {
        return Err(ConfigError::new(
            format!("{path}.cache_duration_s"),
            "must be at least 1",
        ));
    }
    Ok(RemoteJwks {
        cluster: raw.cluster,
        authority,
        path: request_path,
        timeout_ms,
        cache_duration_s,
        discovery,
    })
}
