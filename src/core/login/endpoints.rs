//! The sign-in endpoints the filter answers itself, before any rule: `login_path` starts an
//! attempt (302 to the IdP), `callback_path` exchanges the code (a call the shell makes) and sets
//! the session cookie, `logout_path` clears it. Everything random comes from the OS source.

use serde_json::Value;
use subtle::ConstantTimeEq;

use crate::core::jwt::discovery::Discovered;
use crate::core::jwt::jwks::KeySet;
use crate::core::jwt::provider::Provider;
use crate::core::login::config::{Endpoints, Login, SameSite};
use crate::core::login::flow::{
    attempt_cookie_name, percent_encode, query_param, safe_return_path, Attempt,
};
use crate::core::login::id_token::{self, Expect, IdTokenError};
use crate::core::login::reauth::{self, Renewal, Ticket};
use crate::core::login::seal::Purpose;
use crate::core::login::session::{set_cookie, Session};
use crate::core::random::Random;
use crate::core::replies::{self, Reply};
use crate::core::request::Request;

/// How long a sign-in attempt may take (the attempt cookie's life).
pub const ATTEMPT_TTL_S: u64 = 600;
/// The largest token endpoint answer read.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 64 * 1024;

/// What a sign-in endpoint does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Reply(Reply),
    /// Exchange the code at the token endpoint, then `complete`.
    Exchange(Box<Exchange>),
    /// Ask the authorization service to renew an agent's session (the owner confirmed).
    Renew(Box<Renewal>),
}

/// The token request, and what completing the sign-in needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub pending: Pending,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub attempt: Attempt,
    pub attempt_cookie: String,
    pub html: bool,
    pub request_id: Option<String>,
}

/// The browser asked for a page (HTML answers) rather than an API (JSON).
pub fn wants_html(request: &Request<'_>) -> bool {
    request
        .header("accept")
        .is_some_and(|a| a.to_ascii_lowercase().contains("text/html"))
}

/// The answer for a sign-in path, or None when `path` is not one.
pub fn handle(
    login: &Login,
    discovered: Option<&Discovered>,
    request: &Request<'_>,
    path: &str,
    now_s: i64,
    random: &mut dyn Random,
) -> Option<Answer> {
    if !login.owns_path(path) {
        return None;
    }
    let html = wants_html(request);
    let request_id = request.request_id();
    let method = request.method();
    let Some(endpoints) = login.endpoints(discovered) else {
        return Some(Answer::Reply(page(
            503,
            "idp_unavailable",
            "the identity provider's configuration is not loaded yet; retry shortly",
            html,
            request_id,
        )));
    };
    let endpoints = &endpoints;
    if path == login.login_path {
        if !matches!(method, "GET" | "HEAD") {
            return Some(Answer::Reply(page(
                405,
                "method_not_allowed",
                "sign in with GET",
                html,
                request_id,
            )));
        }
        let rd = safe_return_path(
            request
                .query()
                .and_then(|q| query_param(q, "rd"))
                .as_deref(),
        );
        return Some(Answer::Reply(start_with(
            login, endpoints, rd, None, now_s, html, request_id, random,
        )));
    }
    if path == login.callback_path {
        return Some(callback(login, endpoints, request, html));
    }
    if path == login.logout_path {
        return Some(Answer::Reply(logout(login, endpoints, request, html)));
    }
    if path == login.reauth_path {
        return Some(match method {
            "POST" => match reauth::confirmed(login, request, now_s) {
                Ok(renewal) => Answer::Renew(Box::new(renewal)),
                Err(reply) => Answer::Reply(reply),
            },
            "GET" | "HEAD" => {
                let sealed = request.query().and_then(|q| query_param(q, "ticket"));
                match sealed.filter(|s| Ticket::open(login, s, now_s).is_some()) {
                    Some(sealed) => Answer::Reply(start_with(login, endpoints, "/".into(), Some(sealed), now_s, html, request_id, random)),
                    None => Answer::Reply(page(
                        400,
                        "reauth_failed",
                        "this re-authentication link is not valid or has expired; ask the agent again for a new one",
                        html,
                        request_id,
                    )),
                }
            }
            _ => Answer::Reply(page(
                405,
                "method_not_allowed",
                "open the link with GET",
                html,
                request_id,
            )),
        });
    }
    None
}

/// 302 to the IdP, with a fresh attempt in its own cookie; for an agent re-authentication
/// (`ticket`) the IdP must ask the user to sign in again (`prompt=login`).
#[allow(clippy::too_many_arguments)]
fn start_with(
    login: &Login,
    endpoints: &Endpoints,
    rd: String,
    ticket: Option<String>,
    now_s: i64,
    html: bool,
    request_id: Option<&str>,
    source: &mut dyn Random,
) -> Reply {
    let mut random = [0u8; 96 + 12];
    if !source.fill(&mut random) {
        return page(
            503,
            "unavailable",
            "no randomness for a sign-in; retry",
            html,
            request_id,
        );
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&random[96..]);
    let mut seed = [0u8; 96];
    seed.copy_from_slice(&random[..96]);
    let fresh = ticket.is_some();
    let attempt = Attempt::new(&seed, rd, now_s, ticket);
    let Some(sealed) = serde_json::to_vec(&attempt)
        .ok()
        .and_then(|plain| login.keys.seal(Purpose::Attempt, &plain, nonce))
    else {
        return page(
            503,
            "unavailable",
            "the sign-in could not be started",
            html,
            request_id,
        );
    };
    let location = authorization_url(login, endpoints, &attempt, fresh);
    let cookie = attempt_cookie_name(&attempt.state, login.secure);
    redirect(
        &location,
        vec![set_cookie(login, &cookie, Some(&sealed), ATTEMPT_TTL_S)],
    )
}

fn authorization_url(
    login: &Login,
    endpoints: &Endpoints,
    attempt: &Attempt,
    fresh: bool,
) -> String {
    let separator = if endpoints.authorization.url.contains('?') {
        '&'
    } else {
        '?'
    };
    let mut url = format!(
        "{}{separator}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}&nonce={}\
         &code_challenge={}&code_challenge_method=S256&response_mode=query",
        endpoints.authorization.url,
        percent_encode(&login.client_id),
        percent_encode(&login.redirect_uri()),
        percent_encode(&login.scopes.join(" ")),
        attempt.state,
        attempt.nonce,
        attempt.challenge(),
    );
    if fresh {
        url.push_str("&prompt=login");
    }
    url
}

fn callback(login: &Login, endpoints: &Endpoints, request: &Request<'_>, html: bool) -> Answer {
    let request_id = request.request_id();
    let query = request.query().unwrap_or("");
    let bad = |message: &str| Answer::Reply(page(400, "sign_in_failed", message, html, request_id));
    if let Some(error) = query_param(query, "error") {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return bad(&format!(
            "the identity provider refused the sign-in ({error})"
        ));
    }
    let (Some(code), Some(state)) = (query_param(query, "code"), query_param(query, "state"))
    else {
        return bad("the sign-in callback lacks its code or state");
    };
    let attempt_cookie = attempt_cookie_name(&state, login.secure);
    let attempt = request
        .cookie(&attempt_cookie)
        .and_then(|sealed| login.keys.open(Purpose::Attempt, sealed))
        .and_then(|plain| serde_json::from_slice::<Attempt>(&plain).ok())
        .filter(|a| bool::from(a.state.as_bytes().ct_eq(state.as_bytes())));
    let Some(attempt) = attempt else {
        return bad("this sign-in attempt is unknown, used or expired: start again");
    };
    let mut form = format!(
        "grant_type=authorization_code&code={}&redirect_uri={}&code_verifier={}",
        percent_encode(&code),
        percent_encode(&login.redirect_uri()),
        percent_encode(&attempt.verifier),
    );
    let mut headers = vec![
        (":method".to_string(), "POST".to_string()),
        (":path".to_string(), endpoints.token.path.clone()),
        (":authority".to_string(), endpoints.token.authority.clone()),
        (
            "content-type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ),
        ("accept".to_string(), "application/json".to_string()),
        ("user-agent".to_string(), "authgate".to_string()),
    ];
    if let Some(authorization) = login.authenticate(&mut form) {
        headers.push(("authorization".to_string(), authorization));
    }
    Answer::Exchange(Box::new(Exchange {
        cluster: login.token_cluster.clone(),
        headers,
        body: form.into_bytes(),
        pending: Pending {
            attempt,
            attempt_cookie,
            html,
            request_id: request_id.map(str::to_string),
        },
    }))
}

/// The token endpoint answered (`status` 0: no answer): the session cookie and a redirect, or
/// the page that says what went wrong. The attempt cookie is cleared either way.
pub fn complete(
    login: &Login,
    provider: &Provider,
    keys: Option<&KeySet>,
    pending: &Pending,
    (status, body): (u16, Option<&[u8]>),
    now_s: i64,
    source: &mut dyn Random,
) -> Reply {
    let clear_attempt = set_cookie(login, &pending.attempt_cookie, None, 0);
    let fail = |status: u16, error: &str, message: &str| {
        let mut reply = page(
            status,
            error,
            message,
            pending.html,
            pending.request_id.as_deref(),
        );
        reply
            .headers
            .push(("set-cookie".to_string(), clear_attempt.clone()));
        reply
    };
    let answer: Option<Value> = body.and_then(|b| serde_json::from_slice(b).ok());
    match status {
        200 => {}
        0 | 408 | 502..=504 => {
            return fail(
                503,
                "idp_unavailable",
                "the identity provider did not answer; retry",
            )
        }
        400 if answer.as_ref().and_then(|a| a["error"].as_str()) == Some("invalid_grant") => {
            return fail(
                400,
                "sign_in_failed",
                "this sign-in was already used or has expired: start again",
            )
        }
        _ => {
            return fail(
                502,
                "idp_error",
                "the identity provider's token endpoint failed",
            )
        }
    }
    let Some(id_token) = answer.as_ref().and_then(|a| a["id_token"].as_str()) else {
        return fail(
            502,
            "idp_error",
            "the identity provider's answer has no ID token",
        );
    };
    let Some(keys) = keys else {
        return fail(
            503,
            "idp_unavailable",
            "the identity provider's keys are not loaded yet; retry",
        );
    };
    let expect = Expect {
        provider,
        keys,
        client_id: &login.client_id,
        nonce: &pending.attempt.nonce,
        email_claim: &login.email_claim,
        require_email_verified: login.require_email_verified,
        fresh_since_s: pending
            .attempt
            .ticket
            .as_ref()
            .map(|_| pending.attempt.started_s),
        now_s,
    };
    let signed_in = match id_token::check(id_token, &expect) {
        Ok(signed_in) => signed_in,
        Err(IdTokenError::EmailNotVerified) => {
            return fail(
                403,
                "email_not_verified",
                &IdTokenError::EmailNotVerified.describe(),
            )
        }
        Err(error) => return fail(502, "idp_error", &error.describe()),
    };
    if let Some(sealed) = &pending.attempt.ticket {
        // An agent re-authentication: no browser session, a page to confirm the renewal.
        let confirm = Ticket::open(login, sealed, now_s).and_then(|ticket| {
            reauth::confirm_page(login, ticket, &signed_in, &provider.issuer, now_s, source)
        });
        return match confirm {
            Some(mut reply) => {
                reply
                    .headers
                    .push(("set-cookie".to_string(), clear_attempt));
                reply
            }
            None => fail(
                400,
                "reauth_failed",
                "the re-authentication link expired meanwhile; ask the agent for a new one",
            ),
        };
    }
    let mut random = [0u8; 16 + 12];
    if !source.fill(&mut random) {
        return fail(503, "unavailable", "no randomness for a session; retry");
    }
    let mut sid = [0u8; 16];
    sid.copy_from_slice(&random[..16]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&random[16..]);
    let session = Session::new(provider, &signed_in, login, now_s, &sid);
    let Some(sealed) = session.seal(login, nonce) else {
        return fail(
            502,
            "idp_error",
            "the identity's claims are too large for a session cookie",
        );
    };
    let cookies = vec![
        clear_attempt.clone(),
        set_cookie(
            login,
            &login.cookie_name,
            Some(&sealed),
            login.session_lifetime_s,
        ),
    ];
    if login.same_site == SameSite::Strict {
        // A SameSite=Strict cookie is not sent on the redirect that ends a cross-site chain
        // (the IdP's): a page of our own navigates on, so the next request is same-site.
        return onward_page(&pending.attempt.rd, cookies);
    }
    redirect(&pending.attempt.rd, cookies)
}

/// 200 with a page that sends the browser on to `location` (a checked same-origin path).
fn onward_page(location: &str, cookies: Vec<String>) -> Reply {
    let escaped = location
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let mut headers = vec![
        (
            "content-type".to_string(),
            "text/html; charset=utf-8".to_string(),
        ),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    Reply {
        status: 200,
        headers,
        body: format!(
            "<!doctype html><html><head><meta charset=\"utf-8\">\
             <meta http-equiv=\"refresh\" content=\"0;url={escaped}\"><title>Signed in</title>\
             </head><body><p>Signed in. <a href=\"{escaped}\">Continue</a></p></body></html>\n"
        ),
    }
}

/// POST only, from the gateway's own pages: clears the session, then the IdP's logout.
fn logout(login: &Login, endpoints: &Endpoints, request: &Request<'_>, html: bool) -> Reply {
    let request_id = request.request_id();
    if request.method() != "POST" {
        return page(
            405,
            "method_not_allowed",
            "sign out with POST",
            html,
            request_id,
        );
    }
    let same_origin = match (request.header("origin"), request.header("referer")) {
        (Some(origin), _) => origin == login.public_url,
        (None, Some(referer)) => referer.starts_with(&format!("{}/", login.public_url)),
        (None, None) => false,
    };
    if !same_origin {
        return page(
            403,
            "csrf",
            "sign out from the gateway's own pages",
            html,
            request_id,
        );
    }
    let location = match &endpoints.end_session {
        Some(end) => {
            let separator = if end.url.contains('?') { '&' } else { '?' };
            format!(
                "{}{separator}client_id={}&post_logout_redirect_uri={}",
                end.url,
                percent_encode(&login.client_id),
                percent_encode(&format!("{}/", login.public_url))
            )
        }
        None => "/".to_string(),
    };
    redirect(
        &location,
        vec![set_cookie(login, &login.cookie_name, None, 0)],
    )
}

fn redirect(location: &str, cookies: Vec<String>) -> Reply {
    let mut headers = vec![
        ("location".to_string(), location.to_string()),
        ("cache-control".to_string(), "no-store".to_string()),
    ];
    headers.extend(cookies.into_iter().map(|c| ("set-cookie".to_string(), c)));
    Reply {
        status: 302,
        headers,
        body: String::new(),
    }
}

fn page(status: u16, error: &str, message: &str, html: bool, request_id: Option<&str>) -> Reply {
    replies::page(status, error, message, html, request_id)
}
