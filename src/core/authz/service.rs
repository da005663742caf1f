//! The enterprise authorization service: its configuration, the request authgate sends (dialect
//! "authgate" or "openfga") and how its answer is read. Raw credentials never leave: only their
//! SHA-256.

use std::net::IpAddr;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::core::authz::template::Template;
use crate::core::config_error::ConfigError;
use crate::core::credentials::Kind;
use crate::core::identity::Identity;
use crate::core::policy::mcp::Call;
use crate::core::syntax::{is_header_name, is_protected_header};

pub mod raw {
    //! The enterprise section exactly as written.
    use serde::Deserialize;

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
        pub upstream_headers: Option<Vec<String>>,
        pub expose_reason: Option<bool>,
        pub renew_path: Option<String>,
        pub gateway_key: Option<String>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct EnterpriseCache {
        pub allow_ttl_s: Option<u64>,
        pub deny_ttl_s: Option<u64>,
        pub max_entries: Option<usize>,
        pub max_stale_s: Option<u64>,
        pub evict_on_upstream: Option<Vec<u16>>,
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
}

const DEFAULT_PATH: &str = "/api/authorize";
const DEFAULT_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_ALLOW_TTL_S: u64 = 60;
const DEFAULT_DENY_TTL_S: u64 = 10;
const DEFAULT_MAX_ENTRIES: usize = 10_000;
const DEFAULT_MAX_STALE_S: u64 = 3_600;
const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// Headers from the service beyond this many, or longer than this, are dropped.
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 4096;
const MAX_REASON: usize = 256;

#[derive(Debug, Clone)]
pub struct Enterprise {
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub dialect: Dialect,
    pub failure_mode: FailureMode,
    pub status_on_error: u16,
    pub allow_ttl_s: u64,
    pub deny_ttl_s: u64,
    pub max_entries: usize,
    pub max_response_bytes: usize,
    /// The only header names the service may set upstream (lowercase); a client's copies of
    /// them are removed from every request.
    pub upstream_headers: Vec<String>,
    /// `allow_stale` serves an allow at most this long after it expired.
    pub max_stale_s: u64,
    /// A deny's `reason` reaches the client (else a generic message does).
    pub expose_reason: bool,
    /// Where a signed-in owner's renewal of an agent session is posted (sign-in).
    pub renew_path: String,
    /// Sent as `x-authgate-gateway-key` on renewal calls: the service renews only for the
    /// gateway.
    pub gateway_key: Option<String>,
    /// Upstream statuses (401, 403) that drop every cached decision of the request's credential.
    pub evict_on_upstream: Vec<u16>,
}

#[derive(Debug, Clone)]
pub enum Dialect {
    Authgate,
    OpenFga(OpenFga),
}

#[derive(Debug, Clone)]
pub struct OpenFga {
    pub authorization_model_id: Option<String>,
    pub user: Template,
    pub relation: Template,
    pub object: Template,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    Deny,
    Allow,
    AllowStale,
}

impl Enterprise {
    pub fn compile(raw: raw::Enterprise) -> Result<Enterprise, ConfigError> {
        let at = |field: &str| format!("enterprise.{field}");
        if raw.cluster.is_empty() {
            return Err(ConfigError::new(at("cluster"), "must not be empty"));
        }
        if raw.authority.is_empty() || raw.authority.contains(['/', ' ', '@']) {
            return Err(ConfigError::new(
                at("authority"),
                "must be a host name (with an optional port)",
            ));
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS);
        if !(1..=60_000).contains(&timeout_ms) {
            return Err(ConfigError::new(at("timeout_ms"), "must be 1..=60000"));
        }
        let status_on_error = raw.status_on_error.unwrap_or(503);
        if !(400..=599).contains(&status_on_error) {
            return Err(ConfigError::new(
                at("status_on_error"),
                "must be an HTTP error status (400..=599)",
            ));
        }
        let cache = raw.cache.unwrap_or_default();
        let max_entries = cache.max_entries.unwrap_or(DEFAULT_MAX_ENTRIES);
        if !(1..=1_000_000).contains(&max_entries) {
            return Err(ConfigError::new(
                at("cache.max_entries"),
                "must be 1..=1000000",
            ));
        }
        let max_response_bytes = raw.max_response_bytes.unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if !(64..=1 << 20).contains(&max_response_bytes) {
            return Err(ConfigError::new(
                at("max_response_bytes"),
                "must be 64..=1048576",
            ));
        }
        let (dialect, path) = match (raw.dialect.as_deref().unwrap_or("authgate"), raw.openfga) {
            ("authgate", None) => {
                let path = raw.path.unwrap_or_else(|| DEFAULT_PATH.to_string());
                (Dialect::Authgate, path)
            }
            ("authgate", Some(_)) => {
                return Err(ConfigError::new(
                    at("openfga"),
                    "only applies with \"dialect\": \"openfga\"",
                ))
            }
            ("openfga", Some(fga)) => {
                if raw.path.is_some() {
                    return Err(ConfigError::new(
                        at("path"),
                        "the openfga dialect posts to /stores/{store_id}/check; set openfga.store_id",
                    ));
                }
                let store = fga.store_id;
                if store.is_empty() || !store.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(ConfigError::new(
                        at("openfga.store_id"),
                        "must be an OpenFGA store id (letters and digits)",
                    ));
                }
                let dialect = Dialect::OpenFga(OpenFga {
                    authorization_model_id: fga.authorization_model_id,
                    user: Template::parse(&fga.user, &at("openfga.user"))?,
                    relation: Template::parse(&fga.relation, &at("openfga.relation"))?,
                    object: Template::parse(&fga.object, &at("openfga.object"))?,
                });
                (dialect, format!("/stores/{store}/check"))
            }
            ("openfga", None) => {
                return Err(ConfigError::new(
                    at("openfga"),
                    "missing field: the openfga dialect needs store_id, user, relation, object",
                ))
            }
            (other, _) => {
                return Err(ConfigError::new(
                    at("dialect"),
                    format!("unknown dialect {other:?}; expected \"authgate\" or \"openfga\""),
                ))
            }
        };
        if !path.starts_with('/') {
            return Err(ConfigError::new(at("path"), "must start with '/'"));
        }
        let mut upstream_headers = Vec::new();
        for (i, name) in raw
            .upstream_headers
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            let name = name.to_ascii_lowercase();
            let at = at(&format!("upstream_headers[{i}]"));
            if !is_header_name(&name) || name.contains('_') {
                return Err(ConfigError::new(
                    at,
                    "not a header name (letters, digits and '-'; no '_', which upstreams read as '-')",
                ));
            }
            if is_protected_header(&name) {
                return Err(ConfigError::new(
                    at,
                    format!("{name:?} belongs to Envoy or the client; the service may not set it"),
                ));
            }
            if upstream_headers.len() == MAX_HEADERS {
                return Err(ConfigError::new(at, format!("at most {MAX_HEADERS} names")));
            }
            upstream_headers.push(name);
        }
        let evict_on_upstream = cache.evict_on_upstream.unwrap_or_default();
        if let Some(i) = evict_on_upstream
            .iter()
            .position(|s| !(400..=599).contains(s))
        {
            return Err(ConfigError::new(
                at(&format!("cache.evict_on_upstream[{i}]")),
                "must be an HTTP error status (400-599), such as 401 or 403",
            ));
        }
        Ok(Enterprise {
            cluster: raw.cluster,
            authority: raw.authority,
            path,
            timeout_ms,
            dialect,
            failure_mode: raw.failure_mode.unwrap_or_default(),
            status_on_error,
            allow_ttl_s: cache.allow_ttl_s.unwrap_or(DEFAULT_ALLOW_TTL_S),
            deny_ttl_s: cache.deny_ttl_s.unwrap_or(DEFAULT_DENY_TTL_S),
            max_entries,
            max_response_bytes,
            upstream_headers,
            max_stale_s: cache.max_stale_s.unwrap_or(DEFAULT_MAX_STALE_S),
            expose_reason: raw.expose_reason.unwrap_or(false),
            renew_path: match raw.renew_path {
                Some(path) if path.starts_with('/') => path,
                Some(_) => return Err(ConfigError::new(at("renew_path"), "must start with '/'")),
                None => "/api/sessions/renew".to_string(),
            },
            gateway_key: match raw.gateway_key {
                Some(key) if key.len() < 16 || !key.bytes().all(|b| b.is_ascii_graphic()) => {
                    return Err(ConfigError::new(
                        at("gateway_key"),
                        "at least 16 printable characters (a random secret the service also knows)",
                    ))
                }
                other => other,
            },
            evict_on_upstream,
        })
    }

    /// Whether the call tells the service the client's address (then decisions are cached per
    /// address).
    pub fn sends_client_ip(&self) -> bool {
        match &self.dialect {
            Dialect::Authgate => true,
            Dialect::OpenFga(fga) => [&fga.user, &fga.relation, &fga.object]
                .iter()
                .any(|t| t.uses_client_ip()),
        }
    }

    /// The JSON body of the call.
    pub fn request_body(&self, call: &CallInput<'_>) -> Vec<u8> {
        let mut body = match &self.dialect {
            Dialect::Authgate => json!({
                "user_email": call.email(),
                "client_ip": call.client_ip.map(|ip| ip.to_string()),
                "subject": {
                    "kind": call.kind.name(),
                    "id": call.subject_id(),
                    "issuer": call.issuer(),
                    "token_sha256": hex::encode(call.credential_sha256),
                    "roles": call.identity.map_or(&[][..], |i| &i.roles[..]),
                    "scopes": call.identity.map_or(&[][..], |i| &i.scopes[..]),
                },
                "request": {"method": call.method, "host": call.host, "path": call.path},
            }),
            Dialect::OpenFga(fga) => {
                let mut body = json!({"tuple_key": {
                    "user": fga.user.render(call),
                    "relation": fga.relation.render(call),
                    "object": fga.object.render(call),
                }});
                if let (Some(model), Some(object)) =
                    (&fga.authorization_model_id, body.as_object_mut())
                {
                    object.insert(
                        "authorization_model_id".to_string(),
                        Value::String(model.clone()),
                    );
                }
                body
            }
        };
        if let (Dialect::Authgate, Some(mcp), Some(object)) =
            (&self.dialect, call.mcp, body.as_object_mut())
        {
            object.insert(
                "mcp".to_string(),
                json!({"method": mcp.method, "name": mcp.name}),
            );
        }
        // With a role hierarchy the service also learns what the roles include.
        if let (Dialect::Authgate, Some(effective)) = (
            &self.dialect,
            call.identity.and_then(|i| i.effective_roles.as_ref()),
        ) {
            if let Some(subject) = body.get_mut("subject").and_then(Value::as_object_mut) {
                subject.insert("effective_roles".to_string(), json!(effective));
            }
        }
        body.to_string().into_bytes()
    }

    /// Reads the service's reply. `body` is None when it exceeded `max_response_bytes`.
    pub fn read_answer(&self, status: u16, body: Option<&[u8]>) -> Result<Answer, AuthzError> {
        let body = body.ok_or(AuthzError::TooLarge)?;
        // Envoy answers a timed-out callout itself, with this status and body.
        if status == 504 && body == b"upstream request timeout" {
            return Err(AuthzError::Timeout);
        }
        if status != 200 {
            return Err(AuthzError::from_status(status));
        }
        let value: Value = serde_json::from_slice(body).map_err(|_| AuthzError::BadJson)?;
        let object = value.as_object().ok_or(AuthzError::WrongShape)?;
        match self.dialect {
            Dialect::Authgate => read_authgate(object, &self.upstream_headers),
            Dialect::OpenFga(_) => match object.get("allowed").and_then(Value::as_bool) {
                Some(true) => Ok(Answer::Allow {
                    headers: Vec::new(),
                    ttl_s: None,
                    dropped_headers: 0,
                }),
                Some(false) => Ok(Answer::Deny {
                    reason: "denied by the authorization service".to_string(),
                }),
                None => Err(AuthzError::WrongShape),
            },
        }
    }
}

/// What the request to the service is built from.
pub struct CallInput<'a> {
    pub kind: Kind,
    pub identity: Option<&'a Identity>,
    pub credential_sha256: &'a [u8; 32],
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    /// The JSON-RPC call an MCP rule judged (`match.mcp`), when one did.
    pub mcp: Option<&'a Call>,
}

impl CallInput<'_> {
    pub(crate) fn subject_id(&self) -> &str {
        self.identity
            .and_then(|i| i.subject.as_deref())
            .unwrap_or("")
    }

    pub(crate) fn email(&self) -> Option<&str> {
        self.identity.and_then(|i| i.email.as_deref())
    }

    pub(crate) fn issuer(&self) -> Option<&str> {
        self.identity.and_then(|i| i.issuer.as_deref())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Allow {
        headers: Vec<(String, String)>,
        ttl_s: Option<u64>,
        /// Headers the service set that may not go upstream (counted).
        dropped_headers: usize,
    },
    Deny {
        reason: String,
    },
    SessionExpired {
        reauth_url: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthzError {
    Timeout,
    Status(u16),
    TooLarge,
    BadJson,
    WrongShape,
    /// The call could not be made at all (unknown cluster, or the host refused it).
    DispatchFailed,
    /// An answer about this request that is neither a decision nor an outage (a 4xx other than
    /// 408 and 429, a 1xx/3xx): the service would not decide it, so it is denied.
    Refused(u16),
}

impl AuthzError {
    fn from_status(status: u16) -> AuthzError {
        match status {
            0 | 408 | 429 | 500..=599 => AuthzError::Status(status),
            _ => AuthzError::Refused(status),
        }
    }

    /// Whether `failure_mode: allow` may admit the request: the service gave no answer (none
    /// at all, or none that reads as a decision: too large, not JSON, the wrong shape), timed
    /// out or failed (5xx). A 429 is the service pushing back, and a 4xx an answer about this
    /// request: never a reason to admit.
    pub fn is_outage(self) -> bool {
        match self {
            AuthzError::Timeout
            | AuthzError::DispatchFailed
            | AuthzError::TooLarge
            | AuthzError::BadJson
            | AuthzError::WrongShape => true,
            AuthzError::Status(status) => matches!(status, 0 | 408 | 500..=599),
            AuthzError::Refused(_) => false,
        }
    }

    /// For logs and the error reply: what went wrong, naming no secret.
    pub fn describe(self) -> String {
        match self {
            AuthzError::Timeout => "timed out".to_string(),
            AuthzError::Status(0) => "no response".to_string(),
            AuthzError::Status(status) => format!("answered HTTP {status}"),
            AuthzError::TooLarge => "answer too large".to_string(),
            AuthzError::BadJson => "answer is not JSON".to_string(),
            AuthzError::WrongShape => "answer has the wrong shape".to_string(),
            AuthzError::DispatchFailed => "could not be called".to_string(),
            AuthzError::Refused(status) => format!("refused to decide (HTTP {status})"),
        }
    }
}

fn read_authgate(object: &Map<String, Value>, allowed: &[String]) -> Result<Answer, AuthzError> {
    let authorized = object
        .get("authorized")
        .and_then(Value::as_bool)
        .ok_or(AuthzError::WrongShape)?;
    let session = object.get("session").and_then(Value::as_object);
    let expired = session
        .and_then(|s| s.get("status"))
        .and_then(Value::as_str)
        == Some("expired");
    if !authorized && expired {
        let reauth_url = session
            .and_then(|s| s.get("reauth_url"))
            .and_then(Value::as_str)
            .filter(|url| is_http_url(url))
            .map(str::to_string);
        return Ok(Answer::SessionExpired { reauth_url });
    }
    if !authorized {
        let reason = object
            .get("reason")
            .and_then(Value::as_str)
            .map(|r| {
                r.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_REASON)
                    .collect()
            })
            .filter(|r: &String| !r.is_empty())
            .unwrap_or_else(|| "denied by the authorization service".to_string());
        return Ok(Answer::Deny { reason });
    }
    let (headers, dropped_headers) = match object.get("headers") {
        None | Some(Value::Null) => (Vec::new(), 0),
        Some(Value::Object(map)) => upstream_headers(map, allowed),
        Some(_) => return Err(AuthzError::WrongShape),
    };
    let ttl_s = object.get("cache_ttl_s").and_then(Value::as_u64);
    Ok(Answer::Allow {
        headers,
        ttl_s,
        dropped_headers,
    })
}

/// The service's headers that go upstream: names in `enterprise.upstream_headers` (so none of
/// Envoy's, the client's or one the configuration did not expect), string values without control
/// characters, bounded in size; and how many others were dropped.
fn upstream_headers(
    map: &Map<String, Value>,
    allowed: &[String],
) -> (Vec<(String, String)>, usize) {
    let mut kept = Vec::new();
    let mut dropped = 0;
    for (name, value) in map {
        let name = name.to_ascii_lowercase();
        let value = value
            .as_str()
            .filter(|v| v.len() <= MAX_HEADER_VALUE && !v.chars().any(|c| c.is_control()));
        match value {
            Some(value) if allowed.contains(&name) && !kept.iter().any(|(n, _)| *n == name) => {
                kept.push((name, value.to_string()))
            }
            _ => dropped += 1,
        }
    }
    (kept, dropped)
}

fn is_http_url(url: &str) -> bool {
    (url.starts_with("https://") || url.starts_with("http://"))
        && url.len() <= 2048
        && !url.chars().any(|c| c.is_control() || c == ' ' || c == '"')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enterprise(json: Value) -> Result<Enterprise, ConfigError> {
        Enterprise::compile(serde_json::from_value(json).unwrap())
    }

    fn authgate() -> Enterprise {
        enterprise(json!({"cluster": "authz", "authority": "authz.internal",
                          "upstream_headers": ["x-tenant", "X-Bad"]}))
        .unwrap()
    }

    #[test]
    fn reads_allow_deny_expired_and_errors() {
        let e = authgate();
        let allow = br#"{"authorized": true, "cache_ttl_s": 30,
            "headers": {"X-Tenant": "acme", "x-tenant": "twice", "host": "evil", ":path": "/x",
                        "x-bad": "a\r\nb", "n": 1, "x-unlisted": "u"}}"#;
        assert_eq!(
            e.read_answer(200, Some(allow)),
            Ok(Answer::Allow {
                headers: vec![("x-tenant".to_string(), "acme".to_string())],
                ttl_s: Some(30),
                dropped_headers: 6,
            })
        );
        assert_eq!(
            e.read_answer(200, Some(br#"{"authorized": false, "reason": "no\nseat"}"#)),
            Ok(Answer::Deny {
                reason: "noseat".to_string()
            })
        );
        let expired = br#"{"authorized": false, "session": {"status": "expired",
            "reauth_url": "https://sso.example.com/re?c=1"}}"#;
        assert_eq!(
            e.read_answer(200, Some(expired)),
            Ok(Answer::SessionExpired {
                reauth_url: Some("https://sso.example.com/re?c=1".to_string())
            })
        );
        assert_eq!(
            e.read_answer(504, Some(b"upstream request timeout")),
            Err(AuthzError::Timeout)
        );
        assert_eq!(
            e.read_answer(500, Some(b"{}")),
            Err(AuthzError::Status(500))
        );
        assert_eq!(
            e.read_answer(200, Some(b"not json{")),
            Err(AuthzError::BadJson)
        );
        assert_eq!(
            e.read_answer(200, Some(br#"{"authorized": "yes"}"#)),
            Err(AuthzError::WrongShape)
        );
        assert_eq!(e.read_answer(200, None), Err(AuthzError::TooLarge));
    }

    #[test]
    fn openfga_body_from_templates() {
        let e = enterprise(
            json!({"cluster": "fga", "authority": "fga", "dialect": "openfga",
            "openfga": {"store_id": "01HSTORE", "authorization_model_id": "01HMODEL",
                        "user": "user:{subject.id}", "relation": "invoke",
                        "object": "route:{request.method}:{request.path}"}}),
        )
        .unwrap();
        assert_eq!(e.path, "/stores/01HSTORE/check");
        let identity = Identity {
            subject: Some("alice".to_string()),
            ..Identity::default()
        };
        let call = CallInput {
            kind: Kind::Jwt,
            identity: Some(&identity),
            credential_sha256: &[7; 32],
            client_ip: None,
            method: "POST",
            host: "api.example.com",
            path: "/v1/chat",
            mcp: None,
        };
        let body: Value = serde_json::from_slice(&e.request_body(&call)).unwrap();
        assert_eq!(
            body,
            json!({"tuple_key": {"user": "user:alice", "relation": "invoke",
                                 "object": "route:POST:/v1/chat"},
                   "authorization_model_id": "01HMODEL"})
        );
        assert_eq!(
            e.read_answer(200, Some(br#"{"allowed": false}"#)),
            Ok(Answer::Deny {
                reason: "denied by the authorization service".to_string()
            })
        );
        // An MCP rule's call fills {mcp.method} and {mcp.name}; without one they are empty.
        let tools = enterprise(
            json!({"cluster": "fga", "authority": "fga", "dialect": "openfga",
            "openfga": {"store_id": "S", "user": "user:{subject.id}", "relation": "{mcp.method}",
                        "object": "tool:{mcp.name}"}}),
        )
        .unwrap();
        let deploy = Call {
            method: "tools/call".to_string(),
            name: Some("deploy_prod".to_string()),
        };
        let body: Value = serde_json::from_slice(&tools.request_body(&CallInput {
            mcp: Some(&deploy),
            ..call
        }))
        .unwrap();
        assert_eq!(
            body["tuple_key"],
            json!({"user": "user:alice", "relation": "tools/call", "object": "tool:deploy_prod"})
        );
        let body: Value = serde_json::from_slice(&tools.request_body(&call)).unwrap();
        assert_eq!(body["tuple_key"]["object"], "tool:");
    }

    #[test]
    fn config_errors_name_the_field() {
        let err = |json| enterprise(json).unwrap_err().path;
        assert_eq!(
            err(
                json!({"cluster": "a", "authority": "a", "dialect": "openfga",
                       "openfga": {"store_id": "s", "user": "user:{sub}", "relation": "r", "object": "o"}})
            ),
            "enterprise.openfga.user"
        );
        assert_eq!(
            err(json!({"cluster": "a", "authority": "a", "dialect": "opa"})),
            "enterprise.dialect"
        );
        assert_eq!(
            err(json!({"cluster": "a", "authority": "a", "status_on_error": 200})),
            "enterprise.status_on_error"
        );
    }
}
