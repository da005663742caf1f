//! The session-expired outcome: which reply shape this request gets, and the step that sends it.
//! LLM-shaped replies need the request body (`model`, `stream`), so they become a step the shell
//! finishes once the body is in; the others are answered at once.

use serde::Deserialize;

use crate::core::config_error::ConfigError;
use crate::core::metrics::{Metric, MetricSink};
use crate::core::replies::llm::{LlmReply, Shape};
use crate::core::replies::{self, Reply};
use crate::core::request::Request;
use crate::core::syntax::split_uri;

const DEFAULT_REAUTH_MESSAGE: &str =
    "Your session has expired. Open {reauth_url} to sign in again, then retry.";

pub mod raw {
    //! The session section exactly as written.
    use serde::Deserialize;

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Session {
        pub reauth_url: Option<String>,
        pub sandbox_status: Option<u16>,
        pub message: Option<String>,
        pub redirect_html: Option<bool>,
        pub hold_companion: Option<bool>,
    }
}

/// How a session-expired reply is shaped for the route's clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SessionReply {
    OpenAi,
    Anthropic,
    #[default]
    Api,
    Browser,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub reauth_url: Option<String>,
    pub sandbox_status: u16,
    pub message: String,
    /// `api` routes answer a browser's HTML navigation with the `browser` redirect.
    pub redirect_html: bool,
    /// A `body_hold` companion filter follows authgate: LLM-shaped replies may wait for the
    /// request body. Without it they are built at the headers, from `Accept` and defaults.
    pub hold_companion: bool,
}

pub(crate) fn compile_session(raw: raw::Session) -> Result<Session, ConfigError> {
    if let Some(url) = &raw.reauth_url {
        if split_uri(url).is_none() {
            return Err(ConfigError::new(
                "session.reauth_url",
                "must be an absolute http(s) URL",
            ));
        }
    }
    let sandbox_status = raw.sandbox_status.unwrap_or(200);
    if !(200..=599).contains(&sandbox_status) {
        return Err(ConfigError::new(
            "session.sandbox_status",
            "must be an HTTP status",
        ));
    }
    Ok(Session {
        reauth_url: raw.reauth_url,
        sandbox_status,
        message: raw
            .message
            .unwrap_or_else(|| DEFAULT_REAUTH_MESSAGE.to_string()),
        redirect_html: raw.redirect_html.unwrap_or(false),
        hold_companion: raw.hold_companion.unwrap_or(false),
    })
}

/// What the request itself says about the reply it can use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    pub method: String,
    pub path: String,
    pub host: String,
    pub request_id: Option<String>,
    /// `Accept` names `text/html` and not JSON: a browser navigating.
    pub html: bool,
}

impl Hints {
    pub fn from_request(request: &Request<'_>) -> Hints {
        let accept = request.header("accept").unwrap_or("").to_ascii_lowercase();
        Hints {
            method: request.method().to_string(),
            path: request.path().to_string(),
            host: request.authority().to_string(),
            request_id: request.request_id().map(str::to_string),
            html: accept.contains("text/html") && !accept.contains("json"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    Api,
    Browser,
    Llm(Shape),
}

/// The rule's `session_reply`, narrowed by the request: LLM shapes only for the endpoints that
/// have them (anything else, say `GET /v1/models`, gets the `api` reply an SDK reports as an
/// authentication error with the message), and `browser` for HTML navigation when configured.
fn choose(kind: SessionReply, redirect_html: bool, hints: &Hints) -> Choice {
    let post = hints.method == "POST";
    let path = hints.path.trim_end_matches('/');
    match kind {
        SessionReply::OpenAi if post && path.ends_with("/chat/completions") => {
            Choice::Llm(Shape::OpenAiChat)
        }
        SessionReply::OpenAi if post && path.ends_with("/completions") => {
            Choice::Llm(Shape::OpenAiCompletions)
        }
        SessionReply::OpenAi if post && path.ends_with("/responses") => {
            Choice::Llm(Shape::OpenAiResponses)
        }
        SessionReply::Anthropic if post && path.ends_with("/messages") => {
            Choice::Llm(Shape::AnthropicMessages)
        }
        SessionReply::Browser => Choice::Browser,
        _ if redirect_html && hints.html => Choice::Browser,
        _ => Choice::Api,
    }
}

/// An expired session's reply: sent at once, or (LLM shapes) once the request body is in.
#[derive(Debug)]
pub enum Expired {
    Now(Reply),
    /// Its `remove` is left empty for the caller, who knows what the request must lose.
    AfterBody(Box<LlmReply>),
}

/// The reply for an expired session. `reauth_url` is the authorization service's, if it gave
/// one; else the configured `session.reauth_url`.
pub fn expired_reply(
    session: &Session,
    kind: SessionReply,
    hints: &Hints,
    reauth_url: Option<&str>,
    now_s: i64,
    metrics: &mut dyn MetricSink,
) -> Expired {
    let url = reauth_url.or(session.reauth_url.as_deref());
    metrics.increment(Metric::SessionExpired);
    let request_id = hints.request_id.as_deref();
    match choose(kind, session.redirect_html, hints) {
        Choice::Llm(shape) => {
            metrics.increment(match shape {
                Shape::AnthropicMessages => Metric::SessionExpiredAnthropic,
                _ => Metric::SessionExpiredOpenAi,
            });
            Expired::AfterBody(Box::new(LlmReply {
                shape,
                status: session.sandbox_status,
                text: replies::session_message(session, url),
                reauth_url: url.map(replies::sanitize),
                request_id: hints.request_id.clone(),
                now_s,
                remove: Vec::new(),
            }))
        }
        choice => {
            let browser = choice == Choice::Browser && url.is_some();
            metrics.increment(if browser {
                Metric::SessionExpiredBrowser
            } else {
                Metric::SessionExpiredApi
            });
            let kind = if browser {
                SessionReply::Browser
            } else {
                SessionReply::Api
            };
            Expired::Now(replies::session_expired(
                kind,
                session,
                url,
                &hints.host,
                request_id,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(method: &str, path: &str, accept: &str) -> Hints {
        Hints {
            method: method.to_string(),
            path: path.to_string(),
            html: accept.contains("text/html") && !accept.contains("json"),
            ..Hints::default()
        }
    }

    #[test]
    fn shapes_follow_the_endpoint() {
        use SessionReply::*;
        let h = |m, p| hints(m, p, "");
        assert_eq!(
            choose(OpenAi, false, &h("POST", "/v1/chat/completions")),
            Choice::Llm(Shape::OpenAiChat)
        );
        assert_eq!(
            choose(OpenAi, false, &h("POST", "/v1/completions")),
            Choice::Llm(Shape::OpenAiCompletions)
        );
        assert_eq!(
            choose(OpenAi, false, &h("POST", "/openai/v1/responses/")),
            Choice::Llm(Shape::OpenAiResponses)
        );
        assert_eq!(choose(OpenAi, false, &h("GET", "/v1/models")), Choice::Api);
        assert_eq!(
            choose(Anthropic, false, &h("POST", "/v1/messages")),
            Choice::Llm(Shape::AnthropicMessages)
        );
        assert_eq!(
            choose(Anthropic, false, &h("POST", "/v1/messages/count_tokens")),
            Choice::Api
        );
        let page = hints("GET", "/app", "text/html,application/xhtml+xml");
        assert_eq!(choose(Api, true, &page), Choice::Browser);
        assert_eq!(choose(Api, false, &page), Choice::Api);
        assert_eq!(
            choose(
                Api,
                true,
                &hints("GET", "/app", "text/html, application/json")
            ),
            Choice::Api
        );
    }
}
