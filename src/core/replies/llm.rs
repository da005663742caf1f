//! Session-expired replies a coding agent shows its user. Where the request body was read: a
//! "sandbox" answer shaped as the model's (OpenAI chat completions, completions and responses,
//! Anthropic messages), streaming (SSE) or not as the body asked, whose text is the re-auth
//! message. Where it was not (no companion, or a body that is not JSON): the API's own error
//! object with that message, at a status no client retries, which every SDK raises whatever the
//! request asked for.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::core::replies::body_scan::BodyFacts;
use crate::core::replies::Reply;

/// The status of the error-shaped reply, measured with four agent CLIs (README "Session-expired
/// replies"): with `x-should-retry: false`, 401 is the one status every one of them shows with
/// the message after a single request (403 made aider retry for a minute, 400 made Claude Code
/// send six requests, 429 and 5xx are retried by all).
pub const ERROR_STATUS: u16 = 401;

/// The model named when the request's body could not be read.
pub const DEFAULT_MODEL: &str = "authgate";
const MAX_MODEL_LEN: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenAiChat,
    OpenAiCompletions,
    OpenAiResponses,
    AnthropicMessages,
}

/// Everything the reply needs except the request body, which may still be arriving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmReply {
    pub shape: Shape,
    pub status: u16,
    pub text: String,
    pub reauth_url: Option<String>,
    pub request_id: Option<String>,
    pub now_s: i64,
    /// Headers to remove when the request is handed to the `body_hold` companion to wait for
    /// its body (credentials and identity: nothing of them may travel further).
    pub remove: Vec<String>,
}

/// What the request body says about the answer it wants.
struct Asked {
    model: String,
    stream: bool,
    include_usage: bool,
}

impl LlmReply {
    /// The reply for this request, given what its body said.
    pub fn build(&self, facts: &BodyFacts) -> Reply {
        let BodyFacts::Json {
            model,
            stream,
            include_usage,
        } = facts
        else {
            return self.error();
        };
        let asked = Asked {
            model: model
                .as_deref()
                .map(clean_model)
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
            stream: *stream == Some(true),
            include_usage: *include_usage,
        };
        let id = self.id_suffix();
        let body = match (self.shape, asked.stream) {
            (Shape::OpenAiChat, false) => self.chat(&asked, &id).to_string(),
            (Shape::OpenAiChat, true) => self.chat_stream(&asked, &id),
            (Shape::OpenAiCompletions, false) => self.completion(&asked, &id).to_string(),
            (Shape::OpenAiCompletions, true) => self.completion_stream(&asked, &id),
            (Shape::OpenAiResponses, false) => self.response(&asked, &id, "completed").to_string(),
            (Shape::OpenAiResponses, true) => self.response_stream(&asked, &id),
            (Shape::AnthropicMessages, false) => self.message(&asked, &id).to_string(),
            (Shape::AnthropicMessages, true) => self.message_stream(&asked, &id),
        };
        let content_type = if asked.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut headers = vec![("content-type".to_string(), content_type.to_string())];
        if asked.stream {
            headers.push(("cache-control".to_string(), "no-cache".to_string()));
        }
        self.reply(self.status, headers, body)
    }

    /// The API's error object with the message: OpenAI's `{"error": {...}}` or Anthropic's
    /// `{"type": "error", ...}`. `x-should-retry: false` tells the OpenAI and Anthropic SDKs
    /// not to retry whatever the status.
    fn error(&self) -> Reply {
        let body = match self.shape {
            Shape::AnthropicMessages => json!({
                "type": "error",
                "error": {"type": "authentication_error", "message": self.text},
                "request_id": self.request_id,
            }),
            _ => json!({
                "error": {"message": self.text, "type": "authentication_error",
                          "param": null, "code": "session_expired"}
            }),
        };
        let headers = vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("x-should-retry".to_string(), "false".to_string()),
        ];
        self.reply(ERROR_STATUS, headers, body.to_string())
    }

    fn reply(&self, status: u16, mut headers: Vec<(String, String)>, body: String) -> Reply {
        if let Some(url) = &self.reauth_url {
            headers.push(("x-auth-reauth-url".to_string(), url.clone()));
        }
        if let Some(id) = &self.request_id {
            headers.push(("x-request-id".to_string(), id.chars().take(256).collect()));
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A stable id per request: no randomness needed, and a retry gets a new one.
    fn id_suffix(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.request_id.as_deref().unwrap_or("").as_bytes());
        hasher.update(self.now_s.to_le_bytes());
        hasher.update(self.text.as_bytes());
        hex::encode(&hasher.finalize()[..12])
    }

    fn chat(&self, asked: &Asked, id: &str) -> Value {
        json!({
            "id": format!("chatcmpl-authgate-{id}"),
            "object": "chat.completion",
            "created": self.now_s,
            "model": asked.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": self.text, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        })
    }

    fn chat_stream(&self, asked: &Asked, id: &str) -> String {
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": format!("chatcmpl-authgate-{id}"),
                "object": "chat.completion.chunk",
                "created": self.now_s,
                "model": asked.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
            })
        };
        let mut events = vec![
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"content": self.text}), Value::Null),
            chunk(json!({}), json!("stop")),
        ];
        if asked.include_usage {
            events.push(json!({
                "id": format!("chatcmpl-authgate-{id}"),
                "object": "chat.completion.chunk",
                "created": self.now_s,
                "model": asked.model,
                "choices": [],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
            }));
        }
        openai_sse(&events)
    }

    fn completion(&self, asked: &Asked, id: &str) -> Value {
        json!({
            "id": format!("cmpl-authgate-{id}"),
            "object": "text_completion",
            "created": self.now_s,
            "model": asked.model,
            "choices": [{"text": self.text, "index": 0, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        })
    }

    fn completion_stream(&self, asked: &Asked, id: &str) -> String {
        let chunk = |text: &str, finish: Value| {
            json!({
                "id": format!("cmpl-authgate-{id}"),
                "object": "text_completion",
                "created": self.now_s,
                "model": asked.model,
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}]
            })
        };
        openai_sse(&[chunk(&self.text, Value::Null), chunk("", json!("stop"))])
    }

    fn response(&self, asked: &Asked, id: &str, status: &str) -> Value {
        let output = if status == "completed" {
            json!([self.response_message(id, "completed")])
        } else {
            json!([])
        };
        json!({
            "id": format!("resp_authgate_{id}"),
            "object": "response",
            "created_at": self.now_s,
            "status": status,
            "model": asked.model,
            "output": output,
            "parallel_tool_calls": false,
            "tool_choice": "auto",
            "tools": [],
            "error": null,
            "incomplete_details": null,
            "instructions": null,
            "metadata": {},
            "temperature": null,
            "top_p": null,
            "usage": {
                "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0}
            }
        })
    }

    fn response_message(&self, id: &str, status: &str) -> Value {
        let content = if status == "completed" {
            json!([{"type": "output_text", "text": self.text, "annotations": []}])
        } else {
            json!([])
        };
        json!({"type": "message", "id": format!("msg_authgate_{id}"), "status": status,
               "role": "assistant", "content": content})
    }

    fn response_stream(&self, asked: &Asked, id: &str) -> String {
        let item_id = format!("msg_authgate_{id}");
        let part = json!({"type": "output_text", "text": self.text, "annotations": []});
        let empty_part = json!({"type": "output_text", "text": "", "annotations": []});
        let events = [
            (
                "response.created",
                json!({"response": self.response(asked, id, "in_progress")}),
            ),
            (
                "response.in_progress",
                json!({"response": self.response(asked, id, "in_progress")}),
            ),
            (
                "response.output_item.added",
                json!({"output_index": 0, "item": self.response_message(id, "in_progress")}),
            ),
            (
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": empty_part}),
            ),
            (
                "response.output_text.delta",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                    "delta": self.text, "logprobs": []}),
            ),
            (
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0,
                    "text": self.text, "logprobs": []}),
            ),
            (
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": 0, "content_index": 0, "part": part}),
            ),
            (
                "response.output_item.done",
                json!({"output_index": 0, "item": self.response_message(id, "completed")}),
            ),
            (
                "response.completed",
                json!({"response": self.response(asked, id, "completed")}),
            ),
        ];
        let mut out = String::new();
        for (sequence, (kind, mut data)) in events.into_iter().enumerate() {
            if let Some(object) = data.as_object_mut() {
                object.insert("type".to_string(), json!(kind));
                object.insert("sequence_number".to_string(), json!(sequence));
            }
            push_event(&mut out, Some(kind), &data);
        }
        out
    }

    fn message(&self, asked: &Asked, id: &str) -> Value {
        json!({
            "id": format!("msg_authgate_{id}"),
            "type": "message",
            "role": "assistant",
            "model": asked.model,
            "content": [{"type": "text", "text": self.text}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}
        })
    }

    fn message_stream(&self, asked: &Asked, id: &str) -> String {
        let start = json!({
            "id": format!("msg_authgate_{id}"),
            "type": "message",
            "role": "assistant",
            "model": asked.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {"input_tokens": 0, "output_tokens": 0}
        });
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": start}),
            ),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": self.text}}),
            ),
            (
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ),
            (
                "message_delta",
                json!({"type": "message_delta",
                                     "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                                     "usage": {"output_tokens": 0}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        let mut out = String::new();
        for (kind, data) in events {
            push_event(&mut out, Some(kind), &data);
        }
        out
    }
}

/// OpenAI's chat and completions streams: data-only events ending with `data: [DONE]`.
fn openai_sse(events: &[Value]) -> String {
    let mut out = String::new();
    for event in events {
        push_event(&mut out, None, event);
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn push_event(out: &mut String, kind: Option<&str>, data: &Value) {
    if let Some(kind) = kind {
        out.push_str("event: ");
        out.push_str(kind);
        out.push('\n');
    }
    // serde_json never emits a raw newline inside a value, so one `data:` line holds it.
    out.push_str("data: ");
    out.push_str(&data.to_string());
    out.push_str("\n\n");
}

/// The model name is echoed back: printable, bounded.
fn clean_model(model: &str) -> String {
    model
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MODEL_LEN)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::replies::body_scan::scan;

    fn reply(shape: Shape) -> LlmReply {
        LlmReply {
            shape,
            status: 200,
            text: "Open https://sso.example.com/re?c=1 to sign in again.".to_string(),
            reauth_url: Some("https://sso.example.com/re?c=1".to_string()),
            request_id: Some("rid".to_string()),
            now_s: 1_900_000_000,
            remove: Vec::new(),
        }
    }

    fn data_lines(body: &str) -> Vec<Value> {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect()
    }

    #[test]
    fn chat_completion_echoes_the_model_and_streams_when_asked() {
        let r = reply(Shape::OpenAiChat);
        let plain = r.build(&scan(br#"{"model": "gpt-5", "messages": []}"#));
        let body: Value = serde_json::from_str(&plain.body).unwrap();
        assert_eq!(body["model"], "gpt-5");
        assert_eq!(body["choices"][0]["message"]["content"], r.text);
        let stream = r.build(&scan(br#"{"model": "gpt-5", "stream": true}"#));
        assert!(stream.body.ends_with("data: [DONE]\n\n"));
        let text: String = data_lines(&stream.body)
            .iter()
            .filter_map(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(text, r.text);
        assert!(stream
            .headers
            .contains(&("content-type".into(), "text/event-stream".into())));
    }

    #[test]
    fn unread_or_unreadable_bodies_get_the_apis_error_object() {
        let anthropic = reply(Shape::AnthropicMessages);
        for facts in [BodyFacts::Unread, BodyFacts::NotJson] {
            let out = anthropic.build(&facts);
            assert_eq!(out.status, ERROR_STATUS);
            let body: Value = serde_json::from_str(&out.body).unwrap();
            assert_eq!(body["type"], "error");
            assert_eq!(body["error"]["type"], "authentication_error");
            assert_eq!(body["error"]["message"], anthropic.text);
            assert!(out
                .headers
                .contains(&("x-should-retry".into(), "false".into())));
        }
        let openai = reply(Shape::OpenAiResponses).build(&BodyFacts::Unread);
        let body: Value = serde_json::from_str(&openai.body).unwrap();
        assert_eq!(body["error"]["code"], "session_expired");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("https://sso.example.com/re?c=1"));
        // A readable body that does not ask to stream gets the plain sandbox answer.
        let plain = anthropic.build(&scan(b"{}"));
        assert_eq!(plain.status, 200);
        assert!(plain.body.starts_with('{'));
    }

    #[test]
    fn hostile_model_names_stay_inside_the_json() {
        let r = reply(Shape::OpenAiResponses);
        let out = r.build(&scan(
            "{\"model\": \"m\\n\\ndata: [DONE]\", \"stream\": true}".as_bytes(),
        ));
        for event in data_lines(&out.body) {
            assert!(event.get("type").is_some());
        }
        assert_eq!(out.body.matches("\n\n").count(), 9);
    }
}
