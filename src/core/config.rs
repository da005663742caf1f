//! Plugin configuration: the JSON users write (`raw`), checked once and compiled into the
//! immutable form the request path uses. Every error names the field path it is about.

use serde_json::Value;

use crate::core::authz::Enterprise;
use crate::core::credentials::api_keys::ApiKeys;
use crate::core::credentials::OpaqueTokens;
use crate::core::jwt::provider::{compile_provider, Provider};
use crate::core::login::config::Login;
use crate::core::policy::backoff::Backoff;
use crate::core::policy::client_ip::ClientIpSource;
use crate::core::policy::paths::Paths;
use crate::core::policy::roles::RoleHierarchy;
use crate::core::policy::rules::{compile_rule, Credentials, Rule};
use crate::core::replies::session::{compile_session, Session};
use crate::core::syntax::{folded_header_name, folded_starts_with, is_header_name};

pub use crate::core::config_error::ConfigError;

const DEFAULT_IDENTITY_PREFIX: &str = "x-auth-";

pub(crate) mod raw {
    //! The configuration exactly as written, each section in the raw form its concern owns.
    //! Unknown keys are errors (typo detection).
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use crate::core::authz::raw::Enterprise;
    use crate::core::credentials::api_keys::raw::ApiKeys;
    use crate::core::credentials::OpaqueTokens;
    use crate::core::jwt::provider::raw::Provider;
    use crate::core::policy::backoff::raw::FailedAuthBackoff;
    use crate::core::policy::client_ip::raw::ClientIp;
    use crate::core::policy::paths::raw::Paths;
    use crate::core::policy::rules::raw::Rule;
    use crate::core::replies::session::raw::Session;

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
        pub paths: Option<Paths>,
        #[serde(default)]
        pub limits: Limits,
        pub role_hierarchy: Option<BTreeMap<String, Vec<String>>>,
        pub login: Option<crate::core::login::config::raw::Login>,
        #[serde(default)]
        pub protected_resources: Vec<crate::core::policy::resources::raw::Resource>,
        #[serde(default)]
        pub mcp: Mcp,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Mcp {
        pub max_body_bytes: Option<usize>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Limits {
        pub max_paused_requests: Option<usize>,
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
}

/// The validated, compiled configuration. Immutable after `on_configure`.
#[derive(Debug)]
pub struct Config {
    pub providers: Vec<Provider>,
    pub rules: Vec<Rule>,
    /// Some rule or protected resource is limited to hosts: the host then decides, and the
    /// request goes upstream with the host it was judged by (see `engine::rewrite`).
    pub host_sensitive: bool,
    pub health_path: Option<String>,
    pub cors_bypass_preflight: bool,
    pub identity_prefix: String,
    pub session: Session,
    /// Every configured claim header (lowercase): removed from incoming requests.
    pub claim_header_names: Vec<String>,
    /// Every name besides the identity prefix that authgate or the service may set upstream
    /// (claim headers, `enterprise.upstream_headers`, the hold mark), with `_` as `-`.
    reserved_header_names: Vec<String>,
    folded_identity_prefix: String,
    /// Every header a credential may arrive in: removed from a request handed to the
    /// `body_hold` companion, so not even a misplaced companion lets one through.
    pub credential_header_names: Vec<String>,
    pub api_keys: Option<ApiKeys>,
    pub opaque_tokens: OpaqueTokens,
    pub backoff: Option<Backoff>,
    pub client_ip: ClientIpSource,
    pub enterprise: Option<Enterprise>,
    /// How request paths are normalised before rules see them.
    pub paths: Paths,
    /// Requests one VM keeps paused (waiting for keys or an authorization answer) at once;
    /// beyond it a request is answered 503 `overloaded` at once.
    pub max_paused_requests: usize,
    /// Sign-in at the gateway (OpenID Connect), when configured.
    pub login: Option<Login>,
    /// OAuth protected resources (RFC 9728): metadata documents and challenges.
    pub resources: crate::core::policy::resources::Resources,
    /// The largest body read for `match.mcp` rules (else 413 with a JSON-RPC error).
    pub mcp_max_body_bytes: usize,
}

/// Paused requests per VM unless `limits.max_paused_requests` says otherwise: far above what
/// one worker's keys fetch or authorization call ever holds, far below what exhausts its memory.
const DEFAULT_MAX_PAUSED_REQUESTS: usize = 1024;

/// `mcp.max_body_bytes` unless set: Envoy's default buffer limit, which a held body must stay
/// under (a held body past it is flow-controlled, never read to its end).
const DEFAULT_MCP_MAX_BODY_BYTES: usize = 1 << 20;

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

/// The `:path` of a request marked for the companion: the shipped Envoy configurations answer it
/// 503 with a direct response, so a marked request that got past a missing or misplaced
/// companion reaches no upstream.
pub const HELD_PATH: &str = "/.authgate/held";

/// The `:authority` of a request marked for the companion (a reserved `.invalid` name): Envoy
/// routes it to the catch-all `*` virtual host, where the `HELD_PATH` route is, or to none at
/// all; never to a host's own virtual host, whose routes may not answer the held path.
pub const HELD_AUTHORITY: &str = "authgate-held.invalid";

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
    /// Whether a client's header is one authgate or the service may set upstream (under any
    /// spelling an upstream reads the same: case, `_` for `-`). Such a header never passes.
    pub fn is_reserved_header(&self, name: &str) -> bool {
        folded_starts_with(name, &self.folded_identity_prefix)
            || self
                .reserved_header_names
                .iter()
                .any(|reserved| reserved.len() == name.len() && folded_starts_with(name, reserved))
    }

    /// Whether decisions need the client's address (the shell then reads it per request).
    pub fn needs_client_ip(&self) -> bool {
        self.backoff.is_some() || self.enterprise.is_some()
    }

    /// Parses and validates the plugin configuration JSON.
    pub fn parse(json: &[u8]) -> Result<Config, ConfigError> {
        let value: serde_json::Value = serde_json::from_slice(json)
            .map_err(|e| ConfigError::new("", strip_serde_position(&e.to_string())))?;
        let raw: raw::Config = serde_path_to_error::deserialize(value).map_err(path_error)?;
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

/// A `login` rule limited to hosts must be on the gateway's own host (the session cookie is
/// host-only) or on hosts `cookie.domain` covers: elsewhere the cookie never arrives and a
/// browser would be sent to sign in forever.
fn check_login_hosts(login: &Login, rules: &[Rule]) -> Result<(), ConfigError> {
    let own = crate::core::syntax::split_uri(&login.public_url)
        .map(|(authority, _)| crate::core::syntax::host_of(&authority))
        .unwrap_or_default();
    let domain = login
        .cookie_domain
        .as_deref()
        .map(|d| d.trim_start_matches('.').to_ascii_lowercase());
    for (index, rule) in rules.iter().enumerate() {
        if !rule.login {
            continue;
        }
        for (i, glob) in rule.hosts.iter().enumerate() {
            let pattern = glob.pattern();
            let covered = glob.matches_host(&own)
                || domain.as_ref().is_some_and(|d| {
                    let rest = pattern.trim_start_matches('*').trim_start_matches('.');
                    rest == *d || rest.ends_with(&format!(".{d}"))
                });
            if !covered {
                return Err(ConfigError::new(
                    format!("rules[{index}].match.hosts[{i}]"),
                    format!(
                        "a login rule on {pattern:?}: the session cookie is for {own:?}; set login.cookie.domain to cover it"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// serde_json appends " at line L column C", which means nothing for a one-line plugin string.
fn strip_serde_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message.to_string(),
    }
}

fn compile(raw: raw::Config) -> Result<Config, ConfigError> {
    let role_hierarchy = raw
        .role_hierarchy
        .map(|raw| RoleHierarchy::compile("role_hierarchy", raw))
        .transpose()?;
    let mut providers = Vec::with_capacity(raw.jwt_providers.len());
    for (name, provider) in raw.jwt_providers {
        let mut provider = compile_provider(name, provider)?;
        // A provider's own hierarchy replaces the top-level one.
        if provider.role_hierarchy.is_none() {
            provider.role_hierarchy.clone_from(&role_hierarchy);
        }
        providers.push(provider);
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
    let login = raw
        .login
        .map(|login| crate::core::login::config::compile(login, &providers))
        .transpose()?;
    if let (Some(_), Some(enterprise)) = (&login, &enterprise) {
        if enterprise.gateway_key.is_none() {
            return Err(ConfigError::new(
                "enterprise.gateway_key",
                "with a login section, agent re-authentication renews sessions through the service: give the key it expects",
            ));
        }
    }
    let credentials = Credentials {
        session: login.is_some(),
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
    if let Some(login) = &login {
        check_login_hosts(login, &rules)?;
    }
    let health_path = match raw.health_path {
        Some(path) if !path.starts_with('/') => {
            return Err(ConfigError::new("health_path", "must start with '/'"))
        }
        other => other,
    };
    let session = compile_session(raw.session)?;
    if let Some(index) = rules.iter().position(|r| r.mcp.is_some()) {
        if !session.hold_companion {
            return Err(ConfigError::new(
                format!("rules[{index}].match.mcp"),
                "MCP rules read the JSON-RPC body, which needs \"session\": {\"hold_companion\": true} and the body_hold companion after authgate",
            ));
        }
    }
    let mcp_max_body_bytes = match raw.mcp.max_body_bytes {
        None => DEFAULT_MCP_MAX_BODY_BYTES,
        Some(n @ 1024..=16_777_216) => n,
        Some(_) => {
            return Err(ConfigError::new(
                "mcp.max_body_bytes",
                "must be between 1024 and 16777216 (and within Envoy's buffer limit)",
            ))
        }
    };
    let mut claim_header_names: Vec<String> = providers
        .iter()
        .flat_map(|p| p.claim_to_headers.iter().map(|(_, header)| header.clone()))
        .collect();
    claim_header_names.sort();
    claim_header_names.dedup();
    let folded_prefix = folded_header_name(&identity_prefix);
    for provider in &providers {
        let name = &provider.name;
        for (i, (_, header)) in provider.claim_to_headers.iter().enumerate() {
            if folded_header_name(header).starts_with(&folded_prefix) || header == HOLD_HEADER {
                return Err(ConfigError::new(
                    format!("jwt_providers.{name}.claim_to_headers[{i}].header"),
                    format!("{header:?} is authgate's own (identity prefix {identity_prefix:?})"),
                ));
            }
        }
    }
    let mut reserved_header_names: Vec<String> = claim_header_names
        .iter()
        .chain(enterprise.iter().flat_map(|e| e.upstream_headers.iter()))
        .map(|name| folded_header_name(name))
        .chain([HOLD_HEADER.to_string()])
        .collect();
    reserved_header_names.sort();
    reserved_header_names.dedup();
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
        .chain(login.is_some().then(|| "cookie".to_string()))
        .collect();
    credential_header_names.sort();
    credential_header_names.dedup();
    let resources = crate::core::policy::resources::Resources::compile(raw.protected_resources)?;
    Ok(Config {
        folded_identity_prefix: folded_prefix,
        providers,
        host_sensitive: rules.iter().any(|r| !r.hosts.is_empty()) || resources.any_hosts(),
        rules,
        credential_header_names,
        health_path,
        cors_bypass_preflight: raw.cors.bypass_preflight.unwrap_or(true),
        identity_prefix,
        session,
        claim_header_names,
        reserved_header_names,
        api_keys,
        opaque_tokens,
        backoff: raw.failed_auth_backoff.map(Backoff::compile).transpose()?,
        client_ip: ClientIpSource::compile(raw.client_ip)?,
        enterprise,
        paths: Paths::compile(raw.paths),
        login,
        resources,
        mcp_max_body_bytes,
        max_paused_requests: match raw.limits.max_paused_requests {
            None => DEFAULT_MAX_PAUSED_REQUESTS,
            Some(n @ 1..=65_536) => n,
            Some(_) => {
                return Err(ConfigError::new(
                    "limits.max_paused_requests",
                    "must be between 1 and 65536",
                ))
            }
        },
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

    fn error_path(json: serde_json::Value) -> String {
        match Config::parse(json.to_string().as_bytes()) {
            Ok(_) => "loaded".to_string(),
            Err(error) => error.path,
        }
    }

    fn with(claim_header: &str, upstream_headers: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "jwt_providers": {"corp": {"issuer": "https://idp.test",
                "local_jwks": {"keys": [{"kty": "EC", "crv": "P-256", "kid": "k",
                    "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                    "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]},
                "claim_to_headers": [{"claim": "tenant", "header": claim_header}]}},
            "rules": [],
            "enterprise": {"cluster": "authz", "authority": "authz.internal",
                           "upstream_headers": upstream_headers}
        })
    }

    /// Names that would let a client's header pass as authgate's, or that belong to Envoy, are
    /// configuration errors naming the field.
    #[test]
    fn header_names_that_would_open_a_seam_are_refused() {
        let ok = serde_json::json!(["x-tenant-id", "x-auth-email"]);
        assert_eq!(error_path(with("x-tenant", ok.clone())), "loaded");
        let claim = "jwt_providers.corp.claim_to_headers[0].header";
        for bad in [
            "host",
            "Cookie",
            "content-length",
            "te",
            ":path",
            "x-auth-tenant",
            "X_Auth_Tenant",
            "x-authgate-hold",
        ] {
            assert_eq!(error_path(with(bad, ok.clone())), claim, "{bad}");
        }
        for (names, at) in [
            (
                serde_json::json!(["x_tenant"]),
                "enterprise.upstream_headers[0]",
            ),
            (
                serde_json::json!(["x-ok", "transfer-encoding"]),
                "enterprise.upstream_headers[1]",
            ),
            (
                serde_json::json!(["authorization"]),
                "enterprise.upstream_headers[0]",
            ),
            (
                serde_json::json!([":authority"]),
                "enterprise.upstream_headers[0]",
            ),
        ] {
            assert_eq!(error_path(with("x-tenant", names.clone())), at, "{names}");
        }
    }

    #[test]
    fn reserved_headers_are_recognised_in_any_spelling() {
        let config = Config::parse(
            with("x-tenant", serde_json::json!(["x-authz-subject"]))
                .to_string()
                .as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        for name in [
            "x-auth-email",
            "x_auth_email",
            "X_AUTH_ROLES",
            "x-tenant",
            "x_tenant",
            "x-authz-subject",
            "x_authz_subject",
            "x-authgate-hold",
            "x_authgate_hold",
        ] {
            assert!(config.is_reserved_header(name), "{name}");
        }
        for name in ["x-author", "x-tenants", "authorization", "x-authz"] {
            assert!(!config.is_reserved_header(name), "{name}");
        }
    }
}
