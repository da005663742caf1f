//! Rejecting JSON objects that repeat a member name. serde_json keeps the last value of a
//! repeated key and has no option to refuse it, so a token `{"sub":"a","sub":"b"}` would mean
//! different things to different parsers (the IdP's, ours, the upstream's). RFC 7519 §4 lets a
//! recipient reject such a token; an auth gateway should. Hand-written as a serde visitor: no
//! well-kept crate offers this check.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// Whether `json` is valid JSON in which no object, at any depth, repeats a member name.
/// Escapes are decoded first, so `"sub"` and `"s\u0075b"` count as the same name.
pub fn has_unique_members(json: &[u8]) -> bool {
    serde_json::from_slice::<Unique>(json).is_ok()
}

struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Unique, D::Error> {
        deserializer.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON without repeated member names")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if !seen.insert(name) {
                return Err(de::Error::custom("repeated member name"));
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_at_any_depth_are_found() {
        assert!(has_unique_members(
            br#"{"sub":"a","aud":["x","x"],"n":{"a":1,"b":2}}"#
        ));
        assert!(!has_unique_members(br#"{"sub":"a","sub":"b"}"#));
        assert!(!has_unique_members(br#"{"sub":"a","s\u0075b":"b"}"#));
        assert!(!has_unique_members(br#"{"x":[{"a":1,"a":1}]}"#));
        assert!(!has_unique_members(b"{not json"));
        assert!(has_unique_members(b"[1, 2.5, null, true, \"s\"]"));
    }
}
