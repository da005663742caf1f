//! The variants the benchmark compares, and the Envoy bootstrap (JSON) of each. Every variant
//! answers with a `direct_response` 200 after its filters, so only the filters' cost differs.

use std::path::PathBuf;

use authgate_integration::fixtures::jwks;
use authgate_integration::plugin::{local_provider, AUDIENCE, ISSUER, PROVIDER};
use authgate_integration::FixtureKey;
use serde_json::{json, Value};

/// The keys authgate and jwt_authn both trust.
pub const KEYS: [FixtureKey; 3] = [FixtureKey::Rsa1, FixtureKey::Ec1, FixtureKey::Ed1];

/// What a variant's bootstraps need from the running harness.
pub struct Setup {
    pub authgate_wasm: PathBuf,
    pub noop_wasm: PathBuf,
    /// The no-op filter with the exports `make build` removes from authgate removed too.
    pub noop_trimmed_wasm: PathBuf,
    /// That one without the response-headers export as well.
    pub noop_no_response_wasm: PathBuf,
    /// The reference authorization service (for ext_authz and authgate enterprise).
    pub authz_port: u16,
}

/// The credential each request of a variant carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Credential {
    /// One RS256 JWT on every request (a cache, when there is one, always hits).
    RepeatedRs256,
    /// A different JWT on every request, cycling through the generated list.
    DistinctRs256,
    DistinctEs256,
    DistinctEdDsa,
    /// One opaque agent token registered in the reference service.
    AgentToken,
    /// One sign-in session cookie (a `cookie: …` line).
    SessionCookie,
}

impl Credential {
    pub fn is_distinct(self) -> bool {
        matches!(
            self,
            Credential::DistinctRs256 | Credential::DistinctEs256 | Credential::DistinctEdDsa
        )
    }
}

/// Which jwt_authn run a variant is compared to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtBaseline {
    Cached,
    Uncached,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Direct,
    NoopWasm,
    NoopWasmTrimmed,
    NoopWasmNoResponseHeaders,
    NoopHostCalls,
    JwtAuthn,
    JwtAuthnCached,
    AuthgateCached,
    AuthgateSession,
    AuthgatePost,
    AuthgateMcp,
    AuthgateRs256,
    AuthgateEs256,
    AuthgateEdDsa,
    ExtAuthz,
    AuthgateEnterpriseJwt,
    AuthgateEnterpriseAgent,
    JwtAuthnExtAuthz,
}

#[derive(Clone, Debug)]
pub struct Variant {
    pub kind: Kind,
    /// Stable id (file names, JSON, `--only`).
    pub key: &'static str,
    pub label: &'static str,
    pub credential: Credential,
    /// The status of a request without a credential: proves the filter is in the chain.
    pub status_without_credential: u16,
    pub jwt_baseline: Option<JwtBaseline>,
    pub is_authgate: bool,
}

/// Every variant, in table order.
pub fn all() -> Vec<Variant> {
    use Credential::*;
    let v = |kind, key, label, credential, without, baseline, is_authgate| Variant {
        kind,
        key,
        label,
        credential,
        status_without_credential: without,
        jwt_baseline: baseline,
        is_authgate,
    };
    let (cached, uncached) = (Some(JwtBaseline::Cached), Some(JwtBaseline::Uncached));
    vec![
        v(
            Kind::Direct,
            "direct",
            "a. direct_response, no filter",
            RepeatedRs256,
            200,
            None,
            false,
        ),
        v(
            Kind::NoopWasm,
            "noop_wasm",
            "b. no-op Rust Wasm filter",
            RepeatedRs256,
            200,
            cached,
            false,
        ),
        v(
            Kind::NoopWasmTrimmed,
            "noop_wasm_trimmed",
            "b2. no-op filter, same unused exports removed",
            RepeatedRs256,
            200,
            None,
            false,
        ),
        v(
            Kind::NoopWasmNoResponseHeaders,
            "noop_wasm_no_response_headers",
            "b4. b2 without the response-headers export",
            RepeatedRs256,
            200,
            None,
            false,
        ),
        v(
            Kind::NoopHostCalls,
            "noop_host_calls",
            "b3. b2 + authgate's host calls only",
            RepeatedRs256,
            200,
            None,
            false,
        ),
        v(
            Kind::JwtAuthn,
            "jwt_authn",
            "c. jwt_authn RS256, no cache (distinct tokens)",
            DistinctRs256,
            401,
            uncached,
            false,
        ),
        v(
            Kind::JwtAuthnCached,
            "jwt_authn_cached",
            "d. jwt_authn RS256 + jwt_cache_config (one token)",
            RepeatedRs256,
            401,
            cached,
            false,
        ),
        v(
            Kind::AuthgateCached,
            "authgate_cached",
            "e. authgate RS256, one token (cached)",
            RepeatedRs256,
            401,
            cached,
            true,
        ),
        v(
            Kind::AuthgateSession,
            "authgate_session",
            "e2. authgate, one sign-in session cookie (cached)",
            Credential::SessionCookie,
            401,
            None,
            false,
        ),
        v(
            Kind::AuthgatePost,
            "authgate_post",
            "e3. authgate RS256, one token, POST of an MCP call to a plain rule",
            RepeatedRs256,
            401,
            None,
            true,
        ),
        v(
            Kind::AuthgateMcp,
            "authgate_mcp",
            "e4. authgate RS256, one token, the same call judged on its body (match.mcp)",
            RepeatedRs256,
            401,
            None,
            true,
        ),
        v(
            Kind::AuthgateRs256,
            "authgate_rs256",
            "f. authgate RS256, distinct tokens",
            DistinctRs256,
            401,
            uncached,
            true,
        ),
        v(
            Kind::AuthgateEs256,
            "authgate_es256",
            "g. authgate ES256, distinct tokens",
            DistinctEs256,
            401,
            uncached,
            true,
        ),
        v(
            Kind::AuthgateEdDsa,
            "authgate_eddsa",
            "h. authgate EdDSA, distinct tokens",
            DistinctEdDsa,
            401,
            uncached,
            true,
        ),
        v(
            Kind::ExtAuthz,
            "ext_authz",
            "i. ext_authz (HTTP) → reference service, agent token",
            AgentToken,
            403,
            None,
            false,
        ),
        v(
            Kind::AuthgateEnterpriseJwt,
            "authgate_enterprise",
            "j. authgate enterprise, RS256 JWT, warm decision cache",
            RepeatedRs256,
            401,
            cached,
            true,
        ),
        v(
            Kind::AuthgateEnterpriseAgent,
            "authgate_enterprise_agent",
            "j2. authgate enterprise, agent token, warm decision cache",
            AgentToken,
            401,
            None,
            true,
        ),
        v(
            Kind::JwtAuthnExtAuthz,
            "jwt_authn_ext_authz",
            "k. jwt_authn (cached) + ext_authz, RS256 JWT",
            RepeatedRs256,
            401,
            cached,
            false,
        ),
    ]
}

/// The JSON-RPC call the POST variants send.
const MCP_CALL: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"read_docs","arguments":{"topic":"bench"}}}"#;

impl Variant {
    /// The body each request carries (a POST then), if any.
    pub fn body(&self) -> Option<&'static str> {
        matches!(self.kind, Kind::AuthgatePost | Kind::AuthgateMcp).then_some(MCP_CALL)
    }

    /// Whether its Envoy calls the reference authorization service.
    pub fn uses_authz(&self) -> bool {
        matches!(
            self.kind,
            Kind::ExtAuthz
                | Kind::AuthgateEnterpriseJwt
                | Kind::AuthgateEnterpriseAgent
                | Kind::JwtAuthnExtAuthz
        )
    }

    /// The whole Envoy bootstrap for this variant.
    pub fn bootstrap(&self, setup: &Setup) -> Value {
        let mut filters = match self.kind {
            Kind::Direct => vec![],
            Kind::NoopWasm => vec![wasm_filter("noop", &setup.noop_wasm, "")],
            Kind::NoopWasmTrimmed => vec![wasm_filter("noop", &setup.noop_trimmed_wasm, "")],
            Kind::NoopWasmNoResponseHeaders => {
                vec![wasm_filter("noop", &setup.noop_no_response_wasm, "")]
            }
            Kind::NoopHostCalls => {
                vec![wasm_filter("noop", &setup.noop_trimmed_wasm, "host_calls")]
            }
            Kind::JwtAuthn => vec![jwt_authn(false, false)],
            Kind::JwtAuthnCached => vec![jwt_authn(true, false)],
            Kind::AuthgateCached
            | Kind::AuthgateRs256
            | Kind::AuthgateEs256
            | Kind::AuthgateEdDsa => {
                vec![authgate_filter(setup, &authgate_plugin(false))]
            }
            Kind::AuthgateSession => vec![authgate_filter(setup, &session_plugin())],
            Kind::AuthgatePost => vec![authgate_filter(setup, &authgate_plugin(false))],
            Kind::AuthgateMcp => vec![
                authgate_filter(setup, &mcp_plugin()),
                companion_filter(setup),
            ],
            Kind::ExtAuthz => vec![ext_authz()],
            Kind::AuthgateEnterpriseJwt | Kind::AuthgateEnterpriseAgent => {
                vec![authgate_filter(setup, &authgate_plugin(true))]
            }
            // forward: true, or jwt_authn would remove the header ext_authz decides on.
            Kind::JwtAuthnExtAuthz => vec![jwt_authn(true, true), ext_authz()],
        };
        filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let clusters: Vec<Value> = if self.uses_authz() {
            vec![static_cluster("authz", setup.authz_port)]
        } else {
            vec![]
        };
        json!({
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {
                "listeners": [{
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "bench",
                            // What authgate's README asks for; set everywhere so all pay the same.
                            "normalize_path": true,
                            "merge_slashes": true,
                            "route_config": {"name": "local", "virtual_hosts": [{
                                "name": "all", "domains": ["*"],
                                "routes": [{"match": {"prefix": "/"},
                                            "direct_response": {"status": 200,
                                                                "body": {"inline_string": "ok\n"}}}]
                            }]},
                            "http_filters": filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }
}

/// authgate's plugin configuration: the three fixture keys inline; with `enterprise`, every
/// request also goes through the reference service (agent tokens decided there by hash).
pub fn authgate_plugin(enterprise: bool) -> Value {
    let providers = json!({PROVIDER: local_provider(&KEYS)});
    if !enterprise {
        return json!({
            "jwt_providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires_any": [format!("jwt:{PROVIDER}")]}]
        });
    }
    json!({
        "jwt_providers": providers,
        "opaque_tokens": "enterprise",
        "rules": [{"match": {"prefix": "/"},
                   "requires_any": [format!("jwt:{PROVIDER}"), "opaque_token"],
                   "enterprise": true}],
        "enterprise": {"cluster": "authz", "authority": "authz.internal", "timeout_ms": 2000}
    })
}

/// authgate with an MCP rule first: every call is read and judged on its body (it falls through
/// to the plain rule), then released from the body_hold companion.
pub fn mcp_plugin() -> Value {
    json!({
        "jwt_providers": {PROVIDER: local_provider(&KEYS)},
        "rules": [
            {"match": {"prefix": "/", "mcp": {"methods": ["tools/call"], "names": ["deploy_*"]}},
             "requires_any": [format!("jwt:{PROVIDER}")], "require_scopes": ["deploy"]},
            {"match": {"prefix": "/"}, "requires_any": [format!("jwt:{PROVIDER}")]}
        ],
        "session": {"hold_companion": true}
    })
}

/// The cookie key of the session variant, base64url (a benchmark, not a secret).
const SESSION_COOKIE_KEY: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk";

/// authgate with sign-in: every request carries a session cookie (the IdP is never called).
pub fn session_plugin() -> Value {
    json!({
        "jwt_providers": {PROVIDER: local_provider(&KEYS)},
        "rules": [{"match": {"prefix": "/"}, "requires_any": ["session"]}],
        "login": {"provider": PROVIDER,
                  "authorization_endpoint": "http://idp.invalid/auth",
                  "token_endpoint": "http://idp.invalid/token", "token_cluster": "idp",
                  "client_id": "bench", "client_secret": "bench-secret",
                  "public_url": "http://127.0.0.1",
                  "cookie_keys": [SESSION_COOKIE_KEY]}
    })
}

/// The `cookie: …` line of a signed-in session for the session variant, sealed as the
/// gateway would after a sign-in (valid for a day).
pub fn session_cookie() -> Result<String, String> {
    use authgate::core::login::session::Session;
    let config = authgate::core::config::Config::parse(session_plugin().to_string().as_bytes())
        .map_err(|e| format!("session plugin: {e}"))?;
    let login = config.login.as_ref().ok_or("no login section")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = serde_json::Map::new();
    claims.insert("sub".into(), json!("bench"));
    claims.insert("email".into(), json!("bench@example.com"));
    let session = Session {
        sub: "bench".into(),
        iss: ISSUER.into(),
        exp: i64::try_from(now + 86_400).unwrap_or(i64::MAX),
        sid: "00".repeat(16),
        claims,
    };
    let sealed = session
        .seal(login, [3; 12])
        .ok_or("cannot seal the session")?;
    Ok(format!("cookie: {}={sealed}", login.cookie_name))
}

fn authgate_filter(setup: &Setup, plugin: &Value) -> Value {
    wasm_filter("authgate", &setup.authgate_wasm, &plugin.to_string())
}

/// The body_hold companion, after authgate in the same VM (same vm_id and root_id).
fn companion_filter(setup: &Setup) -> Value {
    let mut filter = wasm_filter(
        "authgate-hold",
        &setup.authgate_wasm,
        r#"{"role": "body_hold"}"#,
    );
    let config = &mut filter["typed_config"]["config"];
    config["root_id"] = json!("authgate");
    config["vm_config"]["vm_id"] = json!("authgate");
    filter
}

fn wasm_filter(name: &str, wasm: &std::path::Path, configuration: &str) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": name,
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm.display().to_string()}}
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration
                },
                "fail_open": false
            }
        }
    })
}

/// Native jwt_authn with the same issuer, audience, keys and claim header as authgate.
fn jwt_authn(cache: bool, forward: bool) -> Value {
    let mut provider = json!({
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"inline_string": jwks(&KEYS).to_string()},
        "forward": forward,
        "claim_to_headers": [{"header_name": "x-tenant", "claim_name": "tenant.id"}]
    });
    if cache {
        provider["jwt_cache_config"] = json!({"jwt_cache_size": 1000});
    }
    json!({
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {PROVIDER: provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": PROVIDER}}]
        }
    })
}

/// Native ext_authz over HTTP to the reference service's `/ext_authz/` checks (the
/// `authorization` header is always sent).
fn ext_authz() -> Value {
    json!({
        "name": "envoy.filters.http.ext_authz",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": false,
            "http_service": {
                "server_uri": {"uri": "http://authz.internal", "cluster": "authz", "timeout": "2s"},
                "path_prefix": "/ext_authz"
            }
        }
    })
}

fn static_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}
        }}]}]}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_authz_cluster_only_where_used() {
        let setup = Setup {
            authgate_wasm: "/a.wasm".into(),
            noop_wasm: "/n.wasm".into(),
            noop_trimmed_wasm: "/t.wasm".into(),
            noop_no_response_wasm: "/r.wasm".into(),
            authz_port: 9,
        };
        let variants = all();
        let keys: std::collections::BTreeSet<&str> = variants.iter().map(|v| v.key).collect();
        assert_eq!(keys.len(), variants.len());
        for variant in &variants {
            let bootstrap = variant.bootstrap(&setup);
            let clusters = bootstrap["static_resources"]["clusters"]
                .as_array()
                .expect("clusters")
                .len();
            let text = bootstrap.to_string();
            assert_eq!(clusters == 1, text.contains("\"authz\""), "{}", variant.key);
            let filters = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"]["http_filters"]
                .as_array()
                .expect("filters");
            assert_eq!(
                filters.last().expect("router")["name"],
                "envoy.filters.http.router"
            );
            assert_eq!(
                filters.len() == 1,
                variant.kind == Kind::Direct,
                "{}",
                variant.key
            );
        }
    }
}
