//! The reference authorization service that authgate calls out to (`POST /api/authorize`, the
//! "authgate" dialect), backed by SQLite so agent tokens survive a restart.
//!
//! - Agent tokens are stored only as SHA-256 hex digests, never raw.
//! - An expired agent session is answered `{"authorized": false, "reason": "session expired",
//!   "session": {"status": "expired"}}`, with no re-auth link: the gateway points the user at its
//!   own sign-in. Nothing restores a session without its owner signing in: a session is renewed
//!   only through `POST /api/sessions/renew`, by a gateway (`x-authgate-gateway-key`) that signed
//!   the token's owner in.
//! - JWT / API-key subjects are allowed unless the `subjects` table denies them.
//! - Allowed answers set only `x-auth-` headers (`x-auth-email`, `x-auth-authz-subject`): the
//!   filter removes every such name from client requests, so an upstream can trust them.
//! - `/admin/…` manages tokens and subjects and exposes the log of `/api/authorize` bodies. It
//!   always needs the admin bearer token (given, or generated at the first start and kept as a
//!   digest in the database), takes only `application/json` bodies, and answers only requests
//!   whose `Host` is one of the service's own names (loopback, the bound address, the public
//!   URL's host): a web page on the same machine can neither forge a call (CSRF) nor reach it
//!   under a name it controls (DNS rebinding). `/api/authorize` and `/api/sessions/renew` are
//!   for the gateway: they answer any `Host` (the filter sends `enterprise.authority`) but take
//!   only JSON and refuse requests a browser marks (`Origin`, `Sec-Fetch-*`).
//! - Any request under `/ext_authz/` (any method) is an Envoy `ext_authz` HTTP-service check: the
//!   decision comes from its `authorization: Bearer <token>`, by the same rules as
//!   `/api/authorize` (a token whose SHA-256 is a known agent token: allowed while the token is
//!   not revoked and its session is active; a JWT: its `sub` is allowed unless `subjects` denies
//!   it; any other token: denied). It answers 200 to allow and 403 to deny, with the decision
//!   as JSON. A JWT's signature is NOT checked here: put `jwt_authn` (with `forward: true`) before
//!   `ext_authz`, as `bench/` does for the native pair. Set the filter's `http_service.path_prefix`
//!   to `/ext_authz`. These checks are not logged.
//!
//! Nothing is cached in memory except that log: the CLI admin commands of `authgate-authz` change
//! the database file directly and the running server sees the change on the next request.

use std::collections::VecDeque;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Largest request body read; bigger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Session length given by a token's creation or a renewal, unless configured otherwise.
pub const DEFAULT_SESSION_TTL_S: u64 = 3600;
/// Longest decision cache lifetime handed to the filter.
const MAX_CACHE_TTL_S: i64 = 60;
/// The request log is for tests and debugging: keep it bounded in a long-running service.
const MAX_LOGGED_REQUESTS: usize = 10_000;
/// Request handling is short (one SQLite lookup), so a few workers are plenty.
const WORKERS: usize = 4;
/// What allowed answers set upstream: `x-auth-` names, which the filter removes from every
/// client request (a client's own `x-user-email` would reach the upstream untouched).
pub const EMAIL_HEADER: &str = "x-auth-email";
/// The subject the service authorized (a JWT's `sub`, an API key's id).
pub const SUBJECT_HEADER: &str = "x-auth-authz-subject";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS agent_tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_email TEXT NOT NULL,
    allowed INTEGER NOT NULL DEFAULT 1,
    session_expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS subjects (
    subject_id TEXT PRIMARY KEY,
    allowed INTEGER NOT NULL,
    reason TEXT
);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS used_tickets (
    ticket_id TEXT PRIMARY KEY,
    used_at INTEGER NOT NULL
);
";

/// Used re-auth ticket ids are kept this long (tickets live 10 minutes).
const USED_TICKET_KEEP_S: i64 = 86_400;

/// What a renewal request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Renewed { session_expires_at: i64 },
    Refused(&'static str),
}

/// Databases made when the service still had a sign-in-free re-auth page hold its one-time
/// codes: drop them, so none can renew a session any more.
const DROP_REAUTH_CODES: &str = "DROP TABLE IF EXISTS reauth_codes;";

/// The `settings` row holding the SHA-256 of the generated admin token.
const ADMIN_TOKEN_SETTING: &str = "admin_token_sha256";

// ---------------------------------------------------------------------------------------------
// Storage

/// A newly issued agent token: the raw value is shown once and never stored.
#[derive(Clone, Debug, PartialEq)]
pub struct NewToken {
    pub token: String,
    pub token_sha256: String,
}

/// The SQLite store. Used by the server and, directly on the file, by the CLI admin commands.
pub struct AuthzStore {
    conn: Connection,
}

struct TokenRow {
    user_email: String,
    allowed: bool,
    session_expires_at: i64,
}

struct SubjectRow {
    allowed: bool,
    reason: Option<String>,
}

impl AuthzStore {
    /// Opens (creating if missing) the database at `path`.
    pub fn open(path: &Path) -> Result<AuthzStore, String> {
        let conn = Connection::open(path)
            .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
        // The CLI may write while the server runs: wait for the other writer instead of failing.
        conn.busy_timeout(Duration::from_secs(5)).map_err(db)?;
        conn.execute_batch(SCHEMA)
            .map_err(|e| format!("cannot create tables in {}: {e}", path.display()))?;
        conn.execute_batch(DROP_REAUTH_CODES)
            .map_err(|e| format!("cannot migrate {}: {e}", path.display()))?;
        Ok(AuthzStore { conn })
    }

    /// Generates an admin token and stores its SHA-256 (never the token), replacing any earlier
    /// one: a running service accepts the new token, and no longer the old, from its next request.
    /// Returns the token, which cannot be shown again.
    pub fn rotate_admin_token(&self) -> Result<String, String> {
        let token = new_admin_token()?;
        self.conn
            .execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                params![ADMIN_TOKEN_SETTING, sha256_hex(&token)],
            )
            .map_err(db)?;
        Ok(token)
    }

    /// Generates and stores an admin token when the database has none: `Some(token)` when it did,
    /// `None` when one was stored already (only its digest is known).
    pub fn ensure_admin_token(&self) -> Result<Option<String>, String> {
        let token = new_admin_token()?;
        let inserted = self
            .conn
            .execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2) ON CONFLICT(name) DO NOTHING",
                params![ADMIN_TOKEN_SETTING, sha256_hex(&token)],
            )
            .map_err(db)?;
        Ok((inserted > 0).then_some(token))
    }

    /// The stored admin token's SHA-256 (hex), if any.
    fn admin_token_sha256(&self) -> Result<Option<String>, String> {
        self.conn
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                params![ADMIN_TOKEN_SETTING],
                |row| row.get(0),
            )
            .optional()
            .map_err(db)
    }

    /// Issues a random agent token (`agt_` + 40 hex) whose session lasts `session_ttl_s`.
    pub fn create_token(&self, email: &str, session_ttl_s: u64) -> Result<NewToken, String> {
        let token = format!("agt_{}", random_hex(20)?);
        let token_sha256 = sha256_hex(&token);
        let now = unix_now();
        self.conn
            .execute(
                "INSERT INTO agent_tokens (token_sha256, user_email, allowed, session_expires_at,
                 created_at) VALUES (?1, ?2, 1, ?3, ?4)",
                params![
                    token_sha256,
                    email,
                    now.saturating_add(secs(session_ttl_s)),
                    now
                ],
            )
            .map_err(db)?;
        Ok(NewToken {
            token,
            token_sha256,
        })
    }

    /// Ends the token's session now. `Ok(false)` when no such token.
    pub fn expire(&self, token_sha256: &str) -> Result<bool, String> {
        self.update_token(
            "UPDATE agent_tokens SET session_expires_at = ?2 WHERE token_sha256 = ?1",
            token_sha256,
            unix_now(),
        )
    }

    /// Denies the token from now on. `Ok(false)` when no such token.
    pub fn revoke(&self, token_sha256: &str) -> Result<bool, String> {
        self.update_token(
            "UPDATE agent_tokens SET allowed = ?2 WHERE token_sha256 = ?1",
            token_sha256,
            0,
        )
    }

    /// Undoes [`AuthzStore::revoke`]. `Ok(false)` when no such token.
    pub fn restore(&self, token_sha256: &str) -> Result<bool, String> {
        self.update_token(
            "UPDATE agent_tokens SET allowed = ?2 WHERE token_sha256 = ?1",
            token_sha256,
            1,
        )
    }

    fn update_token(&self, sql: &str, token_sha256: &str, value: i64) -> Result<bool, String> {
        let changed = self
            .conn
            .execute(sql, params![token_sha256.to_ascii_lowercase(), value])
            .map_err(db)?;
        Ok(changed > 0)
    }

    /// Sets (or replaces) the override for a JWT / API-key subject.
    pub fn set_subject(&self, id: &str, allowed: bool, reason: Option<&str>) -> Result<(), String> {
        self.conn
            .execute(
                "INSERT INTO subjects (subject_id, allowed, reason) VALUES (?1, ?2, ?3)
                 ON CONFLICT(subject_id) DO UPDATE SET allowed = excluded.allowed,
                 reason = excluded.reason",
                params![id, allowed, reason],
            )
            .map_err(db)?;
        Ok(())
    }

    /// The decision for one `/api/authorize` request, as the JSON reply body.
    fn authorize(&self, query: &AuthorizeQuery) -> Result<Value, String> {
        if let Some(token) = self.token(&query.token_sha256)? {
            return Ok(session_decision(&token, unix_now()));
        }
        if query.kind == SubjectKind::OpaqueToken {
            return Ok(deny("unknown agent token"));
        }
        let subject = self.subject(&query.subject_id)?;
        if let Some(SubjectRow {
            allowed: false,
            reason,
        }) = &subject
        {
            return Ok(deny(reason.as_deref().unwrap_or("subject denied")));
        }
        let reason = subject
            .and_then(|s| s.reason)
            .unwrap_or_else(|| "authenticated subject".to_string());
        // Only `x-auth-` names: the filter removes every one from client requests, so a client
        // cannot send its own copy and have the upstream take it for the service's.
        let mut headers = serde_json::Map::new();
        if !query.subject_id.is_empty() {
            headers.insert(SUBJECT_HEADER.into(), json!(query.subject_id));
        }
        if let Some(email) = query.user_email.as_deref().filter(|e| !e.is_empty()) {
            headers.insert(EMAIL_HEADER.into(), json!(email));
        }
        Ok(json!({
            "authorized": true,
            "reason": reason,
            "cache_ttl_s": MAX_CACHE_TTL_S,
            "headers": headers,
        }))
    }

    fn token(&self, token_sha256: &str) -> Result<Option<TokenRow>, String> {
        self.conn
            .query_row(
                "SELECT user_email, allowed, session_expires_at FROM agent_tokens
                 WHERE token_sha256 = ?1",
                params![token_sha256],
                |row| {
                    Ok(TokenRow {
                        user_email: row.get(0)?,
                        allowed: row.get(1)?,
                        session_expires_at: row.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(db)
    }

    fn subject(&self, id: &str) -> Result<Option<SubjectRow>, String> {
        self.conn
            .query_row(
                "SELECT allowed, reason FROM subjects WHERE subject_id = ?1",
                params![id],
                |row| {
                    Ok(SubjectRow {
                        allowed: row.get(0)?,
                        reason: row.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(db)
    }

    /// A signed-in user asks, through the gateway, to renew an agent token's session: only the
    /// token's owner, with a verified email, and only once per ticket.
    pub fn renew(
        &self,
        token_sha256: &str,
        ticket_id: &str,
        user_email: Option<&str>,
        email_verified: bool,
        session_ttl_s: u64,
    ) -> Result<Renewal, String> {
        let now = unix_now();
        let tx = self.conn.unchecked_transaction().map_err(db)?;
        tx.execute(
            "DELETE FROM used_tickets WHERE used_at < ?1",
            params![now - USED_TICKET_KEEP_S],
        )
        .map_err(db)?;
        let fresh = tx
            .execute(
                "INSERT INTO used_tickets (ticket_id, used_at) VALUES (?1, ?2)
                 ON CONFLICT(ticket_id) DO NOTHING",
                params![ticket_id, now],
            )
            .map_err(db)?;
        if fresh == 0 {
            return Ok(Renewal::Refused(
                "this re-authentication link was already used",
            ));
        }
        let owner: Option<(String, bool)> = tx
            .query_row(
                "SELECT user_email, allowed FROM agent_tokens WHERE token_sha256 = ?1",
                params![token_sha256],
                |row| Ok((row.get(0)?, row.get::<_, i64>(1)? != 0)),
            )
            .optional()
            .map_err(db)?;
        let refusal = match (&owner, user_email) {
            (None, _) => Some("the agent token is unknown"),
            (Some((_, false)), _) => Some("the agent token is revoked"),
            (Some(_), None) => Some("the identity provider gave no email address"),
            (Some((owner, true)), Some(email)) if !owner.eq_ignore_ascii_case(email) => {
                Some("you are not this agent token's owner")
            }
            _ if !email_verified => {
                Some("the identity provider has not verified your email address")
            }
            _ => None,
        };
        if let Some(reason) = refusal {
            // The ticket stays used: a refused link is not tried again.
            tx.commit().map_err(db)?;
            return Ok(Renewal::Refused(reason));
        }
        let expires_at = now.saturating_add(secs(session_ttl_s));
        tx.execute(
            "UPDATE agent_tokens SET session_expires_at = ?2 WHERE token_sha256 = ?1",
            params![token_sha256, expires_at],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Renewal::Renewed {
            session_expires_at: expires_at,
        })
    }
}

fn db(e: rusqlite::Error) -> String {
    format!("database: {e}")
}

fn deny(reason: &str) -> Value {
    json!({"authorized": false, "reason": reason})
}

/// The decision on a known agent token. An expired session carries no re-auth link: only its
/// owner signing in at the gateway renews it (`POST /api/sessions/renew`).
fn session_decision(token: &TokenRow, now: i64) -> Value {
    if !token.allowed {
        return deny("agent token revoked");
    }
    if token.session_expires_at <= now {
        return json!({
            "authorized": false,
            "reason": "session expired",
            "session": {"status": "expired"},
        });
    }
    // Never let the filter cache an allow beyond the end of the session.
    let cache_ttl_s = (token.session_expires_at - now).clamp(1, MAX_CACHE_TTL_S);
    json!({
        "authorized": true,
        "reason": "active session",
        "cache_ttl_s": cache_ttl_s,
        "headers": {EMAIL_HEADER: token.user_email},
        "session": {"status": "active"},
    })
}

fn secs(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| secs(d.as_secs()))
        .unwrap_or(0)
}

/// `adm_` + 64 hex: 256 random bits.
fn new_admin_token() -> Result<String, String> {
    Ok(format!("adm_{}", random_hex(32)?))
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| format!("random source: {e}"))?;
    Ok(hex::encode(buf))
}

/// Lowercase hex SHA-256 of `text`: how tokens are keyed in the store and by the filter.
pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// The /api/authorize request

#[derive(Clone, Copy, Debug, PartialEq)]
enum SubjectKind {
    Jwt,
    ApiKey,
    OpaqueToken,
}

struct AuthorizeQuery {
    user_email: Option<String>,
    kind: SubjectKind,
    subject_id: String,
    token_sha256: String,
}

fn parse_authorize(body: &Value) -> Result<AuthorizeQuery, String> {
    let root = body.as_object().ok_or("the body must be a JSON object")?;
    let user_email = match root.get("user_email") {
        None | Some(Value::Null) => None,
        Some(Value::String(email)) => Some(email.clone()),
        Some(_) => return Err("user_email must be a string or null".into()),
    };
    let subject = root
        .get("subject")
        .and_then(Value::as_object)
        .ok_or("subject must be an object")?;
    let kind = match subject.get("kind").and_then(Value::as_str) {
        Some("jwt") => SubjectKind::Jwt,
        Some("api_key") => SubjectKind::ApiKey,
        Some("opaque_token") => SubjectKind::OpaqueToken,
        _ => return Err("subject.kind must be \"jwt\", \"api_key\" or \"opaque_token\"".into()),
    };
    let subject_id = match subject.get("id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) if kind == SubjectKind::OpaqueToken => String::new(),
        _ => return Err("subject.id must be a string".into()),
    };
    let token_sha256 = subject
        .get("token_sha256")
        .and_then(Value::as_str)
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("subject.token_sha256 must be 64 hex digits")?
        .to_ascii_lowercase();
    let request = root
        .get("request")
        .and_then(Value::as_object)
        .ok_or("request must be an object")?;
    for field in ["method", "host", "path"] {
        if !request.get(field).is_some_and(Value::is_string) {
            return Err(format!("request.{field} must be a string"));
        }
    }
    Ok(AuthorizeQuery {
        user_email,
        kind,
        subject_id,
        token_sha256,
    })
}

// ---------------------------------------------------------------------------------------------
// The server

/// How [`AuthzService`] runs.
#[derive(Clone, Debug)]
pub struct AuthzOptions {
    /// `None`: any free port.
    pub port: Option<u16>,
    /// The URL the service is reached at, when not `http://127.0.0.1:<port>` (the default): its
    /// host is one of the `Host` values the admin API answers.
    pub public_url: Option<String>,
    /// The bearer token `/admin/` requires (`authorization: Bearer <admin_token>`). When `None`
    /// (or empty), the token stored in the database is required instead, generated at the first
    /// start (see [`AuthzService::admin_token_source`]).
    pub admin_token: Option<String>,
    /// Session length after a renewal (`POST /api/sessions/renew`).
    pub session_ttl_s: u64,
    /// The key a gateway sends (`x-authgate-gateway-key`) to renew sessions; None: renewal off.
    pub gateway_key: Option<String>,
}

impl Default for AuthzOptions {
    fn default() -> Self {
        AuthzOptions {
            port: None,
            public_url: None,
            admin_token: None,
            session_ttl_s: DEFAULT_SESSION_TTL_S,
            gateway_key: None,
        }
    }
}

/// Where the admin token of a running service came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminTokenSource {
    /// [`AuthzOptions::admin_token`] (`--admin-token`, or the environment).
    Configured,
    /// Generated at this start because the database had none; only its SHA-256 is stored, so
    /// this is the one time it can be shown.
    Generated(String),
    /// Generated at an earlier start (or by `authgate-authz admin-token`); only its SHA-256 is
    /// known.
    Stored,
}

/// A running authorization service; stops when dropped.
pub struct AuthzService {
    shared: Arc<Shared>,
    pool: WorkerPool,
    admin_token_source: AdminTokenSource,
}

struct Shared {
    store: Mutex<AuthzStore>,
    public_url: String,
    /// The configured admin token's SHA-256; `None`: the one stored in the database (read on
    /// every admin request, so `authgate-authz admin-token` takes effect at once).
    admin_token_sha256: Option<String>,
    /// The `Host` values (lowercase) the admin API answers.
    own_hosts: Vec<String>,
    session_ttl_s: u64,
    gateway_key: Option<String>,
    log: Mutex<RequestLog>,
}

#[derive(Default)]
struct RequestLog {
    bodies: VecDeque<Value>,
    total: usize,
}

impl AuthzService {
    /// Test helper: serves `db` on a free port of 127.0.0.1 with default options; panics when it
    /// cannot.
    pub fn start(db: &Path) -> AuthzService {
        AuthzService::start_with(db, AuthzOptions::default())
    }

    /// Test helper: serves `db` on 127.0.0.1 with `options`; panics when it cannot.
    pub fn start_with(db: &Path, options: AuthzOptions) -> AuthzService {
        AuthzService::serve(db, IpAddr::V4(Ipv4Addr::LOCALHOST), options)
            .unwrap_or_else(|e| panic!("authz service ({}): {e}", db.display()))
    }

    /// Serves `db` on `bind`:`options.port` (any free port when `None`).
    pub fn serve(db: &Path, bind: IpAddr, options: AuthzOptions) -> Result<AuthzService, String> {
        let store = AuthzStore::open(db)?;
        let port = options.port.unwrap_or(0);
        let listener = TcpListener::bind((bind, port))
            .map_err(|e| format!("cannot bind {bind}:{port}: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        // Generated only once the service can start, so that the one start that shows it runs.
        let configured = options.admin_token.filter(|t| !t.is_empty());
        let admin_token_source = match &configured {
            Some(_) => AdminTokenSource::Configured,
            None => match store.ensure_admin_token()? {
                Some(token) => AdminTokenSource::Generated(token),
                None => AdminTokenSource::Stored,
            },
        };
        let public_url = options
            .public_url
            .unwrap_or_else(|| format!("http://127.0.0.1:{port}"))
            .trim_end_matches('/')
            .to_string();
        let own_hosts = own_hosts(bind, port, &public_url);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            public_url,
            admin_token_sha256: configured.as_deref().map(sha256_hex),
            own_hosts,
            session_ttl_s: options.session_ttl_s,
            gateway_key: options.gateway_key.clone().filter(|k| !k.is_empty()),
            log: Mutex::new(RequestLog::default()),
        });
        let for_workers = Arc::clone(&shared);
        let pool = WorkerPool::start(
            listener,
            WORKERS,
            "authz",
            Arc::new(move |request, _stopping: &AtomicBool| {
                handle(&for_workers, request);
            }),
        )?;
        Ok(AuthzService {
            shared,
            pool,
            admin_token_source,
        })
    }

    pub fn port(&self) -> u16 {
        self.pool.port()
    }

    /// What a gateway sends once alice@example.com, the token's owner, signed in and confirmed
    /// (`POST /api/sessions/renew` with `gateway_key`): the only way a session is renewed.
    pub fn renew_as_gateway(
        &self,
        gateway_key: &str,
        token_sha256: &str,
        ticket_id: &str,
    ) -> crate::client::Reply {
        crate::client::Req::post(self.url("/api/sessions/renew"))
            .header("x-authgate-gateway-key", gateway_key)
            .json(
                &json!({"token_sha256": token_sha256, "ticket_id": ticket_id,
                          "user_email": "alice@example.com", "email_verified": true,
                          "subject": {"id": "alice", "issuer": "https://idp.example.com"}}),
            )
            .send()
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port())
    }

    /// The URL the service is reached at (`AuthzOptions::public_url`, without a trailing `/`).
    pub fn public_url(&self) -> &str {
        &self.shared.public_url
    }

    /// Where `/admin/`'s bearer token came from (a generated one is shown here, and only here).
    pub fn admin_token_source(&self) -> &AdminTokenSource {
        &self.admin_token_source
    }

    /// Test helper: issues an agent token; returns `(token, token_sha256)`.
    pub fn create_token(&self, email: &str, session_ttl_s: u64) -> (String, String) {
        let issued = self
            .store()
            .create_token(email, session_ttl_s)
            .unwrap_or_else(|e| panic!("authz service: create token: {e}"));
        (issued.token, issued.token_sha256)
    }

    /// Test helper: ends the token's session now; panics on an unknown token.
    pub fn expire(&self, token_sha256: &str) {
        self.change_token("expire", token_sha256, |s, h| s.expire(h));
    }

    /// Test helper: denies the token; panics on an unknown token.
    pub fn revoke(&self, token_sha256: &str) {
        self.change_token("revoke", token_sha256, |s, h| s.revoke(h));
    }

    /// Test helper: undoes [`AuthzService::revoke`]; panics on an unknown token.
    pub fn restore(&self, token_sha256: &str) {
        self.change_token("restore", token_sha256, |s, h| s.restore(h));
    }

    fn change_token(
        &self,
        what: &str,
        token_sha256: &str,
        change: impl FnOnce(&AuthzStore, &str) -> Result<bool, String>,
    ) {
        match change(&self.store(), token_sha256) {
            Ok(true) => {}
            Ok(false) => panic!("authz service: {what}: no token with sha256 {token_sha256}"),
            Err(e) => panic!("authz service: {what}: {e}"),
        }
    }

    /// Test helper: denies a JWT / API-key subject with this reason.
    pub fn deny_subject(&self, id: &str, reason: &str) {
        self.set_subject(id, false, Some(reason));
    }

    /// Test helper: sets a subject override (allowed or not, optional reason).
    pub fn set_subject(&self, id: &str, allowed: bool, reason: Option<&str>) {
        self.store()
            .set_subject(id, allowed, reason)
            .unwrap_or_else(|e| panic!("authz service: set subject {id}: {e}"));
    }

    /// Every `/api/authorize` body received (parsed JSON; a body that was not JSON appears as a
    /// JSON string), oldest first. Only the last 10 000 are kept.
    pub fn requests(&self) -> Vec<Value> {
        lock(&self.shared.log).bodies.iter().cloned().collect()
    }

    /// How many `/api/authorize` requests were received.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).total
    }

    fn store(&self) -> MutexGuard<'_, AuthzStore> {
        lock(&self.shared.store)
    }
}

/// What a route answers.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: String,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: body.to_string(),
        }
    }

    fn error(status: u16, error: &str, message: impl Into<String>) -> Reply {
        Reply::json(status, json!({"error": error, "message": message.into()}))
    }

    fn internal(e: String) -> Reply {
        Reply::error(500, "internal", e)
    }
}

fn handle(shared: &Shared, mut request: tiny_http::Request) {
    let reply = route(shared, &mut request);
    respond(request, reply.status, reply.content_type, reply.body);
}

fn route(shared: &Shared, request: &mut tiny_http::Request) -> Reply {
    let method = request.method().as_str().to_ascii_uppercase();
    let url = request.url().to_string();
    let path = url.split_once('?').map_or(url.as_str(), |(path, _)| path);
    // ext_authz keeps the client's method and path, so this prefix takes every method.
    if path == "/ext_authz" || path.starts_with("/ext_authz/") {
        return ext_authz(shared, request);
    }
    if let Some(admin_path) = path.strip_prefix("/admin/") {
        if let Some(refusal) = refuse_admin(shared, request, &method) {
            return refusal;
        }
        return admin(shared, request, &method, admin_path);
    }
    match (method.as_str(), path) {
        ("GET", "/health") => Reply::json(200, json!({"status": "ok"})),
        ("POST", "/api/authorize") => match refuse_authorize(request) {
            Some(refusal) => refusal,
            None => authorize(shared, request),
        },
        ("POST", "/api/sessions/renew") => match refuse_authorize(request) {
            Some(refusal) => refusal,
            None => renew(shared, request),
        },
        _ => not_found(&method, path),
    }
}

/// `/api/authorize` is for the gateway, which sends JSON and none of the headers a browser adds:
/// a web page's request (a form, or a fetch after DNS rebinding) is refused before it is read.
fn refuse_authorize(request: &tiny_http::Request) -> Option<Reply> {
    let from_browser = request.headers().iter().any(|h| {
        let name = h.field.as_str().as_str();
        name.eq_ignore_ascii_case("origin")
            || name
                .get(..10)
                .is_some_and(|p| p.eq_ignore_ascii_case("sec-fetch-"))
    });
    if from_browser {
        return Some(Reply::error(
            403,
            "forbidden",
            "/api/authorize answers the gateway, not browsers",
        ));
    }
    (!is_json(request)).then(unsupported_media_type)
}

fn unsupported_media_type() -> Reply {
    Reply::error(
        415,
        "unsupported_media_type",
        "send the request with content-type: application/json",
    )
}

/// Whether the request says `content-type: application/json` (parameters such as a charset
/// allowed).
fn is_json(request: &tiny_http::Request) -> bool {
    header(request, "content-type").is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// The `Host` values the admin API answers: loopback names and the bound address
/// with the port, and the public URL's authority (with and without its scheme's default port).
fn own_hosts(bind: IpAddr, port: u16, public_url: &str) -> Vec<String> {
    let mut hosts = Vec::new();
    let mut add = |host: String| {
        let host = host.to_ascii_lowercase();
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    };
    let mut names = vec![
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        "[::1]".to_string(),
    ];
    if !bind.is_unspecified() {
        names.push(match bind {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        });
    }
    for name in names {
        if port == 80 {
            add(name.clone());
        }
        add(format!("{name}:{port}"));
    }
    if let Some((scheme, rest)) = public_url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let default_port = match scheme.to_ascii_lowercase().as_str() {
            "https" => "443",
            _ => "80",
        };
        // The port is what follows the last ':' outside an IPv6 literal's brackets.
        let (host, explicit_port) = match authority.rsplit_once(':') {
            Some((host, p)) if !p.contains(']') => (host, Some(p)),
            _ => (authority, None),
        };
        if !host.is_empty() {
            add(format!("{host}:{}", explicit_port.unwrap_or(default_port)));
            if explicit_port.is_none_or(|p| p == default_port) {
                add(host.to_string());
            }
        }
    }
    hosts
}

/// Whether the request's `Host` names this service (DNS rebinding: a page that got its own name
/// pointed at 127.0.0.1 reaches the service under that name, which is not one of these).
fn own_host(shared: &Shared, request: &tiny_http::Request) -> bool {
    header(request, "host").is_some_and(|host| {
        let host = host.trim().to_ascii_lowercase();
        shared.own_hosts.contains(&host)
    })
}

fn not_found(method: &str, path: &str) -> Reply {
    Reply::error(404, "not_found", format!("no route for {method} {path}"))
}

fn authorize(shared: &Shared, request: &mut tiny_http::Request) -> Reply {
    let body = match read_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let parsed = serde_json::from_str::<Value>(&body);
    {
        let mut log = lock(&shared.log);
        log.total += 1;
        if log.bodies.len() == MAX_LOGGED_REQUESTS {
            log.bodies.pop_front();
        }
        let logged = parsed.as_ref().cloned().unwrap_or_else(|_| json!(body));
        log.bodies.push_back(logged);
    }
    let query = match parsed.map_err(|e| format!("invalid JSON: {e}")) {
        Ok(value) => match parse_authorize(&value) {
            Ok(query) => query,
            Err(e) => return Reply::error(400, "bad_request", e),
        },
        Err(e) => return Reply::error(400, "bad_request", e),
    };
    match lock(&shared.store).authorize(&query) {
        Ok(decision) => Reply::json(200, decision),
        Err(e) => Reply::internal(e),
    }
}

/// `POST /api/sessions/renew` from the gateway, after the token's owner signed in and confirmed:
/// `{"token_sha256", "ticket_id", "user_email", "email_verified", "subject": {"id", "issuer"}}`.
fn renew(shared: &Shared, request: &mut tiny_http::Request) -> Reply {
    let Some(expected) = &shared.gateway_key else {
        return Reply::error(
            404,
            "not_found",
            "session renewal is not configured (--gateway-key)",
        );
    };
    let presented = header(request, "x-authgate-gateway-key").unwrap_or_default();
    if !constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Reply::error(
            401,
            "unauthorized",
            "a wrong or missing x-authgate-gateway-key",
        );
    }
    let body = match read_json(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let text = |name: &str| body.get(name).and_then(Value::as_str);
    let (Some(token_sha256), Some(ticket_id)) = (text("token_sha256"), text("ticket_id")) else {
        return Reply::error(
            400,
            "bad_request",
            "token_sha256 and ticket_id are required",
        );
    };
    let verified = body.get("email_verified") == Some(&Value::Bool(true));
    let outcome = lock(&shared.store).renew(
        token_sha256,
        ticket_id,
        text("user_email"),
        verified,
        shared.session_ttl_s,
    );
    match outcome {
        Ok(Renewal::Renewed { session_expires_at }) => Reply::json(
            200,
            json!({"renewed": true, "session_expires_at": rfc3339(session_expires_at)}),
        ),
        Ok(Renewal::Refused(reason)) => {
            Reply::json(200, json!({"renewed": false, "reason": reason}))
        }
        Err(e) => Reply::internal(e),
    }
}

fn rfc3339(unix_s: i64) -> String {
    chrono::DateTime::from_timestamp(unix_s, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// An Envoy `ext_authz` HTTP-service check: 200 allows the client's request, 403 denies it.
fn ext_authz(shared: &Shared, request: &tiny_http::Request) -> Reply {
    let authorization = header(request, "authorization").unwrap_or_default();
    let Some(token) = bearer_token(&authorization) else {
        return Reply::json(403, deny("no bearer token"));
    };
    let query = ext_authz_query(token);
    match lock(&shared.store).authorize(&query) {
        Ok(decision) if decision["authorized"] == true => Reply::json(200, decision),
        Ok(decision) => Reply::json(403, decision),
        Err(e) => Reply::internal(e),
    }
}

fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The `/api/authorize` question a bearer token asks: a JWT (two dots and a payload with a string
/// `sub`, signature unchecked: a filter before ext_authz verified it) is its subject, anything
/// else an opaque agent token. Either way a known agent token's session decides first.
fn ext_authz_query(token: &str) -> AuthorizeQuery {
    let claims = (token.matches('.').count() == 2)
        .then(|| token.split('.').nth(1))
        .flatten()
        .and_then(|payload| URL_SAFE_NO_PAD.decode(payload).ok())
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok());
    let subject = claims.as_ref().and_then(|c| c["sub"].as_str());
    AuthorizeQuery {
        user_email: claims
            .as_ref()
            .and_then(|c| c["email"].as_str())
            .map(str::to_string),
        kind: if subject.is_some() {
            SubjectKind::Jwt
        } else {
            SubjectKind::OpaqueToken
        },
        subject_id: subject.unwrap_or_default().to_string(),
        token_sha256: sha256_hex(token),
    }
}

/// `Some(reply)` when the caller may not use `/admin/`: a `Host` that is not the service's own
/// (403), no valid admin bearer token in `authorization` (401; cookies are never read), or a
/// request other than GET/HEAD without `content-type: application/json` (415: forms and
/// `text/plain` are what a web page can send without a CORS preflight).
fn refuse_admin(shared: &Shared, request: &tiny_http::Request, method: &str) -> Option<Reply> {
    if !own_host(shared, request) {
        return Some(Reply::error(
            403,
            "forbidden",
            "the admin API answers only its own host names (loopback, the bound address, the \
             public URL's host)",
        ));
    }
    let presented = header(request, "authorization")
        .as_deref()
        .and_then(bearer_token)
        .map(sha256_hex);
    let expected = match &shared.admin_token_sha256 {
        Some(digest) => Ok(Some(digest.clone())),
        None => lock(&shared.store).admin_token_sha256(),
    };
    let expected = match expected {
        Ok(expected) => expected,
        Err(e) => return Some(Reply::internal(e)),
    };
    let authorized = match (presented, expected) {
        (Some(presented), Some(expected)) => {
            constant_time_eq(presented.as_bytes(), expected.as_bytes())
        }
        _ => false,
    };
    if !authorized {
        return Some(Reply::error(
            401,
            "unauthorized",
            "admin endpoints need `authorization: Bearer <admin token>` (the token authgate-authz \
             printed at its first start, --admin-token, or `authgate-authz admin-token` for a new one)",
        ));
    }
    if !matches!(method, "GET" | "HEAD") && !is_json(request) {
        return Some(unsupported_media_type());
    }
    None
}

fn admin(shared: &Shared, request: &mut tiny_http::Request, method: &str, path: &str) -> Reply {
    let segments: Vec<&str> = path.split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["tokens"]) => {
            let body = match read_json(request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let Some(email) = body.get("email").and_then(Value::as_str) else {
                return Reply::error(400, "bad_request", "\"email\" (a string) is required");
            };
            let ttl = match body.get("session_ttl_s") {
                None | Some(Value::Null) => DEFAULT_SESSION_TTL_S,
                Some(v) => match v.as_u64() {
                    Some(ttl) => ttl,
                    None => return Reply::error(400, "bad_request", "session_ttl_s must be >= 0"),
                },
            };
            match lock(&shared.store).create_token(email, ttl) {
                Ok(t) => Reply::json(
                    200,
                    json!({"token": t.token, "token_sha256": t.token_sha256}),
                ),
                Err(e) => Reply::internal(e),
            }
        }
        ("POST", ["tokens", sha, action]) => {
            let store = lock(&shared.store);
            let changed = match *action {
                "expire" => store.expire(sha),
                "revoke" => store.revoke(sha),
                "restore" => store.restore(sha),
                _ => return not_found(method, &format!("/admin/{path}")),
            };
            match changed {
                Ok(true) => Reply::json(200, json!({"token_sha256": sha, "done": action})),
                Ok(false) => Reply::error(404, "not_found", format!("no token with sha256 {sha}")),
                Err(e) => Reply::internal(e),
            }
        }
        ("POST", ["subjects"]) => {
            let body = match read_json(request) {
                Ok(body) => body,
                Err(reply) => return reply,
            };
            let id = body.get("id").and_then(Value::as_str);
            let allowed = body.get("allowed").and_then(Value::as_bool);
            let reason = body.get("reason").and_then(Value::as_str);
            let (Some(id), Some(allowed)) = (id, allowed) else {
                return Reply::error(400, "bad_request", "\"id\" and \"allowed\" are required");
            };
            match lock(&shared.store).set_subject(id, allowed, reason) {
                Ok(()) => Reply::json(200, json!({"id": id, "allowed": allowed, "reason": reason})),
                Err(e) => Reply::internal(e),
            }
        }
        ("GET", ["requests"]) => {
            let bodies: Vec<Value> = lock(&shared.log).bodies.iter().cloned().collect();
            Reply::json(200, Value::Array(bodies))
        }
        ("GET", ["requests", "count"]) => {
            Reply::json(200, json!({"count": lock(&shared.log).total}))
        }
        _ => not_found(method, &format!("/admin/{path}")),
    }
}

fn read_json(request: &mut tiny_http::Request) -> Result<Value, Reply> {
    let body = read_body(request)?;
    serde_json::from_str(&body)
        .map_err(|e| Reply::error(400, "bad_request", format!("invalid JSON: {e}")))
}

/// The body as UTF-8, at most [`MAX_BODY_BYTES`].
fn read_body(request: &mut tiny_http::Request) -> Result<String, Reply> {
    let too_large = || {
        Reply::error(
            413,
            "payload_too_large",
            format!("bodies are limited to {MAX_BODY_BYTES} bytes"),
        )
    };
    if request.body_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    // One byte over the limit is enough to know it is too large (chunked bodies have no length).
    let limit = u64::try_from(MAX_BODY_BYTES + 1).unwrap_or(u64::MAX);
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut bytes) {
        return Err(Reply::error(
            400,
            "bad_request",
            format!("reading the body: {e}"),
        ));
    }
    if bytes.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    String::from_utf8(bytes).map_err(|_| Reply::error(400, "bad_request", "the body is not UTF-8"))
}

fn header(request: &tiny_http::Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Worker pool (also used by the authz stub)

/// Handles one request; the flag turns true when the pool is stopping (for slow handlers).
pub(crate) type PoolHandler = Arc<dyn Fn(tiny_http::Request, &AtomicBool) + Send + Sync>;

/// A tiny_http server whose requests are handled by a fixed set of worker threads, each calling
/// `recv()`. Dropping it stops and joins the workers.
pub(crate) struct WorkerPool {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl WorkerPool {
    pub(crate) fn start(
        listener: TcpListener,
        workers: usize,
        name: &str,
        handler: PoolHandler,
    ) -> Result<WorkerPool, String> {
        let server = Arc::new(
            tiny_http::Server::from_listener(listener, None)
                .map_err(|e| format!("tiny_http: {e}"))?,
        );
        let mut pool = WorkerPool {
            server,
            stopping: Arc::new(AtomicBool::new(false)),
            workers: Vec::with_capacity(workers),
        };
        for index in 0..workers.max(1) {
            let server = Arc::clone(&pool.server);
            let stopping = Arc::clone(&pool.stopping);
            let handler = Arc::clone(&handler);
            // On failure `pool` drops here, which stops the workers already started.
            let worker = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || work(&server, &stopping, handler.as_ref()))
                .map_err(|e| format!("spawn worker: {e}"))?;
            pool.workers.push(worker);
        }
        Ok(pool)
    }

    pub(crate) fn port(&self) -> u16 {
        self.server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .unwrap_or(0)
    }
}

fn work(
    server: &tiny_http::Server,
    stopping: &AtomicBool,
    handler: &(dyn Fn(tiny_http::Request, &AtomicBool) + Send + Sync),
) {
    while !stopping.load(Ordering::SeqCst) {
        // Err is either our own unblock() (then `stopping` is set) or a failed accept: go on.
        let Ok(request) = server.recv() else {
            continue;
        };
        // A panicking handler must not take a worker away: the request is dropped (tiny_http
        // then closes it) and the worker goes on.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| handler(request, stopping)));
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Each unblock() releases one thread waiting in recv().
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers.drain(..) {
            let _ = worker.join();
        }
    }
}

/// Sends a reply; a client that went away is not an error worth reporting.
pub(crate) fn respond(request: tiny_http::Request, status: u16, content_type: &str, body: String) {
    let mut response = tiny_http::Response::from_string(body).with_status_code(status);
    if let Ok(header) = tiny_http::Header::from_bytes("content-type", content_type) {
        response = response.with_header(header);
    }
    let _ = request.respond(response);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Req;
    use crate::tokens::b64;

    fn authorize_body(kind: &str, id: &str, token_sha256: &str, email: Option<&str>) -> Value {
        json!({
            "user_email": email,
            "client_ip": "203.0.113.7",
            "subject": {
                "kind": kind,
                "id": id,
                "issuer": null,
                "token_sha256": token_sha256,
                "roles": [],
                "scopes": [],
            },
            "request": {"method": "POST", "host": "api.example.com", "path": "/v1/chat/completions"},
        })
    }

    /// Asks for a decision on an opaque agent token; returns the JSON decision.
    fn authorize_opaque(service: &AuthzService, token_sha256: &str) -> Value {
        let body = authorize_body("opaque_token", "", token_sha256, None);
        let reply = Req::post(service.url("/api/authorize")).json(&body).send();
        assert_eq!(reply.status, 200, "{reply}");
        reply.json().expect("JSON decision")
    }

    fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("authz.sqlite");
        (dir, db)
    }

    #[test]
    fn an_expired_session_is_renewed_only_by_a_signed_in_owner() {
        let (_dir, db) = temp_db();
        let key = "gateway-key-0123456789";
        let service = AuthzService::start_with(
            &db,
            AuthzOptions {
                public_url: Some("https://authz.example.com/".into()),
                session_ttl_s: 30,
                gateway_key: Some(key.to_string()),
                ..AuthzOptions::default()
            },
        );
        assert_eq!(service.public_url(), "https://authz.example.com");
        let (token, sha) = service.create_token("alice@example.com", 3600);
        assert!(token.starts_with("agt_") && token.len() == 44, "{token}");
        assert_eq!(sha, sha256_hex(&token));

        let active = authorize_opaque(&service, &sha);
        assert_eq!(active["authorized"], true, "{active}");
        assert_eq!(active["reason"], "active session");
        assert_eq!(active["cache_ttl_s"], 60);
        assert_eq!(
            active["headers"],
            json!({"x-auth-email": "alice@example.com"})
        );
        assert_eq!(active["session"]["status"], "active");

        service.expire(&sha);
        let expired = json!({"authorized": false, "reason": "session expired",
                             "session": {"status": "expired"}});
        assert_eq!(authorize_opaque(&service, &sha), expired, "no re-auth link");

        // The sign-in-free code page is gone, whatever is asked of it.
        for request in [
            Req::get(service.url("/reauth?code=00112233445566778899aabbccddeeff")),
            Req::get(service.url("/reauth")),
            Req::post(service.url("/reauth")).json(&json!({"code": "00112233"})),
            Req::post(service.url("/reauth"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("code=00112233"),
        ] {
            let reply = request.send();
            assert_eq!(reply.status, 404, "{reply}");
            assert_eq!(reply.json_str("error").as_deref(), Some("not_found"));
        }
        // Undoing a revocation is not a renewal.
        service.restore(&sha);
        assert_eq!(authorize_opaque(&service, &sha), expired);

        let renewed = Req::post(service.url("/api/sessions/renew"))
            .header("x-authgate-gateway-key", key)
            .json(&json!({"token_sha256": sha, "ticket_id": "t1",
                          "user_email": "alice@example.com", "email_verified": true}))
            .send();
        assert_eq!(
            renewed.json().map(|j| j["renewed"].clone()),
            Some(json!(true))
        );
        let active = authorize_opaque(&service, &sha);
        assert_eq!(active["authorized"], true, "{active}");
        assert_eq!(active["session"]["status"], "active");
        // The configured renewal length caps the cache lifetime.
        let ttl = active["cache_ttl_s"].as_i64().expect("cache_ttl_s");
        assert!((1..=30).contains(&ttl), "{active}");
    }

    #[test]
    fn an_old_database_loses_its_reauth_codes() {
        let (_dir, db) = temp_db();
        {
            let conn = Connection::open(&db).expect("open");
            conn.execute_batch(
                "CREATE TABLE agent_tokens (token_sha256 TEXT PRIMARY KEY,
                     user_email TEXT NOT NULL, allowed INTEGER NOT NULL DEFAULT 1,
                     session_expires_at INTEGER NOT NULL, created_at INTEGER NOT NULL);
                 CREATE TABLE reauth_codes (code TEXT PRIMARY KEY,
                     token_sha256 TEXT NOT NULL REFERENCES agent_tokens(token_sha256),
                     expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
                 CREATE UNIQUE INDEX reauth_codes_one_per_token ON reauth_codes(token_sha256);",
            )
            .expect("old schema");
            conn.execute(
                "INSERT INTO agent_tokens VALUES (?1, 'old@example.com', 1, 0, 0)",
                params![sha256_hex("agt_old")],
            )
            .expect("old token");
            conn.execute(
                "INSERT INTO reauth_codes VALUES ('00112233', ?1, ?2, 0)",
                params![sha256_hex("agt_old"), unix_now() + 600],
            )
            .expect("old code");
        }
        let service = AuthzService::start(&db);
        let tables: i64 = service
            .store()
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE 'reauth_codes%'",
                [],
                |row| row.get(0),
            )
            .expect("count");
        assert_eq!(tables, 0, "the table and its index are gone");
        let old = authorize_opaque(&service, &sha256_hex("agt_old"));
        assert_eq!(old["reason"], "session expired", "tokens are kept: {old}");
        assert_eq!(
            Req::get(service.url("/reauth?code=00112233")).send().status,
            404
        );
        assert_eq!(
            authorize_opaque(&service, &sha256_hex("agt_old"))["authorized"],
            false
        );
    }

    #[test]
    fn cache_ttl_never_outlives_the_session() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start(&db);
        let (_, sha) = service.create_token("carol@example.com", 10);
        let active = authorize_opaque(&service, &sha);
        let ttl = active["cache_ttl_s"].as_i64().expect("cache_ttl_s");
        assert!((1..=10).contains(&ttl), "{active}");
    }

    #[test]
    fn revoked_and_unknown_tokens_are_denied() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start(&db);
        let (_, sha) = service.create_token("dave@example.com", 3600);
        service.revoke(&sha);
        let revoked = authorize_opaque(&service, &sha);
        assert_eq!(
            revoked,
            json!({"authorized": false, "reason": "agent token revoked"})
        );
        service.restore(&sha);
        assert_eq!(authorize_opaque(&service, &sha)["authorized"], true);

        let unknown = authorize_opaque(&service, &sha256_hex("agt_never_issued"));
        assert_eq!(
            unknown,
            json!({"authorized": false, "reason": "unknown agent token"})
        );
    }

    #[test]
    fn jwt_and_api_key_subjects_allowed_unless_denied() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start(&db);
        let url = service.url("/api/authorize");
        let jwt_sha = sha256_hex("eyJ.some.jwt");

        let body = authorize_body("jwt", "user-1", &jwt_sha, Some("u1@example.com"));
        let allowed = Req::post(&url).json(&body).send().json().expect("JSON");
        assert_eq!(
            allowed,
            json!({
                "authorized": true,
                "reason": "authenticated subject",
                "cache_ttl_s": 60,
                "headers": {"x-auth-authz-subject": "user-1", "x-auth-email": "u1@example.com"},
            })
        );

        service.deny_subject("key-7", "key suspended");
        let body = authorize_body("api_key", "key-7", &sha256_hex("sk-test"), None);
        let denied = Req::post(&url).json(&body).send().json().expect("JSON");
        assert_eq!(
            denied,
            json!({"authorized": false, "reason": "key suspended"})
        );

        // A JWT that is also a registered agent token follows the session rules.
        let (token, sha) = service.create_token("agent@example.com", 3600);
        service.expire(&sha);
        let body = authorize_body("jwt", "user-1", &sha, None);
        let expired = Req::post(&url).json(&body).send().json().expect("JSON");
        assert_eq!(
            expired["reason"], "session expired",
            "{expired} for {token}"
        );
    }

    #[test]
    fn ext_authz_checks_decide_by_the_bearer_token() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start(&db);
        let check = |method: &str, bearer: Option<&str>| {
            let request = Req::new(method, service.url("/ext_authz/v1/chat/completions?x=1"));
            match bearer {
                Some(token) => request.bearer(token),
                None => request,
            }
            .send()
        };

        let (agent, sha) = service.create_token("hana@example.com", 3600);
        for method in ["GET", "POST", "DELETE"] {
            let allowed = check(method, Some(&agent));
            assert_eq!(allowed.status, 200, "{method}: {allowed}");
            assert_eq!(
                allowed.json_str("reason").as_deref(),
                Some("active session")
            );
        }
        service.expire(&sha);
        let expired = check("GET", Some(&agent));
        assert_eq!(expired.status, 403, "{expired}");
        assert_eq!(
            expired.json_str("reason").as_deref(),
            Some("session expired")
        );
        service.revoke(&sha);
        assert_eq!(check("GET", Some(&agent)).status, 403);

        let unknown = check("GET", Some("agt_never_issued"));
        assert_eq!(unknown.status, 403, "{unknown}");
        assert_eq!(
            unknown.json_str("reason").as_deref(),
            Some("unknown agent token")
        );
        let missing = check("GET", None);
        assert_eq!(missing.status, 403, "{missing}");
        assert_eq!(
            missing.json_str("reason").as_deref(),
            Some("no bearer token")
        );
        let basic = Req::get(service.url("/ext_authz/"))
            .header("authorization", "Basic dXNlcjpwdw==")
            .send();
        assert_eq!(basic.status, 403, "{basic}");

        // A JWT's subject is allowed unless denied (its signature is someone else's job).
        let jwt = |sub: &str| {
            let claims = json!({"sub": sub, "email": format!("{sub}@example.com")});
            format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", b64(&claims.to_string()))
        };
        let allowed = check("GET", Some(&jwt("user-9")));
        assert_eq!(allowed.status, 200, "{allowed}");
        assert_eq!(
            allowed.json_str("reason").as_deref(),
            Some("authenticated subject")
        );
        service.deny_subject("user-9", "suspended");
        let denied = check("GET", Some(&jwt("user-9")));
        assert_eq!(denied.status, 403, "{denied}");
        assert_eq!(denied.json_str("reason").as_deref(), Some("suspended"));
        let no_sub = format!("eyJhbGciOiJSUzI1NiJ9.{}.c2ln", b64("{\"iss\":\"x\"}"));
        assert_eq!(check("GET", Some(&no_sub)).status, 403);

        let health = Req::get(service.url("/ext_authzfoo")).send();
        assert_eq!(health.status, 404, "only the /ext_authz/ prefix is a check");
        assert_eq!(service.request_count(), 0, "checks are not logged");
    }

    #[test]
    fn bad_input_is_rejected_and_the_service_keeps_working() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start(&db);
        let url = service.url("/api/authorize");
        let sha = sha256_hex("x");
        let cases = [
            "not json{".to_string(),
            "[]".to_string(),
            json!({"subject": {"kind": "jwt", "id": "a", "token_sha256": sha}}).to_string(),
            json!({"subject": {"kind": "saml", "id": "a", "token_sha256": sha},
                   "request": {"method": "GET", "host": "h", "path": "/"}})
            .to_string(),
            json!({"subject": {"kind": "jwt", "id": "a", "token_sha256": "abc"},
                   "request": {"method": "GET", "host": "h", "path": "/"}})
            .to_string(),
        ];
        for body in &cases {
            let reply = Req::post(&url)
                .header("content-type", "application/json")
                .body(body.as_str())
                .send();
            assert_eq!(reply.status, 400, "{body}: {reply}");
            assert_eq!(reply.json_str("error").as_deref(), Some("bad_request"));
            assert!(reply.json_str("message").is_some(), "{reply}");
        }
        let huge = "x".repeat(MAX_BODY_BYTES + 1);
        let huge = Req::post(&url)
            .header("content-type", "application/json")
            .body(huge);
        assert_eq!(huge.send().status, 413);
        assert_eq!(Req::get(&url).send().status, 404);
        let missing = Req::get(service.url("/nope")).send();
        assert_eq!(missing.status, 404);
        assert_eq!(missing.json_str("error").as_deref(), Some("not_found"));

        let health = Req::get(service.url("/health")).send();
        assert_eq!(health.status, 200);
        assert_eq!(health.json(), Some(json!({"status": "ok"})));
        // Every body that was read is logged, the unparseable one as a string.
        assert_eq!(service.request_count(), cases.len());
        assert_eq!(service.requests()[0], json!("not json{"));
    }

    #[test]
    fn admin_api_with_an_admin_token() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start_with(
            &db,
            AuthzOptions {
                admin_token: Some("s3cret".into()),
                ..AuthzOptions::default()
            },
        );
        let create = json!({"email": "erin@example.com", "session_ttl_s": 120});
        let refused = Req::post(service.url("/admin/tokens")).json(&create).send();
        assert_eq!(refused.status, 401, "{refused}");
        let wrong = Req::post(service.url("/admin/tokens"))
            .bearer("guess")
            .json(&create)
            .send();
        assert_eq!(wrong.status, 401, "{wrong}");

        let created = Req::post(service.url("/admin/tokens"))
            .bearer("s3cret")
            .json(&create)
            .send();
        assert_eq!(created.status, 200, "{created}");
        let token = created.json_str("token").expect("token");
        let sha = created.json_str("token_sha256").expect("token_sha256");
        assert_eq!(sha, sha256_hex(&token));
        let active = authorize_opaque(&service, &sha);
        assert!((1..=60).contains(&active["cache_ttl_s"].as_i64().unwrap_or(0)));

        let admin_post = |path: &str| {
            Req::post(service.url(path))
                .bearer("s3cret")
                .header("content-type", "application/json")
                .body("")
                .send()
        };
        assert_eq!(
            admin_post(&format!("/admin/tokens/{sha}/revoke")).status,
            200
        );
        assert_eq!(
            authorize_opaque(&service, &sha)["reason"],
            "agent token revoked"
        );
        assert_eq!(
            admin_post(&format!("/admin/tokens/{sha}/restore")).status,
            200
        );
        assert_eq!(
            admin_post(&format!("/admin/tokens/{sha}/expire")).status,
            200
        );
        assert_eq!(
            authorize_opaque(&service, &sha)["reason"],
            "session expired"
        );
        let unknown = sha256_hex("nobody");
        assert_eq!(
            admin_post(&format!("/admin/tokens/{unknown}/expire")).status,
            404
        );

        let subject = Req::post(service.url("/admin/subjects"))
            .bearer("s3cret")
            .json(&json!({"id": "svc-1", "allowed": false, "reason": "blocked"}))
            .send();
        assert_eq!(subject.status, 200, "{subject}");
        let body = authorize_body("api_key", "svc-1", &sha256_hex("k"), None);
        let reply = Req::post(service.url("/api/authorize")).json(&body).send();
        assert_eq!(reply.json_str("reason").as_deref(), Some("blocked"));

        let log = Req::get(service.url("/admin/requests"))
            .bearer("s3cret")
            .send();
        let log = log.json().expect("JSON array");
        let log = log.as_array().expect("array");
        assert_eq!(log.len(), 4);
        assert_eq!(log[3], body, "oldest first, bodies as received");
        let count = Req::get(service.url("/admin/requests/count"))
            .bearer("s3cret")
            .send();
        assert_eq!(count.json(), Some(json!({"count": 4})));
        assert_eq!(service.requests().len(), 4);
    }

    #[test]
    fn admin_api_without_a_configured_token_needs_the_generated_one() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start(&db);
        let AdminTokenSource::Generated(token) = service.admin_token_source().clone() else {
            panic!("a fresh database gets a generated admin token");
        };
        assert!(token.starts_with("adm_") && token.len() == 68, "{token}");
        let count = Req::get(service.url("/admin/requests/count")).send();
        assert_eq!(count.status, 401, "loopback is not a credential: {count}");
        let count = Req::get(service.url("/admin/requests/count"))
            .bearer(&token)
            .send();
        assert_eq!(count.json(), Some(json!({"count": 0})), "{count}");
        let bad = Req::post(service.url("/admin/tokens"))
            .bearer(&token)
            .header("content-type", "application/json")
            .body("{")
            .send();
        assert_eq!(bad.status, 400, "{bad}");
        let bytes = std::fs::read(&db).expect("read the database file");
        let stored = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(stored(&sha256_hex(&token)), "its digest is stored");
        assert!(
            !stored(token.trim_start_matches("adm_")),
            "the token is not"
        );
    }

    #[test]
    fn own_hosts_cover_loopback_the_bound_address_and_the_public_url() {
        let hosts = own_hosts(
            IpAddr::from([10, 0, 0, 5]),
            8083,
            "https://Authz.Example.com/base",
        );
        for host in [
            "127.0.0.1:8083",
            "localhost:8083",
            "[::1]:8083",
            "10.0.0.5:8083",
            "authz.example.com",
            "authz.example.com:443",
        ] {
            assert!(hosts.iter().any(|h| h == host), "{host} in {hosts:?}");
        }
        assert!(!hosts.iter().any(|h| h == "localhost"), "{hosts:?}");
        let hosts = own_hosts("::".parse().expect("ip"), 80, "http://user@[fd00::1]:8080");
        for host in ["localhost", "127.0.0.1:80", "[fd00::1]:8080"] {
            assert!(hosts.iter().any(|h| h == host), "{host} in {hosts:?}");
        }
        assert!(!hosts.iter().any(|h| h == "[fd00::1]"), "{hosts:?}");
        assert!(!hosts.iter().any(|h| h.starts_with("[::]")), "{hosts:?}");
    }

    #[test]
    fn tokens_survive_a_restart_and_are_stored_only_as_digests() {
        let (_dir, db) = temp_db();
        let (token, sha) = {
            let service = AuthzService::start(&db);
            let issued = service.create_token("frank@example.com", 3600);
            assert_eq!(authorize_opaque(&service, &issued.1)["authorized"], true);
            issued
        };
        let service = AuthzService::start(&db);
        let active = authorize_opaque(&service, &sha);
        assert_eq!(active["authorized"], true, "{active}");
        assert_eq!(active["headers"]["x-auth-email"], "frank@example.com");
        drop(service);

        let bytes = std::fs::read(&db).expect("read the database file");
        let contains = |needle: &str| bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
        assert!(contains(&sha), "the digest is the key");
        assert!(!contains(&token), "the raw token must never be stored");
        assert!(!contains(token.trim_start_matches("agt_")));
    }

    #[test]
    fn store_works_on_the_file_while_the_service_runs() {
        let (_dir, db) = temp_db();
        let service = AuthzService::start(&db);
        let cli = AuthzStore::open(&db).expect("open");
        let issued = cli.create_token("gina@example.com", 3600).expect("create");
        assert_eq!(
            authorize_opaque(&service, &issued.token_sha256)["authorized"],
            true
        );
        assert!(cli.revoke(&issued.token_sha256).expect("revoke"));
        assert_eq!(
            authorize_opaque(&service, &issued.token_sha256)["reason"],
            "agent token revoked"
        );
        assert!(!cli.expire(&sha256_hex("nobody")).expect("expire"));
    }

    #[test]
    fn renewal_is_for_the_gateway_the_owner_and_one_ticket() {
        let (_dir, db) = temp_db();
        let key = "gateway-key-0123456789";
        let service = AuthzService::start_with(
            &db,
            AuthzOptions {
                gateway_key: Some(key.to_string()),
                ..AuthzOptions::default()
            },
        );
        let (_, sha) = service.create_token("alice@example.com", 3600);
        service.expire(&sha);
        let renew = |gateway_key: &str, body: Value| {
            Req::post(service.url("/api/sessions/renew"))
                .header("x-authgate-gateway-key", gateway_key)
                .json(&body)
                .send()
        };
        let ask = |ticket: &str, email: &str, verified: bool| {
            json!({"token_sha256": sha, "ticket_id": ticket, "user_email": email,
                   "email_verified": verified, "subject": {"id": "u1", "issuer": "https://idp"}})
        };
        assert_eq!(
            renew("wrong-key-0123456789", ask("t1", "alice@example.com", true)).status,
            401
        );
        let refused = |reply: crate::client::Reply| {
            reply
                .json()
                .map(|j| (j["renewed"].clone(), j["reason"].clone()))
        };
        let (renewed, reason) =
            refused(renew(key, ask("t2", "mallory@example.com", true))).unwrap();
        assert_eq!(renewed, json!(false));
        assert_eq!(reason, json!("you are not this agent token's owner"));
        let (renewed, _) = refused(renew(key, ask("t3", "alice@example.com", false))).unwrap();
        assert_eq!(renewed, json!(false), "an unverified email renews nothing");
        assert_eq!(
            authorize_opaque(&service, &sha)["session"]["status"],
            "expired"
        );
        let ok = renew(key, ask("t4", "Alice@Example.com", true))
            .json()
            .unwrap();
        assert_eq!(ok["renewed"], json!(true), "{ok}");
        assert!(ok["session_expires_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')));
        assert_eq!(authorize_opaque(&service, &sha)["authorized"], json!(true));
        let (renewed, reason) = refused(renew(key, ask("t4", "alice@example.com", true))).unwrap();
        assert_eq!(
            (renewed, reason),
            (
                json!(false),
                json!("this re-authentication link was already used")
            )
        );
        let browser = Req::post(service.url("/api/sessions/renew"))
            .header("x-authgate-gateway-key", key)
            .header("origin", "https://evil.example")
            .json(&ask("t5", "alice@example.com", true))
            .send();
        assert_eq!(browser.status, 403, "a browser cannot call it");
    }
}
