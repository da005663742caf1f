//! Reading claims by path (`realm_access.roles`) and turning them into header values.

use std::rc::Rc;

use serde_json::{Map, Value};

use crate::core::identity::Identity;
use crate::core::jwt::provider::Provider;

/// Looks up a dotted path; a top-level claim whose name itself contains dots wins
/// (e.g. `https://example.com/roles`).
pub fn lookup<'a>(claims: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(path) {
        return Some(value);
    }
    let mut parts = path.split('.');
    let mut current = claims.get(parts.next()?)?;
    for part in parts {
        current = current.as_object()?.get(part)?;
    }
    Some(current)
}

/// A claim as a header value: strings as-is, numbers and booleans printed, arrays of those
/// joined with ",". Objects and nulls give nothing. Control characters are dropped so a claim
/// can never split or smuggle a header.
pub fn header_value(value: &Value) -> Option<String> {
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(scalar_text).collect();
            if parts.is_empty() {
                return None;
            }
            parts.join(",")
        }
        Value::Null | Value::Object(_) => return None,
    };
    let clean: String = text.chars().filter(|c| !c.is_control()).collect();
    Some(clean)
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Scopes from a space-delimited string (`scope`, RFC 8693) or an array claim (`scp`). An entry
/// with a control character (a NUL Envoy would refuse in a header) is no scope or role: dropped.
pub fn string_list(value: Option<&Value>) -> Vec<String> {
    let words: Vec<&str> = match value {
        Some(Value::String(s)) => s.split_whitespace().collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str())
            .flat_map(|s| s.split_whitespace())
            .collect(),
        _ => Vec::new(),
    };
    words
        .into_iter()
        .filter(|word| !word.chars().any(char::is_control))
        .map(str::to_string)
        .collect()
}

impl Identity {
    /// The identity of a verified JWT.
    pub fn from_jwt(prefix: &str, provider: &Provider, claims_map: &Map<String, Value>) -> Self {
        let names = &provider.subject_claims;
        let value_at = |path: &str| lookup(claims_map, path).and_then(header_value);
        let roles = string_list(lookup(claims_map, &names.roles));
        let scopes = string_list(lookup(claims_map, &names.scopes));
        let mut headers = vec![
            (format!("{prefix}credential"), "jwt".to_string()),
            (format!("{prefix}provider"), provider.name.clone()),
        ];
        let mut put = |suffix: &str, value: Option<String>| {
            if let Some(value) = value.filter(|v| !v.is_empty()) {
                headers.push((format!("{prefix}{suffix}"), value));
            }
        };
        let subject = value_at(&names.subject);
        let email = value_at(&names.email);
        put("subject", subject.clone());
        put("email", email.clone());
        put("roles", Some(roles.join(",")));
        put("scopes", Some(scopes.join(",")));
        for (claim, header) in &provider.claim_to_headers {
            if let Some(value) = value_at(claim) {
                headers.push((header.clone(), value));
            }
        }
        let effective_roles = provider
            .role_hierarchy
            .as_ref()
            .map(|hierarchy| hierarchy.effective(&roles));
        let audiences = match claims_map.get("aud") {
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        };
        Identity {
            headers: Rc::new(headers),
            scopes,
            roles,
            effective_roles,
            audiences,
            subject,
            email,
            issuer: Some(provider.issuer.clone()),
            expires_at_s: None,
            credential_sha256: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn nested_and_dotted_names() {
        let c = claims(json!({"realm_access": {"roles": ["a", "b"]}, "https://x.io/t": "t1"}));
        assert_eq!(lookup(&c, "realm_access.roles"), Some(&json!(["a", "b"])));
        assert_eq!(lookup(&c, "https://x.io/t"), Some(&json!("t1")));
        assert_eq!(lookup(&c, "realm_access.missing"), None);
        assert_eq!(lookup(&c, "realm_access.roles.x"), None);
    }

    #[test]
    fn header_values() {
        assert_eq!(
            header_value(&json!(["a", 1, true])),
            Some("a,1,true".to_string())
        );
        assert_eq!(header_value(&json!("x\r\ny")), Some("xy".to_string()));
        assert_eq!(header_value(&json!({"a": 1})), None);
        assert_eq!(header_value(&json!([])), None);
    }

    #[test]
    fn scopes_from_string_or_array() {
        assert_eq!(string_list(Some(&json!("a  b"))), vec!["a", "b"]);
        assert_eq!(string_list(Some(&json!(["a", "b c"]))), vec!["a", "b", "c"]);
        assert!(string_list(Some(&json!(5))).is_empty());
        assert!(string_list(None).is_empty());
        assert_eq!(
            string_list(Some(&json!(["admin\u{0}", "user"]))),
            vec!["user"]
        );
    }
}
