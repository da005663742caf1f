//! Finding a provider's token in the places it is configured to arrive.

use crate::core::jwt::provider::Provider;
use crate::core::request::Request;

/// A token and the header or cookie it came in, so `forward: false` can remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found<'a> {
    pub token: &'a str,
    pub header: Option<&'a str>,
    pub cookie: Option<&'a str>,
}

pub fn find_token<'a>(provider: &'a Provider, request: &Request<'a>) -> Option<Found<'a>> {
    for source in &provider.from_headers {
        let Some(value) = request.header(&source.name) else {
            continue;
        };
        // RFC 6750: the auth scheme is case-insensitive ("bearer" works like "Bearer").
        let prefix = source.value_prefix.as_str();
        let Some(head) = value.get(..prefix.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(prefix) {
            continue;
        }
        let token = value[prefix.len()..].trim();
        if !token.is_empty() {
            return Some(Found {
                token,
                header: Some(source.name.as_str()),
                cookie: None,
            });
        }
    }
    provider
        .from_cookies
        .iter()
        .filter_map(|name| Some((name, request.cookie(name)?)))
        .find(|(_, token)| !token.is_empty())
        .map(|(name, token)| Found {
            token,
            header: None,
            cookie: Some(name.as_str()),
        })
}
