//! Agent re-authentication: an expired agent session's reply carries a sealed ticket; opening it
//! signs the user in afresh (`prompt=login`), then a page names the token (its fingerprint, and
//! the address, agent and time of the request that got the ticket) and only that page's
//! same-origin POST asks the authorization service to renew the session, for the signed-in
//! owner. A link that is merely opened, previewed or phished renews nothing.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::core::login::config::Login;
use crate::core::login::flow::query_param;
use crate::core::login::id_token::SignedIn;
use crate::core::login::seal::Purpose;
use crate::core::login::session::set_cookie;
use crate::core::random::Random;
use crate::core::replies::{self, Reply};
use crate::core::request::Request;

/// A ticket is good for this long after the reply that carried it.
pub const TICKET_TTL_S: i64 = 600;
/// The confirmation page must be answered within this.
pub const CONFIRM_TTL_S: u64 = 300;

/// What a re-auth link carries, sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// The agent token's SHA-256 (hex), as the service knows it.
    pub token_sha256: String,
    /// Random: the service renews once per ticket.
    pub id: String,
    pub exp: i64,
    /// The request that got the ticket: its client address, User-Agent and time.
    pub ip: String,
    pub agent: String,
    pub at: i64,
}

impl Ticket {
    /// A ticket for the request that just got a session-expired answer; None without randomness.
    pub fn issue(
        token_sha256: &[u8; 32],
        ip: Option<&str>,
        agent: Option<&str>,
        now_s: i64,
        random: &mut dyn Random,
    ) -> Option<Ticket> {
        let mut id = [0u8; 16];
        random.fill(&mut id).then_some(())?;
        Some(Ticket {
            token_sha256: hex::encode(token_sha256),
            id: hex::encode(id),
            exp: now_s.saturating_add(TICKET_TTL_S),
            ip: ip.unwrap_or("unknown").chars().take(64).collect(),
            agent: agent
                .unwrap_or("unknown")
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect(),
            at: now_s,
        })
    }

    /// The re-auth URL the agent shows its user.
    pub fn url(&self, login: &Login, random: &mut dyn Random) -> Option<String> {
        let mut nonce = [0u8; 12];
        random.fill(&mut nonce).then_some(())?;
        let sealed = login
            .keys
            .seal(Purpose::Ticket, &serde_json::to_vec(self).ok()?, nonce)?;
        Some(format!(
            "{}{}?ticket={sealed}",
            login.public_url, login.reauth_path
        ))
    }

    pub fn open(login: &Login, sealed: &str, now_s: i64) -> Option<Ticket> {
        let plain = login.keys.open(Purpose::Ticket, sealed)?;
        let ticket: Ticket = serde_json::from_slice(&plain).ok()?;
        (ticket.exp > now_s).then_some(ticket)
    }

    fn fingerprint(&self) -> &str {
        self.token_sha256.get(..12).unwrap_or("")
    }
}

/// Who signed in to confirm a renewal, and the ticket, until the confirmation page is posted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub ticket: Ticket,
    pub sub: String,
    pub iss: String,
    pub email: Option<String>,
    pub email_verified: bool,
    /// The value the page's form must send back.
    pub csrf: String,
    pub exp: i64,
}

fn confirmation_cookie_name(tag: &str, secure: bool) -> String {
    if secure {
        format!("__Host-authgate_r_{tag}")
    } else {
        format!("authgate_r_{tag}")
    }
}

/// After the fresh sign-in: the page that names the token, with the one button that renews.
pub fn confirm_page(
    login: &Login,
    ticket: Ticket,
    signed_in: &SignedIn,
    iss: &str,
    now_s: i64,
    source: &mut dyn Random,
) -> Option<Reply> {
    let mut random = [0u8; 4 + 24 + 12];
    source.fill(&mut random).then_some(())?;
    let tag = hex::encode(&random[..4]);
    let csrf = hex::encode(&random[4..28]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&random[28..]);
    let confirmation = Confirmation {
        ticket,
        sub: signed_in.subject.clone(),
        iss: iss.to_string(),
        email: signed_in.email.clone(),
        email_verified: signed_in.email_verified,
        csrf: csrf.clone(),
        exp: now_s.saturating_add(i64::try_from(CONFIRM_TTL_S).unwrap_or(0)),
    };
    let sealed = login.keys.seal(
        Purpose::Renewal,
        &serde_json::to_vec(&confirmation).ok()?,
        nonce,
    )?;
    let ticket = &confirmation.ticket;
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let when = chrono::DateTime::from_timestamp(ticket.at, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default();
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Restore an agent session</title>\
         </head><body><h1>Restore an agent session?</h1>\
         <p>You are signed in as <b id=\"who\">{who}</b>.</p>\
         <p>An agent's session expired. Restore it only if this is your agent:</p>\
         <ul><li>token <code id=\"token\">{fp}</code></li><li>from <code id=\"ip\">{ip}</code></li>\
         <li>agent <code id=\"agent\">{agent}</code></li><li>at <code id=\"at\">{when}</code></li></ul>\
         <form method=\"post\" action=\"{action}?confirm={tag}&amp;csrf={csrf}\">\
         <button id=\"renew\" type=\"submit\">Restore this agent's session</button></form>\
         <p>If you do not recognise it, close this page: nothing is restored.</p></body></html>\n",
        who = escape(signed_in.email.as_deref().unwrap_or(&signed_in.subject)),
        fp = escape(ticket.fingerprint()),
        ip = escape(&ticket.ip),
        agent = escape(&ticket.agent),
        action = escape(&login.reauth_path),
    );
    Some(Reply {
        status: 200,
        headers: vec![
            (
                "content-type".to_string(),
                "text/html; charset=utf-8".to_string(),
            ),
            ("cache-control".to_string(), "no-store".to_string()),
            (
                "set-cookie".to_string(),
                set_cookie(
                    login,
                    &confirmation_cookie_name(&tag, login.secure),
                    Some(&sealed),
                    CONFIRM_TTL_S,
                ),
            ),
        ],
        body,
    })
}

/// The renewal call to make, and what its answer needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renewal {
    pub body: Vec<u8>,
    /// The token's SHA-256: its cached decisions are dropped on every worker once renewed.
    pub token_sha256: [u8; 32],
    /// The confirmation cookie to clear.
    pub cookie: String,
    pub html: bool,
    pub request_id: Option<String>,
}

/// `POST reauth_path?confirm=…&csrf=…`: the confirmation page's button. Only from the gateway's
/// own origin, with the cookie the page set and its CSRF value.
pub fn confirmed(login: &Login, request: &Request<'_>, now_s: i64) -> Result<Renewal, Reply> {
    let html = true;
    let request_id = request.request_id();
    let refuse = |status: u16, message: &str| {
        replies::page(status, "reauth_failed", message, html, request_id)
    };
    let same_origin = match request.header("sec-fetch-site") {
        Some(site) => site == "same-origin",
        None => request.header("origin") == Some(login.public_url.as_str()),
    };
    if !same_origin {
        return Err(refuse(403, "confirm on the gateway's own page"));
    }
    let query = request.query().unwrap_or("");
    let (Some(tag), Some(csrf)) = (query_param(query, "confirm"), query_param(query, "csrf"))
    else {
        return Err(refuse(
            400,
            "the confirmation is incomplete: open the link again",
        ));
    };
    if tag.len() != 8 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refuse(
            400,
            "the confirmation is malformed: open the link again",
        ));
    }
    let cookie = confirmation_cookie_name(&tag, login.secure);
    let confirmation = request
        .cookie(&cookie)
        .and_then(|sealed| login.keys.open(Purpose::Renewal, sealed))
        .and_then(|plain| serde_json::from_slice::<Confirmation>(&plain).ok())
        .filter(|c| c.exp > now_s && c.ticket.exp > now_s)
        .filter(|c| bool::from(c.csrf.as_bytes().ct_eq(csrf.as_bytes())));
    let Some(confirmation) = confirmation else {
        return Err(refuse(
            400,
            "this confirmation expired or was already used: open the link again",
        ));
    };
    let mut token_sha256 = [0u8; 32];
    if hex::decode_to_slice(&confirmation.ticket.token_sha256, &mut token_sha256).is_err() {
        return Err(refuse(400, "the ticket is malformed"));
    }
    let body = json!({
        "token_sha256": confirmation.ticket.token_sha256,
        "ticket_id": confirmation.ticket.id,
        "user_email": confirmation.email,
        "email_verified": confirmation.email_verified,
        "subject": {"id": confirmation.sub, "issuer": confirmation.iss},
    });
    Ok(Renewal {
        body: body.to_string().into_bytes(),
        token_sha256,
        cookie,
        html,
        request_id: request_id.map(str::to_string),
    })
}

/// What the service's renewal answer comes to: the page, and whether the session was renewed.
pub fn renewed(
    login: &Login,
    renewal: &Renewal,
    status: u16,
    body: Option<&[u8]>,
) -> (Reply, bool) {
    let answer: Option<Value> = body.and_then(|b| serde_json::from_slice(b).ok());
    let request_id = renewal.request_id.as_deref();
    let (mut reply, ok) = match (status, answer) {
        (200, Some(answer)) if answer["renewed"] == Value::Bool(true) => (
            replies::page(
                200,
                "renewed",
                "The agent's session is restored: it can carry on with the same token.",
                renewal.html,
                request_id,
            ),
            true,
        ),
        (200, Some(answer)) if answer["renewed"] == Value::Bool(false) => {
            let reason: String = answer["reason"]
                .as_str()
                .unwrap_or("the authorization service refused")
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            (
                replies::page(
                    403,
                    "not_renewed",
                    &format!("Not restored: {reason}"),
                    renewal.html,
                    request_id,
                ),
                false,
            )
        }
        (0 | 408 | 502..=504, _) => (
            replies::page(
                503,
                "unavailable",
                "the authorization service did not answer; retry",
                renewal.html,
                request_id,
            ),
            false,
        ),
        _ => (
            replies::page(
                502,
                "unavailable",
                "the authorization service's answer is unusable",
                renewal.html,
                request_id,
            ),
            false,
        ),
    };
    reply.headers.push((
        "set-cookie".to_string(),
        set_cookie(login, &renewal.cookie, None, 0),
    ));
    (reply, ok)
}
