//! Target `decide`: the whole per-request decision on fuzzer-built header lists, request after
//! request against one `State` (token and decision caches, backoff table), with the enterprise
//! authorization service's answers also chosen by the fuzzer.
//!
//! The oracle: authgate must never let a request through (`Step::Continue`) without a credential
//! it can justify. Every route is protected, so a `Continue` is legitimate only when
//! - the request is a CORS preflight (bypassed by design), or
//! - it carries a credential the authorization service allowed in this run (its cached `add`
//!   headers are the very allocation the service's allow produced, and the decision key is one
//!   this request's credential, method, host and path give), or
//! - in `known` mode only, it contains a credential that is valid at that time: a valid fixture
//!   token, the one live API key, or a token this harness signed with the fixture's HMAC key.
//!
//! In `strict` mode the JWT provider holds only public keys with an audience no fixture token
//! has, the API keys' preimages are unknown (or the keys inactive or expired), so nothing but
//! the authorization service can ever let a request through. Any other `Continue` is a bug.
//!
//! Further properties on every step: spoofed identity headers (`x-auth-*`, the claim header
//! `x-tenant`, `x-authgate-hold`) are always removed on `Continue`; reply headers never contain
//! CR, LF or NUL; JSON replies parse; no reply echoes a credential; LLM-shaped replies are well
//! formed; a request that has waited for keys never waits again.
//!
//! MCP: `/mcp` has a `match.mcp` rule for `tools/call` of `deploy_*` needing a scope no
//! credential here carries. A request there with a body is never let through before its body is
//! read (`Step::ReadBody`; the harness then decides again with the fuzzer's JSON-RPC calls or
//! raw bytes), and a `Continue` after it never carries a `deploy_*` call, nor `Mcp-Method` or
//! `Mcp-Name` headers that disagree with the body.

use std::rc::Rc;

use arbitrary::{Arbitrary, Unstructured};
use authgate::core::authz::decision_cache::{self, Decided, DecisionKey};
use authgate::core::authz::FailureMode;
use authgate::core::config::Config;
use authgate::core::credentials::Kind;
use authgate::core::engine::{
    complete_authz, decide, resolve, Context, Effects, Resolution, Rewrite, State, Step,
};
use authgate::core::jwt::jwks::KeySet;
use authgate::core::metrics::Recorded;
use authgate::core::policy::backoff::MemoryStore;
use authgate::core::replies::Reply;
use authgate::core::request::{borrow_pairs, Request};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::fixtures;
use crate::support::{
    all_fixture_tokens, hs1_secret, public_jwks, public_key_secrets, SIGNED_BY_JWKS,
};

/// The one API key whose preimage is known (`known` mode only).
pub const LIVE_KEY: &str = "ek_live_7Qm2p9XvT4";
const LIVE_KEY_SHA256: &str = "15d405cd2e528a2d986096417171ca8cbea364837caaae84cef232236a2ed0c0";
/// Inactive in both modes.
pub const RETIRED_KEY: &str = "sk-agent-retired";
const RETIRED_KEY_SHA256: &str = "2df802a4707f0e0fd134ef7bd6d1a47097ebee4b28ea4d0a88d238cb023e3cf0";
/// Expired in 1999, before any instant the harness uses.
pub const EXPIRED_KEY: &str = "ek_live_expired_1999";
/// SHA-256 of 32 random bytes nobody kept: no input can present this key.
const UNGUESSABLE_SHA256: &str = "1babbc293557a71c574623f9972d93aeffbfab7b13c669214f815704c827e225";

const REMOTE_ISSUER: &str = "https://remote.idp.test";
const MAX_REQUESTS: usize = 12;
/// Instants range over 2000-01-01 .. 2100-01-01 (fixture tokens: iat 2001, exp 2100).
const START_S: u64 = 946_684_800;
const SPAN_S: u64 = 3_155_760_000;

fn config_json(known: bool) -> Value {
    let sha256_hex = |text: &str| {
        Sha256::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let (audience, jwks) = if known {
        (
            "gateway",
            serde_json::from_str::<Value>(fixtures::JWKS).expect("JWKS"),
        )
    } else {
        ("fuzz-only-audience", public_jwks().clone())
    };
    let mut keys = vec![
        json!({"id": "unguessable", "sha256": UNGUESSABLE_SHA256, "principal": "svc:ci",
               "scopes": ["llm:invoke", "deploy"]}),
        json!({"id": "retired", "sha256": RETIRED_KEY_SHA256, "principal": "svc:old",
               "scopes": ["llm:invoke"], "active": false}),
        json!({"id": "expired", "sha256": sha256_hex(EXPIRED_KEY), "principal": "svc:exp",
               "scopes": ["llm:invoke"], "expires_at": "1999-01-01T00:00:00Z"}),
    ];
    if known {
        keys.push(
            json!({"id": "live", "sha256": LIVE_KEY_SHA256, "principal": "svc:live",
                         "scopes": ["llm:invoke"]}),
        );
    }
    json!({
        "jwt_providers": {
            "corp": {"issuer": fixtures::ISSUER, "audiences": [audience], "local_jwks": jwks,
                     "from_headers": [{"name": "authorization", "value_prefix": "Bearer "},
                                      {"name": "x-token"}],
                     "from_cookies": ["session"],
                     "claim_to_headers": [{"claim": "tenant.id", "header": "x-tenant"}],
                     "subject_claims": {"roles": "realm_access.roles"}},
            "remote": {"issuer": REMOTE_ISSUER, "audiences": ["gateway"],
                       "remote_jwks": {"cluster": "idp", "uri": "https://remote.idp.test/certs"}}
        },
        "api_keys": {"headers": ["x-api-key", "authorization"], "keys": keys},
        "opaque_tokens": "enterprise",
        "rules": [
            {"match": {"prefix": "/v1/", "methods": ["POST"]},
             "requires_any": ["jwt:corp", "api_key", "opaque_token"],
             "require_scopes": ["llm:invoke"], "enterprise": true, "session_reply": "openai"},
            {"match": {"prefix": "/anthropic/"}, "requires_any": ["opaque_token", "api_key"],
             "session_reply": "anthropic"},
            {"match": {"path": "/admin"}, "requires_any": ["jwt:corp"],
             "require_roles": ["admin"], "session_reply": "browser"},
            {"match": {"prefix": "/remote"}, "requires_any": ["jwt:remote", "jwt:corp"]},
            {"match": {"prefix": "/mcp", "mcp": {"methods": ["tools/call"], "names": ["deploy_*"]}},
             "requires_any": ["jwt:corp"], "require_scopes": ["mcp:deploy"]},
            {"match": {"prefix": "/", "hosts": ["*.example.com"]},
             "requires_any": ["jwt:corp", "api_key"], "enterprise": true},
            {"match": {"prefix": "/"}, "requires_any": ["jwt:corp"]}
        ],
        "enterprise": {"cluster": "authz", "authority": "authz.internal",
                       "failure_mode": "allow_stale",
                       "cache": {"allow_ttl_s": 30, "deny_ttl_s": 5, "max_entries": 64}},
        "failed_auth_backoff": {"after_failures": 3, "base_s": 1, "max_s": 16, "slots": 64},
        "client_ip": {"from": "x-forwarded-for", "trusted_hops": 1},
        "health_path": "/health",
        "session": {"reauth_url": "https://sso.example.com/reauth", "redirect_html": true,
                    "hold_companion": true}
    })
}

struct Fixed {
    strict: Config,
    known: Config,
    strict_jwks: KeySet,
    known_jwks: KeySet,
}

fn fixed() -> &'static Fixed {
    thread_local! {
        static CELL: &'static Fixed = {
        let parse = |known| {
            Config::parse(config_json(known).to_string().as_bytes())
                .unwrap_or_else(|e| panic!("decide config ({known}): {e}"))
        };
        crate::support::leak(Fixed {
            strict: parse(false),
            known: parse(true),
            strict_jwks: KeySet::parse(public_jwks().to_string().as_bytes()).expect("jwks"),
            known_jwks: KeySet::parse(fixtures::JWKS.as_bytes()).expect("jwks"),
        })
        };
    }
    CELL.with(|cell| *cell)
}

#[derive(Arbitrary, Debug)]
pub struct DecideInput {
    /// false: `strict` configuration; true: `known` (fixture tokens and one API key are valid).
    pub known: bool,
    pub start: u32,
    pub requests: Vec<FuzzRequest>,
}

#[derive(Arbitrary, Debug)]
pub struct FuzzRequest {
    /// Milliseconds since the previous request (up to ~65 s).
    pub advance_ms: u16,
    pub method: Method,
    pub path: PathChoice,
    pub query: Option<String>,
    pub source: Option<Source>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The authorization service's answer, if the decision asks it.
    pub authz: AuthzReply,
    /// The request body, if the decision waits for it (LLM-shaped session replies).
    pub body: Option<Vec<u8>>,
    /// JSON-RPC calls for the body an MCP rule reads (else it reads `body`).
    pub mcp: Option<Vec<McpCall>>,
}

#[derive(Arbitrary, Debug)]
pub struct McpCall {
    pub method: McpMethod,
    pub name: Option<McpName>,
    /// A JSON-RPC response (no method) instead of a call.
    pub response: bool,
}

#[derive(Arbitrary, Debug)]
pub enum McpMethod {
    ToolsCall,
    ToolsList,
    Initialize,
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum McpName {
    Deploy(String),
    Read,
    /// `deploy_` plus this, said twice in `params` (the harness repeats `name`).
    Repeated(String),
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum Method {
    Get,
    Post,
    Put,
    Delete,
    Options,
    Head,
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum PathChoice {
    ChatCompletions,
    Messages,
    AnthropicMessages,
    Admin,
    Remote,
    Health,
    Root,
    Other(String),
    Mcp,
}

#[derive(Arbitrary, Debug)]
pub enum Source {
    V4([u8; 4], u16),
    V6([u16; 8], u16),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
pub enum HeaderName {
    Authorization,
    XApiKey,
    XToken,
    Cookie,
    XForwardedFor,
    Authority,
    Host,
    Origin,
    AccessControlRequestMethod,
    XRequestId,
    Accept,
    XAuthSubject,
    XTenant,
    XAuthgateHold,
    Method,
    Path,
    Other(String),
    McpMethod,
    McpName,
}

#[derive(Arbitrary, Debug)]
pub enum HeaderValue {
    Bearer(Token),
    Plain(Token),
    SessionCookie(Token, Option<String>),
    ApiKey(KeyChoice),
    BearerKey(KeyChoice),
    Ip([u8; 4]),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
pub enum KeyChoice {
    Live,
    Retired,
    Expired,
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum Token {
    Fixture(u8),
    /// A fixture token with one byte replaced.
    Mutated {
        base: u8,
        at: u16,
        byte: u8,
    },
    /// Header, claims and signature segments taken from (possibly) different fixture tokens.
    Spliced {
        header: u8,
        claims: u8,
        signature: u8,
    },
    Forged(Forged),
    Raw(String),
}

#[derive(Arbitrary, Debug)]
pub struct Forged {
    pub alg: AlgChoice,
    pub kid: KidChoice,
    pub header_extra: HeaderExtra,
    pub iss: IssChoice,
    pub aud: AudChoice,
    pub exp: TimeChoice,
    pub nbf: TimeChoice,
    pub iat: TimeChoice,
    pub sub: Option<String>,
    pub roles_and_scope: bool,
    pub signature: SignatureChoice,
}

#[derive(Arbitrary, Debug)]
pub enum AlgChoice {
    Rs256,
    Ps256,
    Es256,
    EdDsa,
    Hs256,
    Hs512,
    NoneLower,
    NoneMixed,
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum KidChoice {
    Absent,
    Rsa1,
    Ec1,
    Ed1,
    Hs1,
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum HeaderExtra {
    Nothing,
    Crit,
    Jwk,
    Jku,
    X5c,
    X5u,
    /// The `alg` member twice (JSON parsers disagree on which wins).
    DuplicateAlg,
}

#[derive(Arbitrary, Debug)]
pub enum IssChoice {
    Fixture,
    Remote,
    Absent,
    NotAString,
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum AudChoice {
    Gateway,
    FuzzOnly,
    Array,
    Absent,
    NotAString,
    Other(String),
}

#[derive(Arbitrary, Debug)]
pub enum TimeChoice {
    Absent,
    FarFuture,
    Past,
    Float,
    Text,
    Any(i64),
}

#[derive(Arbitrary, Debug)]
pub enum SignatureChoice {
    /// The signature segment of a fixture token.
    FromFixture(u8),
    Bytes(Vec<u8>),
    Empty,
    /// HMAC-SHA256 keyed with public key material (algorithm confusion).
    HmacWithPublicKey(u8),
    /// HMAC-SHA256 with the fixture's real `hs-1` secret: valid in `known` mode when the claims
    /// are, and then legitimate; `hs-1` is absent in `strict` mode.
    HmacWithHs1,
}

#[derive(Arbitrary, Debug)]
pub enum AuthzReply {
    Allow {
        headers: Vec<(String, String)>,
        ttl_s: Option<u16>,
    },
    Deny(Option<String>),
    Expired(Option<String>),
    Raw {
        status: u16,
        body: Vec<u8>,
    },
    TooLarge,
    Timeout,
}

fn pick<T: Copy>(items: &[T], index: u8) -> T {
    items[usize::from(index) % items.len()]
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hmac256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn time_value(choice: &TimeChoice) -> Option<Value> {
    match choice {
        TimeChoice::Absent => None,
        TimeChoice::FarFuture => Some(json!(4_102_444_800_i64)),
        TimeChoice::Past => Some(json!(1_000_000_000)),
        TimeChoice::Float => Some(json!(1.9e9)),
        TimeChoice::Text => Some(json!("1900000000")),
        TimeChoice::Any(t) => Some(json!(t)),
    }
}

/// What the harness knows about the credentials it puts in a request.
#[derive(Default)]
struct Minted {
    /// Tokens the harness signed with the real `hs-1` secret.
    hs1_signed: Vec<String>,
}

impl Token {
    fn render(&self, minted: &mut Minted) -> String {
        let fixtures = all_fixture_tokens();
        match self {
            Token::Fixture(i) => pick(&fixtures, *i).to_string(),
            Token::Mutated { base, at, byte } => {
                let mut bytes = pick(&fixtures, *base).as_bytes().to_vec();
                let at = usize::from(*at) % bytes.len();
                bytes[at] = *byte;
                String::from_utf8_lossy(&bytes).into_owned()
            }
            Token::Spliced {
                header,
                claims,
                signature,
            } => {
                let part = |i: u8, n: usize| pick(&fixtures, i).split('.').nth(n).unwrap_or("");
                format!(
                    "{}.{}.{}",
                    part(*header, 0),
                    part(*claims, 1),
                    part(*signature, 2)
                )
            }
            Token::Forged(forged) => forged.render(minted),
            Token::Raw(text) => text.clone(),
        }
    }
}

impl Forged {
    fn render(&self, minted: &mut Minted) -> String {
        let alg = match &self.alg {
            AlgChoice::Rs256 => "RS256",
            AlgChoice::Ps256 => "PS256",
            AlgChoice::Es256 => "ES256",
            AlgChoice::EdDsa => "EdDSA",
            AlgChoice::Hs256 => "HS256",
            AlgChoice::Hs512 => "HS512",
            AlgChoice::NoneLower => "none",
            AlgChoice::NoneMixed => "nOnE",
            AlgChoice::Other(other) => other.as_str(),
        };
        let mut header = format!("{{\"typ\":\"JWT\",\"alg\":{}", json!(alg));
        let kid = match &self.kid {
            KidChoice::Absent => None,
            KidChoice::Rsa1 => Some("rsa-1"),
            KidChoice::Ec1 => Some("ec-1"),
            KidChoice::Ed1 => Some("ed-1"),
            KidChoice::Hs1 => Some("hs-1"),
            KidChoice::Other(other) => Some(other.as_str()),
        };
        if let Some(kid) = kid {
            header.push_str(&format!(",\"kid\":{}", json!(kid)));
        }
        header.push_str(match self.header_extra {
            HeaderExtra::Nothing => "",
            HeaderExtra::Crit => ",\"crit\":[\"exp\"]",
            HeaderExtra::Jwk => ",\"jwk\":{\"kty\":\"oct\",\"k\":\"AAAA\"}",
            HeaderExtra::Jku => ",\"jku\":\"https://evil.test/jwks\"",
            HeaderExtra::X5c => ",\"x5c\":[\"AAAA\"]",
            HeaderExtra::X5u => ",\"x5u\":\"https://evil.test/cert\"",
            HeaderExtra::DuplicateAlg => ",\"alg\":\"none\"",
        });
        header.push('}');
        let mut claims = serde_json::Map::new();
        match &self.iss {
            IssChoice::Fixture => drop(claims.insert("iss".into(), json!(fixtures::ISSUER))),
            IssChoice::Remote => drop(claims.insert("iss".into(), json!(REMOTE_ISSUER))),
            IssChoice::Absent => {}
            IssChoice::NotAString => drop(claims.insert("iss".into(), json!([fixtures::ISSUER]))),
            IssChoice::Other(other) => drop(claims.insert("iss".into(), json!(other))),
        }
        match &self.aud {
            AudChoice::Gateway => drop(claims.insert("aud".into(), json!("gateway"))),
            AudChoice::FuzzOnly => drop(claims.insert("aud".into(), json!("fuzz-only-audience"))),
            AudChoice::Array => {
                drop(claims.insert("aud".into(), json!(["x", "fuzz-only-audience", "gateway"])))
            }
            AudChoice::Absent => {}
            AudChoice::NotAString => drop(claims.insert("aud".into(), json!(7))),
            AudChoice::Other(other) => drop(claims.insert("aud".into(), json!(other))),
        }
        for (name, choice) in [("exp", &self.exp), ("nbf", &self.nbf), ("iat", &self.iat)] {
            if let Some(value) = time_value(choice) {
                claims.insert(name.into(), value);
            }
        }
        if let Some(sub) = &self.sub {
            claims.insert("sub".into(), json!(sub));
        }
        if self.roles_and_scope {
            claims.insert("realm_access".into(), json!({"roles": ["admin", "user"]}));
            claims.insert("scope".into(), json!("llm:invoke read"));
            claims.insert("tenant".into(), json!({"id": "acme"}));
        }
        let signing_input = format!(
            "{}.{}",
            b64(header.as_bytes()),
            b64(Value::Object(claims).to_string().as_bytes())
        );
        let signature = match &self.signature {
            SignatureChoice::FromFixture(i) => {
                let fixtures = all_fixture_tokens();
                pick(&fixtures, *i)
                    .rsplit('.')
                    .next()
                    .unwrap_or("")
                    .to_string()
            }
            SignatureChoice::Bytes(bytes) => b64(bytes),
            SignatureChoice::Empty => String::new(),
            SignatureChoice::HmacWithPublicKey(i) => {
                let secrets = public_key_secrets();
                let secret = &secrets[usize::from(*i) % secrets.len()];
                b64(&hmac256(secret, signing_input.as_bytes()))
            }
            SignatureChoice::HmacWithHs1 => b64(&hmac256(hs1_secret(), signing_input.as_bytes())),
        };
        let token = format!("{signing_input}.{signature}");
        if matches!(self.signature, SignatureChoice::HmacWithHs1) {
            minted.hs1_signed.push(token.clone());
        }
        token
    }
}

/// Envoy refuses CR, LF and NUL in header values and lowercases names: so does the harness.
fn clean_value(value: String) -> String {
    value.replace(['\r', '\n', '\0'], "")
}

fn clean_name(name: &str) -> String {
    let name: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.!#$%&'*+^`|~".contains(*c))
        .collect();
    if name.is_empty() {
        "x-empty".to_string()
    } else {
        name
    }
}

impl FuzzRequest {
    fn headers(&self, minted: &mut Minted) -> Vec<(String, String)> {
        let method = match &self.method {
            Method::Get => "GET".to_string(),
            Method::Post => "POST".to_string(),
            Method::Put => "PUT".to_string(),
            Method::Delete => "DELETE".to_string(),
            Method::Options => "OPTIONS".to_string(),
            Method::Head => "HEAD".to_string(),
            Method::Other(other) => clean_value(other.clone()),
        };
        let mut path = match &self.path {
            PathChoice::ChatCompletions => "/v1/chat/completions".to_string(),
            PathChoice::Messages => "/v1/messages".to_string(),
            PathChoice::AnthropicMessages => "/anthropic/v1/messages".to_string(),
            PathChoice::Admin => "/admin".to_string(),
            PathChoice::Remote => "/remote/x".to_string(),
            PathChoice::Health => "/health".to_string(),
            PathChoice::Root => "/".to_string(),
            PathChoice::Other(other) => clean_value(other.clone()),
            PathChoice::Mcp => "/mcp".to_string(),
        };
        if let Some(query) = &self.query {
            path.push('?');
            path.push_str(&clean_value(query.clone()));
        }
        let mut headers = vec![(":method".to_string(), method), (":path".to_string(), path)];
        for (name, value) in &self.headers {
            let name = match name {
                HeaderName::Authorization => "authorization".to_string(),
                HeaderName::XApiKey => "x-api-key".to_string(),
                HeaderName::XToken => "x-token".to_string(),
                HeaderName::Cookie => "cookie".to_string(),
                HeaderName::XForwardedFor => "x-forwarded-for".to_string(),
                HeaderName::Authority => ":authority".to_string(),
                HeaderName::Host => "host".to_string(),
                HeaderName::Origin => "origin".to_string(),
                HeaderName::AccessControlRequestMethod => {
                    "access-control-request-method".to_string()
                }
                HeaderName::XRequestId => "x-request-id".to_string(),
                HeaderName::Accept => "accept".to_string(),
                HeaderName::XAuthSubject => "x-auth-subject".to_string(),
                HeaderName::XTenant => "x-tenant".to_string(),
                HeaderName::XAuthgateHold => "x-authgate-hold".to_string(),
                HeaderName::McpMethod => "mcp-method".to_string(),
                HeaderName::McpName => "mcp-name".to_string(),
                HeaderName::Method => ":method".to_string(),
                HeaderName::Path => ":path".to_string(),
                HeaderName::Other(other) => clean_name(other),
            };
            let key = |choice: &KeyChoice| match choice {
                KeyChoice::Live => LIVE_KEY.to_string(),
                KeyChoice::Retired => RETIRED_KEY.to_string(),
                KeyChoice::Expired => EXPIRED_KEY.to_string(),
                KeyChoice::Other(other) => other.clone(),
            };
            let value = match value {
                HeaderValue::Bearer(token) => format!("Bearer {}", token.render(minted)),
                HeaderValue::Plain(token) => token.render(minted),
                HeaderValue::SessionCookie(token, other) => format!(
                    "{}session={}",
                    other
                        .as_deref()
                        .map(|o| format!("{o}; "))
                        .unwrap_or_default(),
                    token.render(minted)
                ),
                HeaderValue::ApiKey(choice) => key(choice),
                HeaderValue::BearerKey(choice) => format!("Bearer {}", key(choice)),
                HeaderValue::Ip([a, b, c, d]) => format!("{a}.{b}.{c}.{d}, 10.0.0.1"),
                HeaderValue::Raw(text) => text.clone(),
            };
            headers.push((name, clean_value(value)));
        }
        headers
    }

    fn source(&self) -> Option<String> {
        Some(match self.source.as_ref()? {
            Source::V4([a, b, c, d], port) => format!("{a}.{b}.{c}.{d}:{port}"),
            Source::V6(s, port) => format!(
                "[{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{:x}]:{port}",
                s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
            ),
            Source::Raw(raw) => raw.clone(),
        })
    }

    /// What a reply may legitimately echo besides request headers: the service's answer (a deny
    /// reason, a reauth URL) and the request body (the model name).
    /// The body an MCP rule reads: the fuzzer's calls as JSON-RPC, else its raw bytes.
    fn mcp_body(&self) -> Vec<u8> {
        let Some(calls) = &self.mcp else {
            return self.body.clone().unwrap_or_default();
        };
        let items: Vec<String> = calls
            .iter()
            .enumerate()
            .map(|(id, call)| {
                if call.response {
                    return json!({"jsonrpc": "2.0", "id": id, "result": {}}).to_string();
                }
                let method = match &call.method {
                    McpMethod::ToolsCall => "tools/call".to_string(),
                    McpMethod::ToolsList => "tools/list".to_string(),
                    McpMethod::Initialize => "initialize".to_string(),
                    McpMethod::Other(other) => other.clone(),
                };
                let params = match &call.name {
                    None => "{}".to_string(),
                    Some(McpName::Deploy(rest)) => {
                        json!({"name": format!("deploy_{rest}")}).to_string()
                    }
                    Some(McpName::Read) => json!({"name": "read_docs"}).to_string(),
                    // Said twice: a lenient parser keeps the last, another the first.
                    Some(McpName::Repeated(rest)) => format!(
                        "{{\"name\": {}, \"name\": \"read_docs\"}}",
                        json!(format!("deploy_{rest}"))
                    ),
                    Some(McpName::Other(other)) => json!({"name": other}).to_string(),
                };
                format!(
                    "{{\"jsonrpc\": \"2.0\", \"id\": {id}, \"method\": {}, \"params\": {params}}}",
                    json!(method)
                )
            })
            .collect();
        match items.as_slice() {
            [one] => one.clone().into_bytes(),
            _ => format!("[{}]", items.join(",")).into_bytes(),
        }
    }

    fn echoes(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let (_, Some(answer)) = self.authz_answer() {
            out.push(String::from_utf8_lossy(&answer).into_owned());
            if let Ok(value) = serde_json::from_slice::<Value>(&answer) {
                out.push(value.to_string());
                collect_strings(&value, &mut out);
            }
        }
        if let Some(body) = &self.body {
            out.push(String::from_utf8_lossy(body).into_owned());
            if let Ok(value) = serde_json::from_slice::<Value>(body) {
                collect_strings(&value, &mut out);
            }
        }
        out
    }

    fn authz_answer(&self) -> (u16, Option<Vec<u8>>) {
        match &self.authz {
            AuthzReply::Allow { headers, ttl_s } => {
                let headers: serde_json::Map<String, Value> =
                    headers.iter().map(|(n, v)| (n.clone(), json!(v))).collect();
                let mut answer = json!({"authorized": true, "headers": headers});
                if let Some(ttl) = ttl_s {
                    answer["cache_ttl_s"] = json!(ttl);
                }
                (200, Some(answer.to_string().into_bytes()))
            }
            AuthzReply::Deny(reason) => {
                (200, Some(json!({"authorized": false, "reason": reason}).to_string().into_bytes()))
            }
            AuthzReply::Expired(url) => (
                200,
                Some(json!({"authorized": false, "session": {"status": "expired", "reauth_url": url}})
                    .to_string()
                    .into_bytes()),
            ),
            AuthzReply::Raw { status, body } => (*status, Some(body.clone())),
            AuthzReply::TooLarge => (200, None),
            AuthzReply::Timeout => (504, Some(b"upstream request timeout".to_vec())),
        }
    }
}

fn collect_strings(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(text) => out.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

/// Every value a credential could be read as from this request (a superset of what authgate
/// reads): each header value whole and trimmed, after a `Bearer ` prefix, and each cookie value.
fn credential_candidates(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push((name.as_str(), value.as_str()));
        out.push((name.as_str(), value.trim()));
        if let Some(rest) = value
            .get(7..)
            .filter(|_| value[..7].eq_ignore_ascii_case("bearer "))
        {
            out.push((name.as_str(), rest));
            out.push((name.as_str(), rest.trim()));
        }
        if name == "cookie" {
            for pair in value.split(';') {
                if let Some((_, v)) = pair.trim().split_once('=') {
                    out.push((name.as_str(), v.trim_matches('"')));
                }
            }
        }
    }
    out
}

/// The (header, credential value) pairs of this request that give this decision key.
fn candidates_for_key<'h>(
    key: &DecisionKey,
    client: Option<std::net::IpAddr>,
    request: &Request<'_>,
    headers: &'h [(String, String)],
) -> Vec<(&'h str, &'h str)> {
    credential_candidates(headers)
        .into_iter()
        .filter(|(_, secret)| {
            // A JWT is known by its signing input, anything else by all of it.
            let known_by = match secret.rsplit_once('.') {
                Some((input, _)) if authgate::core::credentials::is_jwt_shaped(secret) => input,
                _ => secret,
            };
            let hash: [u8; 32] = Sha256::digest(known_by.as_bytes()).into();
            let path = request.path();
            decision_cache::key(
                &hash,
                request.method(),
                request.authority(),
                path,
                client,
                None,
            ) == *key
        })
        .collect()
}

/// The credential values of this request that give this decision key.
fn secrets_for_key<'h>(
    key: &DecisionKey,
    client: Option<std::net::IpAddr>,
    request: &Request<'_>,
    headers: &'h [(String, String)],
) -> Vec<&'h str> {
    let pairs = candidates_for_key(key, client, request, headers);
    pairs.into_iter().map(|(_, secret)| secret).collect()
}

/// The headers whose value gives this decision key (method, host and path from the request).
fn headers_for_key<'h>(
    key: &DecisionKey,
    client: Option<std::net::IpAddr>,
    request: &Request<'_>,
    headers: &'h [(String, String)],
) -> Vec<&'h str> {
    let pairs = candidates_for_key(key, client, request, headers);
    pairs.into_iter().map(|(name, _)| name).collect()
}

/// An allow the authorization service gave in this run.
struct Allowed {
    key: DecisionKey,
    add: Rc<Vec<(String, String)>>,
}

struct Run<'a> {
    config: &'a Config,
    known: bool,
    state: State,
    shared: MemoryStore,
    allowed: Vec<Allowed>,
}

pub fn check_decide_bytes(data: &[u8]) {
    if let Ok(input) = DecideInput::arbitrary_take_rest(Unstructured::new(data)) {
        check_decide(&input);
    }
}

pub fn check_decide(input: &DecideInput) {
    let fixed = fixed();
    let config = if input.known {
        &fixed.known
    } else {
        &fixed.strict
    };
    let mut run = Run {
        config,
        known: input.known,
        state: State::new(config),
        shared: MemoryStore::default(),
        allowed: Vec::new(),
    };
    let mut now_ms = (START_S + u64::from(input.start) % SPAN_S) * 1000;
    for fuzz in input.requests.iter().take(MAX_REQUESTS) {
        now_ms += u64::from(fuzz.advance_ms);
        let mut minted = Minted::default();
        let headers = fuzz.headers(&mut minted);
        let borrowed = borrow_pairs(&headers);
        let source = fuzz.source();
        // A request whose decision never reads a body may still have one: the fuzzer's body
        // choice stands for whether the headers ended the stream.
        let request = Request::new(&borrowed)
            .with_source_address(source.as_deref())
            .with_end_of_stream(fuzz.body.is_none());
        let step = run.decide(&request, now_ms, true);
        let mut step = run.after_keys(fixed, &request, step, now_ms);
        if !matches!(step, Step::ReadBody) {
            run.check_step(&step, &request, &headers, &minted, fuzz, Origin::Decide);
            let judged_on_headers = matches!(step, Step::Continue { .. })
                && request.path().starts_with("/mcp")
                && !request.has_no_body()
                && !is_bypassed_preflight(&request);
            assert!(
                !judged_on_headers,
                "an MCP request with a body went through on its headers alone"
            );
        }
        // The shell reads the body, then decides again with it.
        let mcp_body = fuzz.mcp_body();
        let request = if matches!(step, Step::ReadBody) {
            count(run.known, Origin::Decide, &step);
            let request = Request::new(&borrowed)
                .with_source_address(source.as_deref())
                .with_body(Some(&mcp_body));
            let read = run.decide(&request, now_ms, true);
            step = run.after_keys(fixed, &request, read, now_ms);
            assert!(
                !matches!(step, Step::ReadBody),
                "asked for the body again: {step:?}"
            );
            run.check_step(&step, &request, &headers, &minted, fuzz, Origin::Decide);
            request
        } else {
            request
        };
        if matches!(step, Step::Continue { .. }) && request.body().is_some() {
            check_mcp_allowed(&mcp_body, &headers);
        }
        if let Step::CallAuthz(call) = &step {
            let (status, body) = fuzz.authz_answer();
            let mut metrics = Recorded::default();
            let resolution = complete_authz(
                run.config,
                &mut run.state,
                &call.key,
                &call.pending,
                (status, body.as_deref()),
                now_ms,
                &mut metrics,
            );
            let legit = match &resolution {
                Resolution::Decided(Decided::Allow { add, .. }) => {
                    run.allowed.push(Allowed {
                        key: call.key,
                        add: Rc::clone(add),
                    });
                    true
                }
                Resolution::Failed {
                    stale: Some(Decided::Allow { .. }),
                    ..
                } => true,
                Resolution::Failed { .. } => config
                    .enterprise
                    .as_ref()
                    .is_some_and(|e| e.failure_mode == FailureMode::Allow),
                Resolution::Decided(_) => false,
            };
            let effects = Effects {
                metrics: &mut metrics,
                shared: &mut run.shared,
                random: &mut authgate::core::random::OsRandom,
            };
            let decision = resolve(run.config, &call.pending, &resolution, now_ms, effects);
            if matches!(decision.step, Step::Continue { .. }) {
                assert!(legit, "resolve let a request through on {resolution:?}");
                if request.body().is_some() {
                    check_mcp_allowed(&mcp_body, &headers);
                }
            }
            run.check_step(
                &decision.step,
                &request,
                &headers,
                &minted,
                fuzz,
                Origin::Resolve,
            );
        }
    }
}

/// A CORS preflight the configuration lets through before any rule.
fn is_bypassed_preflight(request: &Request<'_>) -> bool {
    request.method() == "OPTIONS"
        && request.header("origin").is_some()
        && request.header("access-control-request-method").is_some()
}

/// A body an MCP rule read let the request through: no call in it is a `deploy_*` tool call
/// (no credential here has the scope), and `Mcp-Method`/`Mcp-Name`, where sent, say what it says.
fn check_mcp_allowed(body: &[u8], headers: &[(String, String)]) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let items = match &value {
        Value::Array(items) => items.clone(),
        single => vec![single.clone()],
    };
    for item in &items {
        let name = item["params"]["name"]
            .as_str()
            .or_else(|| item["params"]["uri"].as_str());
        assert!(
            !(item["method"] == "tools/call"
                && name.is_some_and(|n| n.len() > "deploy_".len() && n.starts_with("deploy_"))),
            "a deploy_* call went through without the scope: {item}"
        );
    }
    let header = |n: &str| {
        headers
            .iter()
            .find(|(name, _)| name == n)
            .map(|(_, v)| v.as_str())
    };
    if let Some(method) = header("mcp-method") {
        assert!(
            items.len() == 1 && items[0]["method"] == method,
            "Mcp-Method {method:?} went through with a body that says otherwise"
        );
    }
    if let Some(name) = header("mcp-name") {
        let decoded = authgate::core::policy::mcp::header_name(name);
        let said = items[0]["params"]["name"]
            .as_str()
            .or_else(|| items[0]["params"]["uri"].as_str());
        assert!(
            items.len() == 1 && decoded.as_deref() == said,
            "Mcp-Name {name:?} went through with a body that says otherwise"
        );
    }
}

thread_local! {
    static TALLY: std::cell::RefCell<std::collections::BTreeMap<String, usize>> =
        std::cell::RefCell::default();
}

/// How often each kind of step was seen, by mode and origin (tests/replay.rs prints it for a
/// corpus, to see which outcomes the fuzzer reaches).
pub fn tally() -> std::collections::BTreeMap<String, usize> {
    TALLY.with(|t| t.borrow().clone())
}

fn count(known: bool, origin: Origin, step: &Step) {
    let kind = match step {
        Step::Continue { .. } => "continue",
        Step::SignIn(_) | Step::Renew(_) => "sign-in",
        Step::Respond(reply) => match reply.status {
            200 => "respond 200",
            302 => "respond 302",
            401 => "respond 401",
            403 => "respond 403",
            429 => "respond 429",
            503 => "respond 503",
            _ => "respond other",
        },
        Step::WaitForKeys { .. } => "wait_for_keys",
        Step::CallAuthz(_) => "call_authz",
        Step::SessionReply(_) => "session_reply",
        Step::ReadBody => "read_body",
    };
    let origin = if origin == Origin::Decide {
        "decide"
    } else {
        "resolve"
    };
    let mode = if known { "known" } else { "strict" };
    TALLY.with(|t| {
        *t.borrow_mut()
            .entry(format!("{mode} {origin} {kind}"))
            .or_default() += 1
    });
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    Decide,
    Resolve,
}

impl Run<'_> {
    /// For a step that waits for keys, the shell fetches them and decides again; a request that
    /// waited never waits twice.
    fn after_keys(
        &mut self,
        fixed: &Fixed,
        request: &Request<'_>,
        step: Step,
        now_ms: u64,
    ) -> Step {
        let Step::WaitForKeys { provider } = step else {
            return step;
        };
        count(self.known, Origin::Decide, &step);
        let jwks = if self.known {
            &fixed.known_jwks
        } else {
            &fixed.strict_jwks
        };
        if let Some(keys) = self.state.keys.get_mut(provider) {
            keys.install(jwks.clone(), now_ms, None);
        }
        let step = self.decide(request, now_ms, false);
        assert!(
            !matches!(step, Step::WaitForKeys { .. }),
            "waited for keys twice"
        );
        step
    }

    fn decide(&mut self, request: &Request<'_>, now_ms: u64, may_wait: bool) -> Step {
        let mut metrics = Recorded::default();
        let ctx = Context {
            now_ms,
            may_wait,
            log: true,
        };
        let effects = Effects {
            metrics: &mut metrics,
            shared: &mut self.shared,
            random: &mut authgate::core::random::OsRandom,
        };
        decide(self.config, &mut self.state, request, ctx, effects).step
    }

    #[allow(clippy::too_many_arguments)]
    fn check_step(
        &self,
        step: &Step,
        request: &Request<'_>,
        headers: &[(String, String)],
        minted: &Minted,
        fuzz: &FuzzRequest,
        origin: Origin,
    ) {
        count(self.known, origin, step);
        match step {
            Step::Continue {
                remove,
                add,
                rewrite,
                ..
            } => {
                for (name, _) in headers {
                    if name.starts_with("x-auth-")
                        || name == "x-tenant"
                        || name == "x-authgate-hold"
                    {
                        assert!(
                            remove.contains(name),
                            "spoofable header {name} not removed: {remove:?}"
                        );
                    }
                }
                if origin == Origin::Decide {
                    self.check_justified(request, headers, minted, add, remove, rewrite);
                    self.check_as_sent(request, headers, rewrite);
                }
            }
            Step::Respond(reply) => check_reply(reply, headers, &fuzz.echoes()),
            Step::SessionReply(llm) => {
                let facts = match fuzz.body.as_deref() {
                    Some(body) => authgate::core::replies::body_scan::scan(body),
                    None => authgate::core::replies::body_scan::BodyFacts::Unread,
                };
                let out = llm.build(&facts);
                let expected = match facts {
                    authgate::core::replies::body_scan::BodyFacts::Json { .. } => llm.status,
                    _ => authgate::core::replies::llm::ERROR_STATUS,
                };
                assert_eq!(out.status, expected);
                crate::check_llm_output(llm.shape, &out, &llm.text);
                check_reply(&out, headers, &fuzz.echoes());
            }
            Step::WaitForKeys { .. } | Step::ReadBody => {}
            Step::SignIn(_) | Step::Renew(_) => assert!(
                self.config.login.is_some(),
                "a sign-in step without a login section"
            ),
            Step::CallAuthz(call) => {
                let carriers =
                    headers_for_key(&call.key, self.key_client(request), request, headers);
                assert!(
                    !carriers.is_empty(),
                    "the decision key matches no credential of the request"
                );
                if call.pending.kind == Kind::OpaqueToken {
                    // The live key is configured in `known` mode only.
                    let configured: &[&str] = if self.known {
                        &[RETIRED_KEY, EXPIRED_KEY, LIVE_KEY]
                    } else {
                        &[RETIRED_KEY, EXPIRED_KEY]
                    };
                    if let Some(key) =
                        secrets_for_key(&call.key, self.key_client(request), request, headers)
                            .into_iter()
                            .find(|s| configured.contains(s))
                    {
                        panic!(
                            "a configured API key ({key}) was sent to the authorization service as \
                             an agent token (its SHA-256 is the decision key): {headers:?}"
                        );
                    }
                }
            }
        }
    }

    /// A request sent upstream with a rewritten path: that path is in normalised form, and
    /// judged by the same rule as the client's path (the upstream must see what was judged).
    /// The request as it goes upstream (rewritten path and authority) meets the rule that judged
    /// it, and, where hosts decide, carries a host Envoy routes as the rules read it.
    fn check_as_sent(&self, request: &Request<'_>, headers: &[(String, String)], rewrite: &Rewrite) {
        use authgate::core::policy::{paths, rules};
        let authority = rewrite.authority.as_deref().unwrap_or(request.authority());
        if self.config.host_sensitive {
            let bare = authority
                .rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']'))
                .map_or(authority, |(host, _)| host)
                .trim_end_matches('.');
            assert!(
                bare == authority || bare.is_empty(),
                "a host-judged request goes upstream as {authority:?}, which Envoy routes apart from {bare:?}"
            );
        }
        let upstream = rewrite.path.as_deref().unwrap_or(request.raw_path().unwrap_or("/"));
        let path_only = upstream.split_once('?').map_or(upstream, |(p, _)| p);
        let again = paths::normalise(path_only, self.config.paths);
        assert_eq!(
            again.map(|n| n.forwarded).as_deref(),
            Ok(path_only),
            "the upstream path is not normalised"
        );
        let rewritten: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| match n.as_str() {
                ":path" => (n.clone(), upstream.to_string()),
                ":authority" => (n.clone(), authority.to_string()),
                _ => (n.clone(), v.clone()),
            })
            .collect();
        let borrowed = borrow_pairs(&rewritten);
        let as_sent = Request::new(&borrowed);
        if let Ok(normalised) = paths::normalise(path_only, self.config.paths) {
            as_sent.set_normalised_path(normalised.matched);
        }
        assert_eq!(
            rules::matching_rule(&self.config.rules, request),
            rules::matching_rule(&self.config.rules, &as_sent),
            "the request as sent ({authority:?} {upstream:?}) falls under another rule"
        );
    }

    /// Why a `Continue` straight from `decide` is allowed; panics when nothing justifies it.
    /// The client address decision keys include (when the service is told it).
    fn key_client(&self, request: &Request<'_>) -> Option<std::net::IpAddr> {
        let enterprise = self.config.enterprise.as_ref()?;
        let ip = self.config.client_ip.client_ip(request)?;
        enterprise.sends_client_ip().then_some(ip)
    }

    fn check_justified(
        &self,
        request: &Request<'_>,
        headers: &[(String, String)],
        minted: &Minted,
        add: &Rc<Vec<(String, String)>>,
        remove: &[String],
        rewrite: &Rewrite,
    ) {
        if let Some(cookie) = &rewrite.cookie {
            assert!(
                !cookie
                    .split(';')
                    .any(|pair| pair.trim().starts_with("session=")),
                "the credential cookie goes upstream: {cookie:?}"
            );
        }
        let filled = |name| request.header(name).is_some_and(|v| !v.trim().is_empty());
        let preflight = request.method() == "OPTIONS"
            && request.has_no_body()
            && filled("origin")
            && filled("access-control-request-method");
        if preflight {
            assert!(add.is_empty(), "a preflight gained identity headers");
            for (name, _) in headers {
                assert!(
                    !self.config.credential_header_names.contains(name) || remove.contains(name),
                    "a preflight forwarded the credential header {name}"
                );
            }
            return;
        }
        for allowed in self.allowed.iter().filter(|a| Rc::ptr_eq(&a.add, add)) {
            let carriers =
                headers_for_key(&allowed.key, self.key_client(request), request, headers);
            if !carriers.is_empty() {
                // Agent tokens (all that reaches the service in strict mode) never go upstream.
                // A JWT read from a cookie leaves in a rewritten `Cookie` header.
                let stripped = |h: &&str| {
                    remove.iter().any(|r| r == h) || (*h == "cookie" && rewrite.cookie.is_some())
                };
                assert!(
                    self.known || carriers.iter().any(stripped),
                    "the credential's header ({carriers:?}) goes upstream: {remove:?}"
                );
                return;
            }
        }
        if self.known {
            // Any token the fixture's keys really signed may be valid at some instant.
            let mut secrets: Vec<&str> = vec![LIVE_KEY];
            secrets.extend(SIGNED_BY_JWKS);
            secrets.extend(minted.hs1_signed.iter().map(String::as_str));
            if headers
                .iter()
                .any(|(_, v)| secrets.iter().any(|s| v.contains(s)))
            {
                return;
            }
        }
        panic!(
            "Continue without a valid credential (mode {}): {headers:?} -> add {add:?} remove {remove:?}",
            if self.known { "known" } else { "strict" }
        );
    }
}

/// Every reply: a sane status, headers that cannot split the header block, JSON that parses,
/// and no credential from the request echoed back.
fn check_reply(reply: &Reply, headers: &[(String, String)], extra_echoes: &[String]) {
    assert!(
        (100..=599).contains(&reply.status),
        "status {}",
        reply.status
    );
    for (name, value) in &reply.headers {
        assert!(
            !name.is_empty() && !name.contains(['\r', '\n', '\0', ':', ' ']),
            "header name {name:?}"
        );
        assert!(
            !value.contains(['\r', '\n', '\0']),
            "reply header {name} breaks the header block: {value:?}"
        );
    }
    let json = reply
        .headers
        .iter()
        .any(|(n, v)| n == "content-type" && v.starts_with("application/json"));
    if json {
        serde_json::from_str::<Value>(&reply.body)
            .unwrap_or_else(|e| panic!("a JSON reply that does not parse ({e}): {:?}", reply.body));
    }
    // Credentials: long values of the credential headers that no echoed field also carries.
    let echoed: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| {
            !matches!(
                n.as_str(),
                "authorization" | "x-api-key" | "x-token" | "cookie"
            )
        })
        .map(|(_, v)| v.as_str())
        .chain(extra_echoes.iter().map(String::as_str))
        .collect();
    // Replies sanitise what they echo (the host in a realm loses quotes and backslashes).
    let sanitized: Vec<String> = echoed
        .iter()
        .map(|e| {
            e.chars()
                .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
                .collect()
        })
        .collect();
    let everything = format!("{}{:?}", reply.body, reply.headers);
    for (name, secret) in credential_candidates(headers) {
        if !matches!(name, "authorization" | "x-api-key" | "x-token" | "cookie")
            || secret.len() < 24
        {
            continue;
        }
        if echoed.iter().any(|e| e.contains(secret)) || sanitized.iter().any(|e| e.contains(secret))
        {
            continue;
        }
        let escaped = serde_json::to_string(secret).unwrap_or_default();
        assert!(
            !everything.contains(secret) && !everything.contains(escaped.trim_matches('"')),
            "the reply echoes the credential from {name}: {everything}"
        );
    }
}

/// For `config_parse`: any configuration that parses must decide a few ordinary requests
/// without panicking (in both `may_wait` modes, with and without a client address).
pub fn smoke_config(config: &Config) {
    let mut state = State::new(config);
    let mut shared = MemoryStore::default();
    let requests: [&[(&str, &str)]; 5] = [
        &[
            (":method", "GET"),
            (":path", "/"),
            (":authority", "api.example.com"),
        ],
        &[
            (":method", "POST"),
            (":path", "/v1/chat/completions?x=1"),
            (":authority", "a.example.com"),
            ("authorization", &const_bearer()),
            ("x-request-id", "rid"),
            ("accept", "text/event-stream"),
        ],
        &[
            (":method", "GET"),
            (":path", "/admin"),
            ("x-api-key", LIVE_KEY),
            ("x-forwarded-for", "192.0.2.1"),
            ("cookie", "session=a.b.c"),
        ],
        &[
            (":method", "OPTIONS"),
            (":path", "/x"),
            ("origin", "https://a"),
            ("access-control-request-method", "POST"),
        ],
        &[
            (":method", "POST"),
            (":path", "/health"),
            ("authorization", "Bearer opaque-agent-token"),
        ],
    ];
    for (i, pairs) in requests.iter().enumerate() {
        let source = (i % 2 == 0).then_some("192.0.2.10:4000");
        let request = Request::new(pairs).with_source_address(source);
        for may_wait in [true, false] {
            let mut metrics = Recorded::default();
            let ctx = Context {
                now_ms: crate::NOW_S as u64 * 1000,
                may_wait,
                log: i % 2 == 1,
            };
            let effects = Effects {
                metrics: &mut metrics,
                shared: &mut shared,
                random: &mut authgate::core::random::OsRandom,
            };
            let decision = decide(config, &mut state, &request, ctx, effects);
            if let Step::SessionReply(llm) = &decision.step {
                let _ = llm.build(&authgate::core::replies::body_scan::BodyFacts::Unread);
            }
        }
    }
}

fn const_bearer() -> String {
    format!("Bearer {}", fixtures::TOKEN_RS256)
}
