//! Reads `model`, `stream` and `stream_options` from an LLM request body as its chunks arrive,
//! holding only those values: an agent's request body is often several MiB, and a session reply
//! must neither buffer it nor wait for Envoy's buffer limit.
//!
//! Hand-written: serde_json and the streaming JSON crates want the whole document, or a blocking
//! `io::Read`; a proxy-wasm filter gets chunks in callbacks and must drop each one once scanned.
//! Only the top level is interpreted; nested values are skipped by tracking depth and strings.
//! Differential-tested against serde_json (unit tests here, and the `llm_reply` fuzz target).

use serde_json::Value;

/// The longest top-level key compared (escapes included); longer keys are none of ours.
const MAX_KEY_BYTES: usize = 64;
/// The longest value kept for a wanted key; a longer one reads as unusable.
const MAX_VALUE_BYTES: usize = 1024;
/// Deeper nesting is refused as not JSON (serde_json's own limit is 128).
const MAX_DEPTH: u32 = 128;

/// What the request body says about the reply it wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyFacts {
    /// The body could not be read (no companion, or the request ended at its headers).
    Unread,
    /// Not a JSON object.
    NotJson,
    Json {
        model: Option<String>,
        /// `stream` as given: `Some(true)` only for the JSON literal `true`.
        stream: Option<bool>,
        /// `stream_options.include_usage` is `true`.
        include_usage: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Model,
    Stream,
    StreamOptions,
}

impl Field {
    fn of(key: &str) -> Option<Field> {
        match key {
            "model" => Some(Field::Model),
            "stream" => Some(Field::Stream),
            "stream_options" => Some(Field::StreamOptions),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Before the opening `{`.
    Start,
    /// Right after `{`: a key, or `}` for an empty object.
    FirstKey,
    /// After `,`: a key must follow.
    ExpectKey,
    /// A key is being read; `escaped`: the previous byte was a lone backslash.
    Key {
        escaped: bool,
    },
    AfterKey,
    ExpectValue,
    /// A string value.
    Text {
        escaped: bool,
    },
    /// An object or array value, `depth` levels in.
    Nested {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
    /// A number, literal, or anything else up to the next delimiter.
    Scalar,
    AfterValue,
    /// The top-level object closed, or every wanted key was found.
    Done,
    NotJson,
}

/// The scan of one body, fed chunk by chunk.
#[derive(Debug)]
pub struct BodyScan {
    mode: Mode,
    key: Vec<u8>,
    key_too_long: bool,
    /// The wanted field whose value is being read, and its bytes so far.
    field: Option<Field>,
    value: Vec<u8>,
    value_too_long: bool,
    model: Option<Option<String>>,
    stream: Option<Option<bool>>,
    include_usage: Option<bool>,
    bytes: usize,
}

impl Default for BodyScan {
    fn default() -> Self {
        BodyScan::new()
    }
}

impl BodyScan {
    pub fn new() -> Self {
        BodyScan {
            mode: Mode::Start,
            key: Vec::new(),
            key_too_long: false,
            field: None,
            value: Vec::new(),
            value_too_long: false,
            model: None,
            stream: None,
            include_usage: None,
            bytes: 0,
        }
    }

    /// Whether more bytes can change the answer (false once decided: later chunks are dropped
    /// unread).
    pub fn wants_more(&self) -> bool {
        !matches!(self.mode, Mode::Done | Mode::NotJson)
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        self.bytes = self.bytes.saturating_add(chunk.len());
        for &byte in chunk {
            if !self.wants_more() {
                return;
            }
            self.step(byte);
        }
    }

    /// The answer once the body has ended (or was decided early).
    pub fn finish(&self) -> BodyFacts {
        match self.mode {
            Mode::NotJson => BodyFacts::NotJson,
            // Every wanted key found: the rest of the body cannot change the answer.
            Mode::Done => self.facts(),
            // A scalar or string at the very end of a truncated body: not a complete object.
            _ => BodyFacts::NotJson,
        }
    }

    fn facts(&self) -> BodyFacts {
        BodyFacts::Json {
            model: self.model.clone().flatten(),
            stream: self.stream.flatten(),
            include_usage: self.include_usage == Some(true),
        }
    }

    fn step(&mut self, byte: u8) {
        let ws = matches!(byte, b' ' | b'\t' | b'\n' | b'\r');
        self.mode = match self.mode {
            Mode::Start if ws => Mode::Start,
            Mode::Start if byte == b'{' => Mode::FirstKey,
            Mode::FirstKey
            | Mode::ExpectKey
            | Mode::AfterKey
            | Mode::ExpectValue
            | Mode::AfterValue
                if ws =>
            {
                self.mode
            }
            Mode::FirstKey | Mode::ExpectKey if byte == b'"' => {
                self.key.clear();
                self.key_too_long = false;
                Mode::Key { escaped: false }
            }
            Mode::FirstKey if byte == b'}' => Mode::Done,
            Mode::Key { escaped } => self.key_byte(byte, escaped),
            Mode::AfterKey if byte == b':' => Mode::ExpectValue,
            Mode::ExpectValue => self.value_start(byte),
            Mode::Text { escaped } => {
                self.keep(byte);
                match (escaped, byte) {
                    (false, b'"') => self.value_end(),
                    (false, b'\\') => Mode::Text { escaped: true },
                    (_, b) if b < 0x20 => Mode::NotJson,
                    _ => Mode::Text { escaped: false },
                }
            }
            Mode::Nested {
                depth,
                in_string,
                escaped,
            } => {
                self.keep(byte);
                self.nested_byte(byte, depth, in_string, escaped)
            }
            Mode::Scalar if ws || byte == b',' || byte == b'}' => {
                let after = self.value_end();
                if after == Mode::AfterValue {
                    self.mode = after;
                    self.step(byte);
                    return;
                }
                after
            }
            Mode::Scalar => {
                self.keep(byte);
                Mode::Scalar
            }
            Mode::AfterValue if byte == b',' => Mode::ExpectKey,
            Mode::AfterValue if byte == b'}' => Mode::Done,
            _ => Mode::NotJson,
        };
    }

    fn key_byte(&mut self, byte: u8, escaped: bool) -> Mode {
        if byte < 0x20 {
            return Mode::NotJson;
        }
        if !escaped && byte == b'"' {
            return Mode::AfterKey;
        }
        if self.key.len() < MAX_KEY_BYTES {
            self.key.push(byte);
        } else {
            self.key_too_long = true;
        }
        Mode::Key {
            escaped: !escaped && byte == b'\\',
        }
    }

    fn value_start(&mut self, byte: u8) -> Mode {
        self.field = if self.key_too_long {
            None
        } else {
            decode_key(&self.key).as_deref().and_then(Field::of)
        };
        // A repeated key keeps its first value (the scan stops at the first answer).
        if self.field.is_some_and(|f| self.has(f)) {
            self.field = None;
        }
        self.value.clear();
        self.value_too_long = false;
        self.keep(byte);
        match byte {
            b'"' => Mode::Text { escaped: false },
            b'{' | b'[' => Mode::Nested {
                depth: 1,
                in_string: false,
                escaped: false,
            },
            b'}' | b']' | b',' | b':' => Mode::NotJson,
            _ => Mode::Scalar,
        }
    }

    fn nested_byte(&mut self, byte: u8, depth: u32, in_string: bool, escaped: bool) -> Mode {
        if in_string {
            return match (escaped, byte) {
                (_, b) if b < 0x20 => Mode::NotJson,
                (false, b'"') => Mode::Nested {
                    depth,
                    in_string: false,
                    escaped: false,
                },
                (false, b'\\') => Mode::Nested {
                    depth,
                    in_string: true,
                    escaped: true,
                },
                _ => Mode::Nested {
                    depth,
                    in_string: true,
                    escaped: false,
                },
            };
        }
        match byte {
            b'"' => Mode::Nested {
                depth,
                in_string: true,
                escaped: false,
            },
            b'{' | b'[' if depth >= MAX_DEPTH => Mode::NotJson,
            b'{' | b'[' => Mode::Nested {
                depth: depth + 1,
                in_string: false,
                escaped: false,
            },
            b'}' | b']' if depth == 1 => self.value_end(),
            b'}' | b']' => Mode::Nested {
                depth: depth - 1,
                in_string: false,
                escaped: false,
            },
            _ => Mode::Nested {
                depth,
                in_string: false,
                escaped: false,
            },
        }
    }

    fn keep(&mut self, byte: u8) {
        if self.field.is_none() {
            return;
        }
        if self.value.len() < MAX_VALUE_BYTES {
            self.value.push(byte);
        } else {
            self.value_too_long = true;
        }
    }

    fn has(&self, field: Field) -> bool {
        match field {
            Field::Model => self.model.is_some(),
            Field::Stream => self.stream.is_some(),
            Field::StreamOptions => self.include_usage.is_some(),
        }
    }

    /// A value ended: a wanted one is parsed (a value that is not valid JSON makes the body
    /// not JSON, as serde_json would say); returns the next mode.
    fn value_end(&mut self) -> Mode {
        let Some(field) = self.field.take() else {
            return Mode::AfterValue;
        };
        let parsed: Option<Value> = if self.value_too_long {
            // Too long to keep: only its kind matters (a long model name is cut anyway).
            None
        } else {
            match serde_json::from_slice(&self.value) {
                Ok(value) => Some(value),
                Err(_) => return Mode::NotJson,
            }
        };
        match field {
            Field::Model => {
                self.model = Some(parsed.as_ref().and_then(Value::as_str).map(str::to_string));
            }
            Field::Stream => self.stream = Some(parsed.as_ref().and_then(Value::as_bool)),
            Field::StreamOptions => {
                self.include_usage = Some(
                    parsed
                        .as_ref()
                        .and_then(|v| v.get("include_usage"))
                        .and_then(Value::as_bool)
                        == Some(true),
                );
            }
        }
        if self.model.is_some() && self.stream.is_some() && self.include_usage.is_some() {
            return Mode::Done;
        }
        Mode::AfterValue
    }
}

/// A key's text as serde_json reads it (escapes decoded); None if it is not a valid string.
fn decode_key(raw: &[u8]) -> Option<String> {
    if !raw.contains(&b'\\') {
        return std::str::from_utf8(raw).ok().map(str::to_string);
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice(&quoted).ok()
}

/// Scans a whole body at once (for tools and tests).
pub fn scan(body: &[u8]) -> BodyFacts {
    let mut scan = BodyScan::new();
    scan.feed(body);
    scan.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What serde_json says the same body asks for (first key wins for repeated keys is not
    /// serde's rule, so the differential inputs never repeat a wanted key).
    fn by_serde(body: &[u8]) -> BodyFacts {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(map)) => BodyFacts::Json {
                model: map.get("model").and_then(Value::as_str).map(str::to_string),
                stream: map.get("stream").and_then(Value::as_bool),
                include_usage: map
                    .get("stream_options")
                    .and_then(|v| v.get("include_usage"))
                    .and_then(Value::as_bool)
                    == Some(true),
            },
            _ => BodyFacts::NotJson,
        }
    }

    /// Fed in every split into two chunks, and byte by byte: the same answer.
    fn scan_split(body: &[u8]) -> BodyFacts {
        let whole = scan(body);
        for at in 0..=body.len() {
            let mut s = BodyScan::new();
            s.feed(&body[..at]);
            s.feed(&body[at..]);
            assert_eq!(
                s.finish(),
                whole,
                "split at {at}: {:?}",
                String::from_utf8_lossy(body)
            );
        }
        let mut s = BodyScan::new();
        for byte in body {
            s.feed(std::slice::from_ref(byte));
        }
        assert_eq!(s.finish(), whole);
        whole
    }

    #[test]
    fn agrees_with_serde_json_on_valid_and_invalid_bodies() {
        let bodies: Vec<String> = vec![
            json!({"model": "gpt-5", "stream": true}).to_string(),
            json!({"messages": [{"role": "user", "content": "}{\"model\": \"x\""}],
                   "model": "claude-x", "max_tokens": 10, "stream": true})
            .to_string(),
            json!({"tools": {"a": [1, 2, {"stream": false}]}, "stream": false}).to_string(),
            json!({"model": "m\"q\\u00e9\n", "stream": "yes"}).to_string(),
            json!({"stream_options": {"include_usage": true}, "model": "a", "stream": true})
                .to_string(),
            json!({"model": 7, "stream": null, "n": -1.5e3, "ok": false}).to_string(),
            "{}".to_string(),
            " \n{ \"model\" : \"spaced\" , \"stream\" : true } ".to_string(),
            r#"{"mod\u0065l": "escaped-key", "str\u0065am": true}"#.to_string(),
            r#"{"model": "a", }"#.to_string(),
            r#"{"model": "a" "stream": true}"#.to_string(),
            r#"{"model": tru, "stream": true}"#.to_string(),
            r#"{"model": "a""#.to_string(),
            r#"["model", "a"]"#.to_string(),
            "not json".to_string(),
            String::new(),
            r#"{"model": "a", "stream": true, "messages": [1, 2"#.to_string(),
            "{\"model\": \"tab\there\"}".to_string(),
        ];
        for body in &bodies {
            let ours = scan_split(body.as_bytes());
            let theirs = by_serde(body.as_bytes());
            // A body serde_json reads is read the same. Of the others, only what breaks after
            // every wanted key (not read: the scan stops) or inside a value no one asked for
            // (skipped, not validated) may still be answered.
            if theirs != BodyFacts::NotJson || ours == BodyFacts::NotJson {
                assert_eq!(ours, theirs, "{body}");
            } else {
                assert!(body.contains("stream"), "{body}");
            }
        }
    }

    #[test]
    fn stream_last_after_megabytes_of_nested_content() {
        let filler = "x\\\"}]{[".repeat(8 << 17); // about 8 MiB of escapes and brackets in strings
        let body = json!({"model": "claude-opus", "messages": [{"role": "user",
                          "content": [{"type": "text", "text": filler}]}],
                          "max_tokens": 4096, "stream": true})
        .to_string();
        assert!(body.len() > 8 << 20);
        let mut s = BodyScan::new();
        for chunk in body.as_bytes().chunks(16 * 1024 + 7) {
            s.feed(chunk);
        }
        assert_eq!(
            s.finish(),
            BodyFacts::Json {
                model: Some("claude-opus".into()),
                stream: Some(true),
                include_usage: false
            }
        );
        // Nothing is kept of what was skipped.
        assert!(s.value.capacity() <= MAX_VALUE_BYTES * 2 && s.key.capacity() <= MAX_KEY_BYTES * 2);
    }

    #[test]
    fn decided_as_soon_as_every_wanted_key_is_read() {
        let mut s = BodyScan::new();
        s.feed(br#"{"stream": true, "model": "m", "stream_options": {"include_usage": true}, "#);
        assert!(!s.wants_more());
        s.feed(b"garbage that is never read");
        assert_eq!(
            s.finish(),
            BodyFacts::Json {
                model: Some("m".into()),
                stream: Some(true),
                include_usage: true
            }
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_first_value_and_deep_nesting_is_refused() {
        assert_eq!(
            scan(br#"{"stream": false, "stream": true}"#),
            BodyFacts::Json {
                model: None,
                stream: Some(false),
                include_usage: false
            }
        );
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(200), "]".repeat(200));
        assert_eq!(scan(deep.as_bytes()), BodyFacts::NotJson);
        let long_model = format!("{{\"model\": \"{}\", \"stream\": true}}", "m".repeat(5000));
        assert_eq!(
            scan(long_model.as_bytes()),
            BodyFacts::Json {
                model: None,
                stream: Some(true),
                include_usage: false
            }
        );
    }
}
