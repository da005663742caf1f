//! What a verified credential grants: the headers sent upstream, and the scopes and roles the
//! rules check. Computed once per credential and cached with it.

use std::rc::Rc;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub headers: Rc<Vec<(String, String)>>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    /// With a `role_hierarchy`: the roles and every role they include (what rules check);
    /// None without one. Identity headers keep the token's own roles.
    pub effective_roles: Option<Vec<String>>,
    /// A JWT's `aud` (checked per request: the provider's audiences, or a protected resource's).
    pub audiences: Vec<String>,
    /// For the authorization service: `sub` or the API key's id, the email, the issuer.
    pub subject: Option<String>,
    pub email: Option<String>,
    pub issuer: Option<String>,
    /// When the credential stops being valid (seconds since the epoch): bounds cached decisions.
    pub expires_at_s: Option<i64>,
    /// The credential's SHA-256 when it is known once for every request that carries it (a
    /// verified JWT with an enterprise service configured, a configured API key): the decision
    /// key needs it on each enterprise request, and hashing a JWT costs more than the lookup.
    pub credential_sha256: Option<[u8; 32]>,
}

impl Identity {
    /// An agent token's identity before the authorization service has spoken: only its kind.
    pub fn opaque(prefix: &str) -> Self {
        Identity {
            headers: Rc::new(vec![(
                format!("{prefix}credential"),
                "opaque_token".to_string(),
            )]),
            ..Identity::default()
        }
    }

    /// The identity of a configured API key: its principal and scopes (API keys carry no roles).
    pub fn from_api_key(
        prefix: &str,
        id: &str,
        principal: &str,
        scopes: &[String],
        expires_at_s: Option<i64>,
        digest: [u8; 32],
    ) -> Self {
        let mut headers = vec![
            (format!("{prefix}credential"), "api_key".to_string()),
            (format!("{prefix}key-id"), id.to_string()),
            (format!("{prefix}subject"), principal.to_string()),
        ];
        if !scopes.is_empty() {
            headers.push((format!("{prefix}scopes"), scopes.join(",")));
        }
        Identity {
            headers: Rc::new(headers),
            scopes: scopes.to_vec(),
            roles: Vec::new(),
            effective_roles: None,
            audiences: Vec::new(),
            subject: Some(id.to_string()),
            email: None,
            issuer: None,
            expires_at_s,
            credential_sha256: Some(digest),
        }
    }
}
