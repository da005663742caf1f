//! Parsing JSON objects that must not repeat a member name. serde_json keeps the last value of a
//! repeated key and has no option to refuse it, so a token `{"sub":"a","sub":"b"}` would mean
//! different things to different parsers (the IdP's, ours, the upstream's). RFC 7519 §4 lets a
//! recipient reject such a token; an auth gateway should. Hand-written as a serde visitor (no
//! well-kept crate offers this check), and building the value in the same pass, so a token's
//! claims are parsed once.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The JSON object in `json`, or None when it is not valid JSON, not an object, or some object
/// in it, at any depth, repeats a member name. Escapes are decoded first, so `"sub"` and
/// `"s\u0075b"` count as the same name.
pub fn parse_object(json: &[u8]) -> Option<Map<String, Value>> {
    match parse(json)? {
        Value::Object(object) => Some(object),
        _ => None,
    }
}

/// Any JSON value in `json`, under the same rule: no object in it repeats a member name.
pub fn parse(json: &[u8]) -> Option<Value> {
    serde_json::from_slice::<Strict>(json)
        .ok()
        .map(|strict| strict.0)
}

struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Strict, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON without repeated member names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if object.contains_key(&name) {
                return Err(de::Error::custom("repeated member name"));
            }
            let Strict(value) = map.next_value()?;
            object.insert(name, value);
        }
        Ok(Strict(Value::Object(object)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Strict(Value::Array(items)))
    }

    fn visit_bool<E>(self, value: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(value)))
    }
    fn visit_i64<E>(self, value: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(value.into())))
    }
    fn visit_u64<E>(self, value: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(value.into())))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Strict, E> {
        Number::from_f64(value)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, value: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(value.to_string())))
    }
    fn visit_string<E>(self, value: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(value)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repeated_names_at_any_depth_are_found() {
        let nested = br#"{"sub":"a","aud":["x","x"],"n":{"a":1,"b":2.5,"c":null,"d":true}}"#;
        assert_eq!(
            parse_object(nested).map(Value::Object),
            Some(json!({"sub":"a","aud":["x","x"],"n":{"a":1,"b":2.5,"c":null,"d":true}}))
        );
        assert_eq!(parse_object(br#"{"sub":"a","sub":"b"}"#), None);
        assert_eq!(parse_object(br#"{"sub":"a","s\u0075b":"b"}"#), None);
        assert_eq!(parse_object(br#"{"x":[{"a":1,"a":1}]}"#), None);
        assert_eq!(parse_object(b"{not json"), None);
        assert_eq!(parse_object(br#"{"a":1} trailing"#), None);
    }

    #[test]
    fn only_objects_are_accepted() {
        assert_eq!(parse_object(b"[1, 2.5, null, true, \"s\"]"), None);
        assert_eq!(parse_object(b"\"s\""), None);
        assert_eq!(parse_object(b"{}"), Some(Map::new()));
    }
}
