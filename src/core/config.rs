//! Plugin configuration: the JSON users write (`raw`), checked once and compiled into the
//! immutable form the request path uses. Every error names the field path it is about.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::core::api_keys::ApiKeys;
use crate::core::authz::Enterprise;
use crate::core::backoff::Backoff;
use crate::core::client_ip::ClientIpSource;
use crate::core::glob::HostGlob;
use crate::core::jwks::KeySet;

const DEFAULT_CLOCK_SKEW_S: u64 = 60;
const DEFAULT_JWKS_TIMEOUT_MS: u64 = 2000;
const DEFAULT_JWKS_CACHE_S: u64 = 600;
const DEFAULT_IDENTITY_PREFIX: &str = "x-auth-";
const DEFAULT_REAUTH_MESSAGE: &str =
    "Your session has expired. Open {reauth_url} to sign in again, then retry.";

/// A configuration error with the path of the field it concerns (`jwt_providers.corp.issuer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

pub(crate) mod raw {
    //! The configuration exactly as written. Unknown keys are errors (typo detection).
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Config {
        #[serde(default)]
        pub jwt_providers: BTreeMap<String, Provider>,
        #[serde(default)]
        pub rules: Vec<Rule>,
        pub health_path: Option<String>,
        #[serde(default)]
        pub cors: Cors,
        #[serde(default)]
        pub identity_headers: IdentityHeaders,
        #[serde(default)]
        pub session: Session,
        pub api_keys: Option<ApiKeys>,
        pub opaque_tokens: Option<OpaqueTokens>,
        pub failed_auth_backoff: Option<FailedAuthBackoff>,
        pub client_ip: Option<ClientIp>,
        pub enterprise: Option<Enterprise>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Enterprise {
        pub cluster: String,
        pub authority: String,
        pub path: Option<String>,
        pub timeout_ms: Option<u64>,
        pub dialect: Option<String>,
        pub failure_mode: Option<crate::core::authz::FailureMode>,
        pub status_on_error: Option<u16>,
        pub cache: Option<EnterpriseCache>,
        pub max_response_bytes: Option<usize>,
        pub openfga: Option<OpenFga>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct EnterpriseCache {
        pub allow_ttl_s: Option<u64>,
        pub deny_ttl_s: Option<u64>,
        pub max_entries: Option<usize>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct OpenFga {
        pub store_id: String,
        pub authorization_model_id: Option<String>,
        pub user: String,
        pub relation: String,
        pub object: String,
    }

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

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FailedAuthBackoff {
        pub after_failures: Option<u32>,
        pub base_s: Option<u64>,
        pub max_s: Option<u64>,
        pub slots: Option<u32>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClientIp {
        pub from: String,
        pub trusted_hops: Option<u32>,
    }

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
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct RemoteJwks {
        pub cluster: String,
        pub uri: String,
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

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Rule {
        #[serde(rename = "match")]
        pub matcher: Match,
        #[serde(default)]
        pub public: bool,
        #[serde(default)]
        pub requires_any: Vec<String>,
        #[serde(default)]
        pub require_scopes: Vec<String>,
        #[serde(default)]
        pub require_roles: Vec<String>,
        pub session_reply: Option<SessionReply>,
        #[serde(default)]
        pub enterprise: bool,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Match {
        pub path: Option<String>,
        pub prefix: Option<String>,
        #[serde(default)]
        pub methods: Vec<String>,
        #[serde(default)]
        pub hosts: Vec<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Cors {
        pub bypass_preflight: Option<bool>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct IdentityHeaders {
        pub prefix: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Session {
        pub reauth_url: Option<String>,
        pub sandbox_status: Option<u16>,
        pub message: Option<String>,
        pub redirect_html: Option<bool>,
        pub hold_companion: Option<bool>,
    }
}

/// How a session-expired reply is shaped for the route's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionReply {
    OpenAi,
    Anthropic,
    #[default]
    Api,
    Browser,
}

/// What to do with a bearer token that is not a JWT (no two dots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OpaqueTokens {
    #[default]
    Reject,
    Enterprise,
}

/// The validated, compiled configuration. Immutable after `on_configure`.
#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    pub health_path: Option<String>,
    pub cors_bypass_preflight: bool,
    pub identity_prefix: String,
    pub session: Session,
    /// Every configured claim header (lowercase): removed from incoming requests.
    pub claim_header_names: Vec<String>,
    /// Every header a credential may arrive in: removed from a request handed to the
    /// `body_hold` companion, so not even a misplaced companion lets one through.
    pub credential_header_names: Vec<String>,
    pub api_keys: Option<ApiKeys>,
    pub opaque_tokens: OpaqueTokens,
    pub backoff: Option<Backoff>,
    pub client_ip: ClientIpSource,
    pub enterprise: Option<Enterprise>,
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
}

#[derive(Debug)]
pub enum JwksSource {
    Local(KeySet),
    Remote(RemoteJwks),
}

#[derive(Debug, Clone)]
pub struct RemoteJwks {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub cache_duration_s: u64,
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

#[derive(Debug)]
pub struct Rule {
    pub path: Option<String>,
    pub prefix: Option<String>,
    pub methods: Vec<String>,
    pub hosts: Vec<HostGlob>,
    pub public: bool,
    pub requires: Vec<Requirement>,
    pub require_scopes: Vec<String>,
    pub require_roles: Vec<String>,
    pub session_reply: SessionReply,
    /// Ask the enterprise authorization service once the credential is valid.
    pub enterprise: bool,
}

/// One credential a rule accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Jwt(usize),
    ApiKey,
    OpaqueToken,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub reauth_url: Option<String>,
    pub sandbox_status: u16,
    pub message: String,
    /// `api` routes answer a browser's HTML navigation with the `browser` redirect.
    pub redirect_html: bool,
    /// A `body_hold` companion filter follows authgate: LLM-shaped replies may wait for the
    /// request body. Without it they are built at the headers, from `Accept` and defaults.
    pub hold_companion: bool,
}

/// What a plugin instance is: the gate itself, or the companion that holds requests the gate
/// marked (see `Session::hold_companion`).
#[derive(Debug)]
pub enum Plugin {
    Gate(Box<Config>),
    BodyHold,
}

/// The request header the gate adds to a request whose reply waits for its body; the companion
/// holds such requests. The gate removes it from every request it passes, so no client can set it.
pub const HOLD_HEADER: &str = "x-authgate-hold";

impl Plugin {
    /// `{"role": "body_hold"}` is the companion; anything else is the gate's configuration.
    pub fn parse(json: &[u8]) -> Result<Plugin, ConfigError> {
        if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(json) {
            if let Some(role) = map.get("role") {
                if role != "body_hold" {
                    return Err(ConfigError::new("role", "the only role is \"body_hold\""));
                }
                if let Some(other) = map.keys().find(|k| *k != "role") {
                    return Err(ConfigError::new(
                        other.as_str(),
                        "a body_hold companion takes no other settings",
                    ));
                }
                return Ok(Plugin::BodyHold);
            }
        }
        Config::parse(json).map(|config| Plugin::Gate(Box::new(config)))
    }
}

impl Config {
    /// Whether decisions need the client's address (the shell then reads it per request).
    pub fn needs_client_ip(&self) -> bool {
        self.backoff.is_some() || self.enterprise.is_some()
    }

    /// Parses and validates the plugin configuration JSON.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let mut deserializer = serde_json::Deserializer::from_slice(json);
        let raw: raw::Config =
            serde_path_to_error::deserialize(&mut deserializer).map_err(path_error)?;
        deserializer
            .end()
            .map_err(|e| ConfigError::new("", e.to_string()))?;
        compile(raw)
    }
}

/// serde reports a missing field at its parent; name the field itself so users find it.
fn path_error(err: serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let mut path = err.path().to_string();
    if path == "." {
        path.clear();
    }
    let message = err.inner().to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        path = if path.is_empty() {
            field.to_string()
        } else {
            format!("{path}.{field}")
        };
    }
    let message = strip_serde_position(&message);
    ConfigError::new(path, message)
}

/// serde_json appends " at line L column C", which means nothing for a one-line plugin string.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn compile(raw: raw::Config) -> Result<Config, ConfigError> {
    let mut providers = Vec::with_capacity(raw.jwt_providers.len());
    for (name, provider) in raw.jwt_providers {
        providers.push(compile_provider(name, provider)?);
    }
    let identity_prefix = raw
        .identity_headers
        .prefix
        .unwrap_or_else(|| DEFAULT_IDENTITY_PREFIX.to_string())
        .to_ascii_lowercase();
    if identity_prefix.len() < 2 || !is_header_name(&identity_prefix) {
        return Err(ConfigError::new(
            "identity_headers.prefix",
            "must be a header-name prefix of at least two characters, e.g. \"x-auth-\"",
        ));
    }
    let api_keys = match raw.api_keys {
        Some(keys) => Some(ApiKeys::compile(keys, &identity_prefix)?),
        None => None,
    };
    let enterprise = raw.enterprise.map(Enterprise::compile).transpose()?;
    let opaque_tokens = raw.opaque_tokens.unwrap_or_default();
    if opaque_tokens == OpaqueTokens::Enterprise && enterprise.is_none() {
        return Err(ConfigError::new(
            "opaque_tokens",
            "\"enterprise\" needs an enterprise section: only the authorization service can judge them",
        ));
    }
    let credentials = Credentials {
        providers: &providers,
        api_keys: api_keys.is_some(),
        opaque_tokens,
        enterprise: enterprise.is_some(),
    };
    let mut rules = Vec::with_capacity(raw.rules.len());
    for (index, rule) in raw.rules.into_iter().enumerate() {
        rules.push(compile_rule(
            &format!("rules[{index}]"),
            rule,
            &credentials,
        )?);
    }
    let health_path = match raw.health_path {
        Some(path) if !path.starts_with('/') => {
            return Err(ConfigError::new("health_path", "must start with '/'"))
        }
        other => other,
    };
    let session = compile_session(raw.session)?;
    let mut claim_header_names: Vec<String> = providers
        .iter()
        .flat_map(|p| p.claim_to_headers.iter().map(|(_, header)| header.clone()))
        .collect();
    claim_header_names.sort();
    claim_header_names.dedup();
    let mut credential_header_names: Vec<String> = ["authorization", "x-api-key"]
        .iter()
        .map(|h| h.to_string())
        .chain(
            providers
                .iter()
                .flat_map(|p| p.from_headers.iter().map(|h| h.name.clone())),
        )
        .chain(api_keys.iter().flat_map(|k| k.headers.iter().cloned()))
        .chain(
            providers
                .iter()
                .any(|p| !p.from_cookies.is_empty())
                .then(|| "cookie".to_string()),
        )
        .collect();
    credential_header_names.sort();
    credential_header_names.dedup();
    Ok(Config {
        providers,
        rules,
        credential_header_names,
        health_path,
        cors_bypass_preflight: raw.cors.bypass_preflight.unwrap_or(true),
        identity_prefix,
        session,
        claim_header_names,
        api_keys,
        opaque_tokens,
        backoff: raw.failed_auth_backoff.map(Backoff::compile).transpose()?,
        client_ip: ClientIpSource::compile(raw.client_ip)?,
        enterprise,
    })
}

/// The credentials configured, for checking what rules ask for.
struct Credentials<'a> {
    providers: &'a [Provider],
    api_keys: bool,
    opaque_tokens: OpaqueTokens,
    enterprise: bool,
}

fn compile_provider(name: String, raw: raw::Provider) -> Result<Provider, ConfigError> {
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
    if raw.discovery == Some(true) {
        return Err(ConfigError::new(
            at("discovery"),
            "OpenID discovery is not supported yet; set remote_jwks.uri to the jwks_uri",
        ));
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
        (Some(local), None) => JwksSource::Local(compile_local_jwks(&at("local_jwks"), local)?),
        (None, Some(remote)) => JwksSource::Remote(compile_remote(&at("remote_jwks"), remote)?),
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

fn compile_remote(path: &str, raw: raw::RemoteJwks) -> Result<RemoteJwks, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.cluster"),
            "must not be empty",
        ));
    }
    let (authority, request_path) = split_uri(&raw.uri).ok_or_else(|| {
        ConfigError::new(
            format!("{path}.uri"),
            "must be an absolute http(s) URI with a host",
        )
    })?;
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
    })
}

/// Splits `https://host[:port]/path?q` into (`host[:port]`, `/path?q`).
fn split_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri
        .strip_prefix("https://")
        .or_else(|| uri.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        return None;
    }
    Some((authority.to_string(), path.to_string()))
}

fn compile_rule(
    path: &str,
    raw: raw::Rule,
    credentials: &Credentials<'_>,
) -> Result<Rule, ConfigError> {
    let matcher = raw.matcher;
    if matcher.path.is_some() && matcher.prefix.is_some() {
        return Err(ConfigError::new(
            format!("{path}.match"),
            "set path or prefix, not both",
        ));
    }
    for (field, value) in [("path", &matcher.path), ("prefix", &matcher.prefix)] {
        if let Some(value) = value {
            if !value.starts_with('/') {
                return Err(ConfigError::new(
                    format!("{path}.match.{field}"),
                    "must start with '/'",
                ));
            }
        }
    }
    let mut methods = Vec::with_capacity(matcher.methods.len());
    for (i, method) in matcher.methods.iter().enumerate() {
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(ConfigError::new(
                format!("{path}.match.methods[{i}]"),
                "not an HTTP method",
            ));
        }
        methods.push(method.to_ascii_uppercase());
    }
    let mut hosts = Vec::with_capacity(matcher.hosts.len());
    for (i, host) in matcher.hosts.iter().enumerate() {
        let glob = HostGlob::new(host)
            .map_err(|e| ConfigError::new(format!("{path}.match.hosts[{i}]"), e))?;
        hosts.push(glob);
    }
    if raw.public && !raw.requires_any.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.requires_any"),
            "a public rule requires no credential; remove requires_any or public",
        ));
    }
    if !raw.public && raw.requires_any.is_empty() {
        return Err(ConfigError::new(
            format!("{path}.requires_any"),
            "missing field: list the credentials this rule accepts, or set \"public\": true",
        ));
    }
    if raw.enterprise && raw.public {
        return Err(ConfigError::new(
            format!("{path}.enterprise"),
            "a public rule asks nobody; remove enterprise or public",
        ));
    }
    if raw.enterprise && !credentials.enterprise {
        return Err(ConfigError::new(
            format!("{path}.enterprise"),
            "needs an enterprise section naming the authorization service's cluster",
        ));
    }
    if raw.public && !(raw.require_scopes.is_empty() && raw.require_roles.is_empty()) {
        return Err(ConfigError::new(
            format!("{path}.public"),
            "a public rule cannot require scopes or roles",
        ));
    }
    for (field, list) in [
        ("require_scopes", &raw.require_scopes),
        ("require_roles", &raw.require_roles),
    ] {
        if let Some(i) = list
            .iter()
            .position(|v| v.is_empty() || v.contains(char::is_whitespace))
        {
            return Err(ConfigError::new(
                format!("{path}.{field}[{i}]"),
                "must be a single non-empty name without spaces",
            ));
        }
    }
    let mut requires = Vec::with_capacity(raw.requires_any.len());
    for (i, requirement) in raw.requires_any.iter().enumerate() {
        let at = format!("{path}.requires_any[{i}]");
        let parsed = parse_requirement(&at, requirement, credentials)?;
        if requires.contains(&parsed) {
            return Err(ConfigError::new(at, "listed twice"));
        }
        requires.push(parsed);
    }
    Ok(Rule {
        path: matcher.path,
        prefix: matcher.prefix,
        methods,
        hosts,
        public: raw.public,
        requires,
        require_scopes: raw.require_scopes,
        require_roles: raw.require_roles,
        session_reply: raw.session_reply.unwrap_or_default(),
        enterprise: raw.enterprise,
    })
}

fn parse_requirement(
    at: &str,
    requirement: &str,
    credentials: &Credentials<'_>,
) -> Result<Requirement, ConfigError> {
    let providers = credentials.providers;
    match requirement {
        "api_key" if credentials.api_keys => return Ok(Requirement::ApiKey),
        "api_key" => {
            return Err(ConfigError::new(
                at,
                "\"api_key\" needs an api_keys section listing the keys",
            ))
        }
        "opaque_token" if credentials.opaque_tokens == OpaqueTokens::Enterprise => {
            return Ok(Requirement::OpaqueToken)
        }
        "opaque_token" => {
            return Err(ConfigError::new(
                at,
                "\"opaque_token\" needs \"opaque_tokens\": \"enterprise\" (they are rejected by default)",
            ))
        }
        _ => {}
    }
    let Some(name) = requirement.strip_prefix("jwt:") else {
        return Err(ConfigError::new(
            at,
            format!(
                "unknown credential {requirement:?}; expected \"jwt:<provider>\", \"api_key\" \
                 or \"opaque_token\""
            ),
        ));
    };
    if let Some(index) = providers.iter().position(|p| p.name == name) {
        return Ok(Requirement::Jwt(index));
    }
    let known: Vec<&str> = providers.iter().map(|p| p.name.as_str()).collect();
    let hint = match providers.iter().find(|p| p.name.eq_ignore_ascii_case(name)) {
        Some(p) => format!(
            " (provider names are case-sensitive: did you mean {:?}?)",
            p.name
        ),
        None => String::new(),
    };
    Err(ConfigError::new(
        at,
        format!("unknown provider {name:?}{hint}; known providers: {known:?}"),
    ))
}

fn compile_session(raw: raw::Session) -> Result<Session, ConfigError> {
    if let Some(url) = &raw.reauth_url {
        if split_uri(url).is_none() {
            return Err(ConfigError::new(
                "session.reauth_url",
                "must be an absolute http(s) URL",
            ));
        }
    }
    let sandbox_status = raw.sandbox_status.unwrap_or(200);
    if !(200..=599).contains(&sandbox_status) {
        return Err(ConfigError::new(
            "session.sandbox_status",
            "must be an HTTP status",
        ));
    }
    Ok(Session {
        reauth_url: raw.reauth_url,
        sandbox_status,
        message: raw
            .message
            .unwrap_or_else(|| DEFAULT_REAUTH_MESSAGE.to_string()),
        redirect_html: raw.redirect_html.unwrap_or(false),
        hold_companion: raw.hold_companion.unwrap_or(false),
    })
}

/// RFC 7230 token characters, lowercase only (Envoy lowercases header names).
pub(crate) fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.!#$%&'*+^`|~".contains(&b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plugin configuration shipped in envoy/envoy.yaml (a YAML block scalar) must load.
    #[test]
    fn shipped_envoy_config_is_valid() {
        let yaml = include_str!("../../envoy/envoy.yaml");
        let start = yaml.find("value: |").expect("a plugin configuration block");
        let block: Vec<&str> = yaml[start..]
            .lines()
            .skip(1)
            .take_while(|line| line.trim_start().starts_with(['{', '}', '"', '[', ']']))
            .collect();
        let json = block.join("\n");
        let config = Config::parse(json.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{json}"));
        assert!(config.enterprise.is_some() && config.api_keys.is_some());
    }
}
