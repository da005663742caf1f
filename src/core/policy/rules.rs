//! The rules: what each matches (path, prefix, methods, hosts) and what it demands. The first
//! rule that matches a request decides it.

use crate::core::config_error::ConfigError;
use crate::core::credentials::{OpaqueTokens, Requirement};
use crate::core::jwt::provider::Provider;
use crate::core::policy::glob::{HostGlob, NameGlob};
use crate::core::policy::mcp::{Call, McpMatch};
use crate::core::policy::paths;
use crate::core::replies::session::SessionReply;
use crate::core::request::Request;

pub mod raw {
    //! A rule exactly as written.
    use serde::Deserialize;

    use crate::core::replies::session::SessionReply;

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
        #[serde(default)]
        pub login: bool,
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
        pub mcp: Option<Mcp>,
    }

    /// `match.mcp`: JSON-RPC methods (exact) and tool, prompt or resource names (globs).
    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Mcp {
        #[serde(default)]
        pub methods: Vec<String>,
        #[serde(default)]
        pub names: Vec<String>,
    }
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
    /// A browser navigating without a credential is sent to sign in.
    pub login: bool,
    /// Matches only MCP requests whose JSON-RPC call this selects (the body is read first).
    pub mcp: Option<McpMatch>,
}

/// The credentials configured, for checking what rules ask for.
pub(crate) struct Credentials<'a> {
    pub providers: &'a [Provider],
    pub api_keys: bool,
    pub opaque_tokens: OpaqueTokens,
    pub enterprise: bool,
    /// A `login` section is configured: `session` is a credential.
    pub session: bool,
}

pub(crate) fn compile_rule(
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
            let at = format!("{path}.match.{field}");
            if !value.starts_with('/') {
                return Err(ConfigError::new(at, "must start with '/'"));
            }
            paths::check_pattern(&at, value)?;
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
    let mcp = matcher
        .mcp
        .map(|raw| compile_mcp(&format!("{path}.match.mcp"), raw))
        .transpose()?;
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
    if raw.login && !requires.contains(&Requirement::Session) {
        return Err(ConfigError::new(
            format!("{path}.login"),
            "sends browsers to sign in, so \"session\" must be in requires_any",
        ));
    }
    Ok(Rule {
        mcp,
        login: raw.login,
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

fn compile_mcp(at: &str, raw: raw::Mcp) -> Result<McpMatch, ConfigError> {
    if let Some(i) = raw
        .methods
        .iter()
        .position(|m| m.is_empty() || m.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(ConfigError::new(
            format!("{at}.methods[{i}]"),
            "a JSON-RPC method name such as \"tools/call\"",
        ));
    }
    let mut names = Vec::with_capacity(raw.names.len());
    for (i, name) in raw.names.iter().enumerate() {
        names.push(
            NameGlob::new(name).map_err(|e| ConfigError::new(format!("{at}.names[{i}]"), e))?,
        );
    }
    Ok(McpMatch {
        methods: raw.methods,
        names,
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
        "session" if credentials.session => return Ok(Requirement::Session),
        "session" => {
            return Err(ConfigError::new(
                at,
                "\"session\" needs a login section (sign-in at the gateway)",
            ))
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

/// The index of the rule that decides this request (first match), if any.
pub fn matching_rule(rules: &[Rule], request: &Request<'_>) -> Option<usize> {
    rules.iter().position(|rule| rule_matches(rule, request))
}

/// Whether `rule` decides an MCP request's call (None: the request carries none, e.g. it has no
/// body): a rule without `match.mcp` matches as `rule_matches` says; one with it, only a call it
/// selects.
pub fn rule_matches_call(rule: &Rule, request: &Request<'_>, call: Option<&Call>) -> bool {
    let selected = match (&rule.mcp, call) {
        (None, _) => true,
        (Some(mcp), Some(call)) => mcp.matches(call),
        (Some(_), None) => false,
    };
    selected && rule_matches(rule, request)
}

/// Whether `rule` matches the request, `match.mcp` aside: its (normalised) path, its method (`HEAD` is matched as
/// `GET`, which it is to every server), its host.
pub fn rule_matches(rule: &Rule, request: &Request<'_>) -> bool {
    let path = request.path();
    if rule.path.as_deref().is_some_and(|p| p != path) {
        return false;
    }
    if rule.prefix.as_deref().is_some_and(|p| !path.starts_with(p)) {
        return false;
    }
    let method = request.method();
    if !rule.methods.is_empty()
        && !rule
            .methods
            .iter()
            .any(|m| m == method || (method == "HEAD" && m == "GET"))
    {
        return false;
    }
    if rule.hosts.is_empty() {
        return true;
    }
    let host = request.host();
    rule.hosts.iter().any(|h| h.matches_host(&host))
}
