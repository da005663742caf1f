//! Checks of authgate's replies against the contract (DESIGN.md "Decisions and what the client
//! gets"). Each returns `Err(description)` instead of panicking, so a test can run a whole table
//! of cases and report every mismatch at once through [`Checks`].

use serde_json::Value;

use crate::client::Reply;

pub type Check = Result<(), String>;

/// Collects failed checks; [`Checks::finish`] panics listing all of them.
#[derive(Default)]
pub struct Checks {
    failures: Vec<String>,
    passed: usize,
}

impl Checks {
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records the outcome of one labelled check.
    pub fn check(&mut self, label: &str, outcome: Check) {
        match outcome {
            Ok(()) => self.passed += 1,
            Err(why) => self.failures.push(format!("[{label}] {why}")),
        }
    }

    pub fn failures(&self) -> &[String] {
        &self.failures
    }

    /// Panics when any check failed, listing every failure.
    pub fn finish(self) {
        if !self.failures.is_empty() {
            panic!(
                "{} of {} checks failed:\n\n{}",
                self.failures.len(),
                self.failures.len() + self.passed,
                self.failures.join("\n\n")
            );
        }
    }
}

fn fail(reply: &Reply, what: &str) -> Check {
    Err(format!("{what}; got {reply}"))
}

/// Reached the echo upstream with 200.
pub fn allowed(reply: &Reply) -> Check {
    if reply.status != 200 || !reply.is_from_upstream() {
        return fail(reply, "expected 200 from the upstream");
    }
    Ok(())
}

/// `status`, a JSON body whose `error` is `error`, and a JSON content type. Returns the body.
pub fn error_reply(reply: &Reply, status: u16, error: &str) -> Result<Value, String> {
    let Some(body) = reply.json() else {
        return fail(
            reply,
            &format!("expected {status} with a JSON body {{\"error\":\"{error}\"}}"),
        )
        .map(|()| Value::Null);
    };
    if reply.status != status || body.get("error").and_then(Value::as_str) != Some(error) {
        return fail(
            reply,
            &format!("expected {status} with JSON error \"{error}\""),
        )
        .map(|()| body);
    }
    let content_type = reply.header("content-type").unwrap_or("");
    if !content_type.starts_with("application/json") {
        return fail(reply, "expected content-type application/json").map(|()| body);
    }
    Ok(body)
}

fn has_message(reply: &Reply, body: &Value) -> Check {
    match body.get("message").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => Ok(()),
        _ => fail(reply, "expected a non-empty string \"message\""),
    }
}

/// 401 `unauthenticated`, `www-authenticate: Bearer realm="<authority>"`.
pub fn unauthenticated(reply: &Reply, authority: &str) -> Check {
    let body = error_reply(reply, 401, "unauthenticated")?;
    has_message(reply, &body)?;
    let expected = format!("Bearer realm=\"{authority}\"");
    if reply.header("www-authenticate") != Some(expected.as_str()) {
        return fail(reply, &format!("expected www-authenticate: {expected}"));
    }
    Ok(())
}

/// 401 `invalid_token` with a reason; `www-authenticate: Bearer …, error="invalid_token",
/// error_description="…"`.
pub fn invalid_token(reply: &Reply) -> Check {
    let body = error_reply(reply, 401, "invalid_token")?;
    has_message(reply, &body)?;
    let challenge = reply.header("www-authenticate").unwrap_or("");
    if !challenge.starts_with("Bearer ")
        || !challenge.contains("error=\"invalid_token\"")
        || !challenge.contains("error_description=\"")
    {
        return fail(
            reply,
            "expected www-authenticate: Bearer …, error=\"invalid_token\", error_description=\"…\"",
        );
    }
    Ok(())
}

/// The `api` session-expired reply: 401 `session_expired`, `www-authenticate` with
/// `error="invalid_token", error_description="session expired"`.
pub fn session_expired_api(reply: &Reply) -> Check {
    error_reply(reply, 401, "session_expired")?;
    let challenge = reply.header("www-authenticate").unwrap_or("");
    if !challenge.starts_with("Bearer ")
        || !challenge.contains("error=\"invalid_token\", error_description=\"session expired\"")
    {
        return fail(
            reply,
            "expected www-authenticate: Bearer … error=\"invalid_token\", error_description=\"session expired\"",
        );
    }
    Ok(())
}

/// 403 `forbidden`.
pub fn forbidden(reply: &Reply) -> Check {
    error_reply(reply, 403, "forbidden").map(|_| ())
}

/// The JSON body's `request_id` is `id`.
pub fn request_id(reply: &Reply, id: &str) -> Check {
    if reply.json_str("request_id").as_deref() != Some(id) {
        return fail(
            reply,
            &format!("expected \"request_id\": \"{id}\" in the body"),
        );
    }
    Ok(())
}

/// Neither the body nor any header contains `secret` (a token, or a token's signature).
pub fn no_leak(reply: &Reply, secret: &str) -> Check {
    if secret.is_empty() {
        return Ok(());
    }
    let in_headers = reply.headers.iter().any(|(_, v)| v.contains(secret));
    if reply.body.contains(secret) || in_headers {
        return fail(reply, "the reply contains the credential");
    }
    Ok(())
}

/// For a token: the whole token, its payload and its signature must not appear in the reply.
pub fn no_token_leak(reply: &Reply, token: &str) -> Check {
    no_leak(reply, token)?;
    for part in token.split('.').skip(1) {
        if part.len() >= 16 {
            no_leak(reply, part)?;
        }
    }
    Ok(())
}

/// The echo upstream saw header `name` with this value (`None` = must not have seen it).
pub fn upstream_header(reply: &Reply, name: &str, expected: Option<&str>) -> Check {
    let seen = reply.upstream_header(name);
    if seen.as_deref() != expected {
        return Err(format!(
            "upstream header {name}: expected {expected:?}, upstream saw {seen:?}; got {reply}"
        ));
    }
    Ok(())
}
