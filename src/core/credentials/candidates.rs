//! Finding the credentials a rule accepts on a request, in the rule's `requires_any` order.
//! A bearer value is a JWT when it has exactly two dots; anything else is opaque: an API key
//! when the API-key headers include `authorization`, an agent token when the rule takes
//! `opaque_token`, and otherwise a token this route refuses. Agent tokens may also arrive in
//! `x-api-key`, where Anthropic-style clients put their key; when the rule also takes API keys
//! there, a value that is no configured key is tried as an agent token next.

use crate::core::credentials::api_keys::PresentedKey;
use serde::Deserialize;

use crate::core::credentials::api_keys::ApiKeys;
use crate::core::credentials::extract::{self, Found};
use crate::core::jwt::provider::Provider;
use crate::core::request::Request;

/// What to do with a bearer token that is not a JWT (no two dots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OpaqueTokens {
    #[default]
    Reject,
    Enterprise,
}

/// One credential a rule accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requirement {
    Jwt(usize),
    ApiKey,
    OpaqueToken,
    /// The gateway's own sign-in cookie.
    Session,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate<'a> {
    Jwt {
        provider: usize,
        found: Found<'a>,
    },
    ApiKey(PresentedKey<'a>),
    /// An agent token for the enterprise authorization service.
    OpaqueToken(Found<'a>),
    /// A non-JWT bearer value on a route that takes neither opaque tokens nor keys there.
    RefusedOpaque(Found<'a>),
    /// The sign-in session cookie (not opened yet).
    Session(Found<'a>),
}

/// The kind of credential, for stats and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Jwt,
    ApiKey,
    OpaqueToken,
    Session,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Jwt => "jwt",
            Kind::ApiKey => "api_key",
            Kind::OpaqueToken => "opaque_token",
            Kind::Session => "session",
        }
    }
}

impl Candidate<'_> {
    pub fn kind(&self) -> Kind {
        match self {
            Candidate::Jwt { .. } => Kind::Jwt,
            Candidate::ApiKey(_) => Kind::ApiKey,
            Candidate::OpaqueToken(_) | Candidate::RefusedOpaque(_) => Kind::OpaqueToken,
            Candidate::Session(_) => Kind::Session,
        }
    }

    /// The credential's bytes (hashed for fingerprints, never logged).
    pub fn secret(&self) -> &str {
        match self {
            Candidate::Jwt { found, .. }
            | Candidate::OpaqueToken(found)
            | Candidate::RefusedOpaque(found)
            | Candidate::Session(found) => found.token,
            Candidate::ApiKey(key) => key.value,
        }
    }
}

pub fn is_jwt_shaped(token: &str) -> bool {
    token.bytes().filter(|b| *b == b'.').count() == 2
}

/// The credentials on `request` that `requires` (a rule's `requires_any`) accepts, in that order.
pub fn find<'a>(
    providers: &'a [Provider],
    api_keys: Option<&'a ApiKeys>,
    session_cookie: Option<&'a str>,
    requires: &[Requirement],
    request: &Request<'a>,
) -> Vec<Candidate<'a>> {
    let takes_opaque = requires.contains(&Requirement::OpaqueToken);
    let keys_in_bearer = requires.contains(&Requirement::ApiKey)
        && api_keys.is_some_and(|keys| keys.headers.iter().any(|h| h == "authorization"));
    let mut found: Vec<Candidate<'a>> = Vec::with_capacity(requires.len());
    let mut push = |candidate: Candidate<'a>| {
        if !found.contains(&candidate) {
            found.push(candidate);
        }
    };
    for requirement in requires {
        match *requirement {
            Requirement::Jwt(index) => {
                let Some(token) = providers
                    .get(index)
                    .and_then(|p| extract::find_token(p, request))
                else {
                    continue;
                };
                if is_jwt_shaped(token.token) {
                    push(Candidate::Jwt {
                        provider: index,
                        found: token,
                    });
                } else if !(takes_opaque || keys_in_bearer && token.header == Some("authorization"))
                {
                    push(Candidate::RefusedOpaque(token));
                }
            }
            Requirement::ApiKey => {
                if let Some(key) = api_keys.and_then(|k| k.find(request)) {
                    push(Candidate::ApiKey(key));
                }
            }
            Requirement::OpaqueToken => {
                if let Some(token) = agent_token(request) {
                    push(Candidate::OpaqueToken(token));
                }
            }
            Requirement::Session => {
                let found = session_cookie.and_then(|name| {
                    let token = request.cookie(name).filter(|v| !v.is_empty())?;
                    Some(Found {
                        token,
                        header: None,
                        cookie: Some(name),
                    })
                });
                if let Some(found) = found {
                    push(Candidate::Session(found));
                }
            }
        }
    }
    found
}

/// An agent token: `Authorization: Bearer <token>` (OpenAI-style clients), else `x-api-key`
/// (Anthropic-style clients send their key there). A JWT-shaped value is never one.
fn agent_token<'a>(request: &Request<'a>) -> Option<Found<'a>> {
    let bearer = request
        .header("authorization")
        .and_then(crate::core::credentials::api_keys::strip_bearer)
        .map(|token| (token, "authorization"));
    let api_key = request
        .header("x-api-key")
        .map(|token| (token.trim(), "x-api-key"));
    [bearer, api_key]
        .into_iter()
        .flatten()
        .find(|(token, _)| !token.is_empty() && !is_jwt_shaped(token))
        .map(|(token, header)| Found {
            token,
            header: Some(header),
            cookie: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape_is_two_dots() {
        assert!(is_jwt_shaped("a.b.c"));
        assert!(!is_jwt_shaped("ek_live_abc"));
        assert!(!is_jwt_shaped("a.b"));
        assert!(!is_jwt_shaped("a.b.c.d"));
    }
}
