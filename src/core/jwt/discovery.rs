//! OpenID Connect discovery (`{issuer}/.well-known/openid-configuration`): where a provider's
//! key set and sign-in endpoints are. Fetched with the key set; a failed fetch keeps what was
//! known; a document naming another issuer is refused (it would hand out foreign keys).

use serde_json::Value;

use crate::core::syntax::split_uri;

/// What authgate uses of a discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// `jwks_uri` as `:authority` and path.
    pub jwks: (String, String),
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub end_session_endpoint: Option<String>,
}

/// Reads a discovery document for `issuer`.
pub fn parse(issuer: &str, body: &[u8]) -> Result<Discovered, String> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|_| "the discovery document is not JSON".to_string())?;
    let text = |name: &str| document.get(name).and_then(Value::as_str);
    if text("issuer") != Some(issuer) {
        return Err(format!(
            "the discovery document names issuer {:?}, not {issuer:?}",
            text("issuer").unwrap_or("")
        ));
    }
    let jwks = text("jwks_uri")
        .and_then(split_uri)
        .ok_or("the discovery document has no usable jwks_uri")?;
    let endpoint = |name: &str| {
        text(name)
            .filter(|url| split_uri(url).is_some())
            .map(str::to_string)
    };
    Ok(Discovered {
        jwks,
        authorization_endpoint: endpoint("authorization_endpoint"),
        token_endpoint: endpoint("token_endpoint"),
        end_session_endpoint: endpoint("end_session_endpoint"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_for_this_issuer_only() {
        let body = br#"{"issuer": "https://idp.test/realms/corp",
            "jwks_uri": "https://idp.test/realms/corp/certs",
            "authorization_endpoint": "https://idp.test/auth", "token_endpoint": "https://idp.test/token"}"#;
        let found = parse("https://idp.test/realms/corp", body).unwrap();
        assert_eq!(
            found.jwks,
            ("idp.test".to_string(), "/realms/corp/certs".to_string())
        );
        assert_eq!(
            found.token_endpoint.as_deref(),
            Some("https://idp.test/token")
        );
        assert_eq!(found.end_session_endpoint, None);
        assert!(parse("https://idp.test/realms/other", body).is_err());
        assert!(parse("https://idp.test/realms/corp", b"<html>").is_err());
        assert!(parse(
            "https://idp.test/realms/corp",
            br#"{"issuer": "https://idp.test/realms/corp"}"#
        )
        .is_err());
    }
}
