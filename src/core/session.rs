//! The session-expired outcome: which reply shape this request gets, and the step that sends it.
//! LLM-shaped replies need the request body (`model`, `stream`), so they become a step the shell
//! finishes once the body is in; the others are answered at once.

use crate::core::config::{Config, SessionReply};
use crate::core::engine::Step;
use crate::core::llm_replies::{LlmReply, Shape};
use crate::core::metrics::{Metric, MetricSink};
use crate::core::replies;
use crate::core::request::Request;

/// What the request itself says about the reply it can use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hints {
    pub method: String,
    pub path: String,
    pub host: String,
    pub request_id: Option<String>,
    /// `Accept` names `text/event-stream`.
    pub event_stream: bool,
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
            event_stream: accept.contains("text/event-stream"),
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

/// The reply for an expired session. `reauth_url` is the authorization service's, if it gave
/// one; else the configured `session.reauth_url`.
/// `remove`: the headers a pass would strip; credential headers are added to them for a request
/// that waits for its body.
pub fn expired_step(
    config: &Config,
    kind: SessionReply,
    hints: &Hints,
    reauth_url: Option<&str>,
    remove: &[String],
    now_s: i64,
    metrics: &mut dyn MetricSink,
) -> Step {
    let session = &config.session;
    let url = reauth_url.or(session.reauth_url.as_deref());
    metrics.increment(Metric::SessionExpired);
    let request_id = hints.request_id.as_deref();
    match choose(kind, session.redirect_html, hints) {
        Choice::Llm(shape) => {
            metrics.increment(match shape {
                Shape::AnthropicMessages => Metric::SessionExpiredAnthropic,
                _ => Metric::SessionExpiredOpenAi,
            });
            Step::SessionReply(Box::new(LlmReply {
                shape,
                status: session.sandbox_status,
                text: replies::session_message(session, url),
                reauth_url: url.map(replies::sanitize),
                request_id: hints.request_id.clone(),
                stream_hint: hints.event_stream,
                now_s,
                remove: remove
                    .iter()
                    .chain(&config.credential_header_names)
                    .cloned()
                    .collect(),
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
            Step::Respond(replies::session_expired(
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
            event_stream: accept.contains("text/event-stream"),
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
