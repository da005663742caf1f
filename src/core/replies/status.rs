//! Every response body and status authgate answers with, in one place.

use serde_json::{json, Value};

use crate::core::replies::session::{Session, SessionReply};

/// A response the filter sends itself instead of passing the request upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

fn json_reply(status: u16, mut body: Value, request_id: Option<&str>) -> Reply {
    if let (Some(id), Some(object)) = (request_id, body.as_object_mut()) {
        // serde_json escapes it; only the length is bounded.
        let id: String = id.chars().take(256).collect();
        object.insert("request_id".to_string(), Value::String(id));
    }
    Reply {
        status,
        headers: vec![("content-type".to_string(), "application/json".to_string())],
        body: body.to_string(),
    }
}

fn with_header(mut reply: Reply, name: &str, value: String) -> Reply {
    reply.headers.push((name.to_string(), value));
    reply
}

/// Makes a value safe inside a quoted header parameter and a JSON log: no quotes, backslashes
/// or control characters, bounded length (room for a re-auth URL with its sealed ticket, which
/// must never be cut).
pub(crate) fn sanitize(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() && *c != '"' && *c != '\\')
        .take(2048)
        .collect()
}

fn realm(host: &str) -> String {
    let host = sanitize(host);
    if host.is_empty() {
        "authgate".to_string()
    } else {
        host
    }
}

pub fn health() -> Reply {
    json_reply(200, json!({"status": "ok"}), None)
}

/// 401 for a request that carries no credential the route accepts (RFC 6750 3.1: no error code).
pub fn unauthenticated(host: &str, request_id: Option<&str>) -> Reply {
    let reply = json_reply(
        401,
        json!({"error": "unauthenticated", "message": "this route requires a credential"}),
        request_id,
    );
    with_header(
        reply,
        "www-authenticate",
        format!("Bearer realm=\"{}\"", realm(host)),
    )
}

/// 401 for a credential that was presented but is not valid.
pub fn invalid_token(host: &str, description: &str, request_id: Option<&str>) -> Reply {
    let reply = json_reply(
        401,
        json!({"error": "invalid_token", "message": description}),
        request_id,
    );
    let challenge = format!(
        "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
        realm(host),
        sanitize(description)
    );
    with_header(reply, "www-authenticate", challenge)
}

/// 403 for a valid token that lacks scopes the route requires (RFC 6750 3.1).
pub fn insufficient_scope(host: &str, missing: &[String], request_id: Option<&str>) -> Reply {
    let scopes = missing.join(" ");
    let reply = json_reply(
        403,
        json!({"error": "insufficient_scope", "message": format!("missing scope(s): {scopes}")}),
        request_id,
    );
    let challenge = format!(
        "Bearer realm=\"{}\", error=\"insufficient_scope\", scope=\"{}\"",
        realm(host),
        sanitize(&scopes)
    );
    with_header(reply, "www-authenticate", challenge)
}

/// 400 for a request authgate cannot judge (a path it cannot normalise, no path at all).
pub fn bad_request(message: &str, request_id: Option<&str>) -> Reply {
    json_reply(
        400,
        json!({"error": "bad_request", "message": message}),
        request_id,
    )
}

pub fn forbidden(message: &str, request_id: Option<&str>) -> Reply {
    json_reply(
        403,
        json!({"error": "forbidden", "message": message}),
        request_id,
    )
}

/// 429 while a client's failed-auth backoff is in force.
pub fn rate_limited(retry_after_s: u64, request_id: Option<&str>) -> Reply {
    let reply = json_reply(
        429,
        json!({"error": "rate_limited",
               "message": format!("too many failed authentication attempts; retry in {retry_after_s} s"),
               "retry_after_s": retry_after_s}),
        request_id,
    );
    with_header(reply, "retry-after", retry_after_s.to_string())
}

/// The authorization service could not decide (down, slow, or nonsense) and failure_mode denies.
pub fn authorization_unavailable(status: u16, request_id: Option<&str>) -> Reply {
    json_reply(
        status,
        json!({"error": "authorization_unavailable",
               "message": "the authorization service could not be reached; retry shortly"}),
        request_id,
    )
}

pub fn jwks_unavailable(request_id: Option<&str>) -> Reply {
    json_reply(
        503,
        json!({"error": "jwks_unavailable",
               "message": "the token issuer's signing keys could not be loaded; retry shortly"}),
        request_id,
    )
}

/// Too many requests are already paused in this worker (waiting for keys or an authorization
/// answer): refused at once rather than held without bound.
pub fn overloaded(request_id: Option<&str>) -> Reply {
    let mut reply = json_reply(
        503,
        json!({"error": "overloaded",
               "message": "the gateway has too many requests waiting for authorization; retry shortly"}),
        request_id,
    );
    reply
        .headers
        .push(("retry-after".to_string(), "1".to_string()));
    reply
}

/// A sign-in page or its JSON: for a browser (`html`) a small page that says what happened,
/// else `{"error": …, "message": …}`.
pub fn page(
    status: u16,
    error: &str,
    message: &str,
    html: bool,
    request_id: Option<&str>,
) -> Reply {
    if !html {
        return json_reply(
            status,
            json!({"error": error, "message": message}),
            request_id,
        );
    }
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let title = if status < 400 {
        "Signed in"
    } else {
        "Sign-in problem"
    };
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p id=\"message\">{}</p><p><small>{}</small></p></body></html>\n",
        escape(message),
        escape(
            &request_id
                .map(|id| format!("request {id}"))
                .unwrap_or_default()
        ),
    );
    Reply {
        status,
        headers: vec![
            (
                "content-type".to_string(),
                "text/html; charset=utf-8".to_string(),
            ),
            ("cache-control".to_string(), "no-store".to_string()),
        ],
        body,
    }
}

/// The filter has no valid configuration: fail closed, and say so.
pub fn not_configured() -> Reply {
    json_reply(
        503,
        json!({"error": "authgate_unconfigured", "message": "the gateway's auth filter is not configured"}),
        None,
    )
}

/// The text an agent shows its user: `session.message` with the URL filled in.
pub fn session_message(session: &Session, reauth_url: Option<&str>) -> String {
    match reauth_url {
        Some(url) => session.message.replace("{reauth_url}", &sanitize(url)),
        None => "Your session has expired. Sign in again, then retry.".to_string(),
    }
}

/// The session behind a credential expired; the shape suits the route's clients.
pub fn session_expired(
    kind: SessionReply,
    session: &Session,
    reauth_url: Option<&str>,
    host: &str,
    request_id: Option<&str>,
) -> Reply {
    let url = reauth_url.or(session.reauth_url.as_deref()).map(sanitize);
    if let (SessionReply::Browser, Some(url)) = (kind, &url) {
        let reply = json_reply(
            302,
            json!({"error": "session_expired", "reauth_url": url}),
            request_id,
        );
        let reply = with_header(reply, "location", url.clone());
        return with_header(reply, "x-auth-reauth-url", url.clone());
    }
    let message = session_message(session, url.as_deref());
    let mut body = json!({"error": "session_expired", "message": message});
    if let (Some(url), Some(object)) = (&url, body.as_object_mut()) {
        object.insert("reauth_url".to_string(), Value::String(url.clone()));
    }
    let challenge = format!(
        "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"session expired\"",
        realm(host)
    );
    let reply = with_header(
        json_reply(401, body, request_id),
        "www-authenticate",
        challenge,
    );
    match url {
        Some(url) => with_header(reply, "x-auth-reauth-url", url),
        None => reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
        reply
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn challenge_cannot_be_broken_by_host_or_description() {
        let reply = invalid_token("evil\"host", "bad \"desc\"\r\n", Some("id\"1"));
        let challenge = header(&reply, "www-authenticate").unwrap();
        assert_eq!(
            challenge,
            "Bearer realm=\"evilhost\", error=\"invalid_token\", error_description=\"bad desc\""
        );
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["request_id"], "id\"1");
    }

    #[test]
    fn session_expired_api_shape() {
        let session = Session {
            reauth_url: Some("https://sso.example.com/re".to_string()),
            sandbox_status: 200,
            message: "Open {reauth_url} now".to_string(),
            redirect_html: false,
            hold_companion: false,
        };
        let reply = session_expired(SessionReply::Api, &session, None, "h", None);
        assert_eq!(reply.status, 401);
        assert_eq!(
            header(&reply, "x-auth-reauth-url"),
            Some("https://sso.example.com/re")
        );
        let body: Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(body["error"], "session_expired");
        assert_eq!(body["message"], "Open https://sso.example.com/re now");
        let browser = session_expired(SessionReply::Browser, &session, None, "h", None);
        assert_eq!(browser.status, 302);
        assert_eq!(
            header(&browser, "location"),
            Some("https://sso.example.com/re")
        );
    }
}
