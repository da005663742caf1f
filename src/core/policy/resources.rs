//! OAuth 2.0 protected resources (RFC 9728), as MCP clients discover how to authenticate: each
//! `protected_resources` entry's metadata document, answered by the filter, and the challenges on
//! the requests it covers (`WWW-Authenticate: Bearer resource_metadata=…, scope=…`).

use serde_json::json;

use crate::core::config_error::ConfigError;
use crate::core::replies::Reply;
use crate::core::syntax::split_uri;

pub mod raw {
    //! A `protected_resources` entry exactly as written.
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Resource {
        pub resource: String,
        #[serde(rename = "match")]
        pub matcher: Match,
        pub authorization_servers: Vec<String>,
        #[serde(default)]
        pub scopes_supported: Vec<String>,
        pub resource_name: Option<String>,
        #[serde(default)]
        pub require_audience: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Match {
        pub prefix: Option<String>,
        pub path: Option<String>,
    }
}

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

#[derive(Debug)]
pub struct Resource {
    pub resource: String,
    prefix: Option<String>,
    path: Option<String>,
    /// Where this entry's document is served (path only), and its absolute URL, built from the
    /// configured `resource` (never from the request's Host).
    pub metadata_path: String,
    pub metadata_url: String,
    pub require_audience: bool,
    document: String,
}

#[derive(Debug, Default)]
pub struct Resources {
    entries: Vec<Resource>,
}

impl Resources {
    pub fn compile(raw: Vec<raw::Resource>) -> Result<Resources, ConfigError> {
        let mut entries = Vec::with_capacity(raw.len());
        for (i, entry) in raw.into_iter().enumerate() {
            let at = |field: &str| format!("protected_resources[{i}].{field}");
            let Some((authority, path)) = split_uri(&entry.resource) else {
                return Err(ConfigError::new(
                    at("resource"),
                    "must be an absolute http(s) URL",
                ));
            };
            if entry.resource.contains(['?', '#']) {
                return Err(ConfigError::new(
                    at("resource"),
                    "must not have a query or fragment",
                ));
            }
            if entry.matcher.prefix.is_some() == entry.matcher.path.is_some() {
                return Err(ConfigError::new(
                    at("match"),
                    "set exactly one of prefix or path",
                ));
            }
            for value in [&entry.matcher.prefix, &entry.matcher.path]
                .into_iter()
                .flatten()
            {
                if !value.starts_with('/') {
                    return Err(ConfigError::new(at("match"), "must start with '/'"));
                }
            }
            if entry.authorization_servers.is_empty()
                || entry
                    .authorization_servers
                    .iter()
                    .any(|s| split_uri(s).is_none())
            {
                return Err(ConfigError::new(
                    at("authorization_servers"),
                    "list the issuer URL(s) of the authorization server(s)",
                ));
            }
            let scheme = if entry.resource.starts_with("https://") {
                "https"
            } else {
                "http"
            };
            let suffix = path.trim_end_matches('/');
            let metadata_path = format!("{WELL_KNOWN}{suffix}");
            let metadata_url = format!("{scheme}://{authority}{metadata_path}");
            let mut document = json!({
                "resource": entry.resource,
                "authorization_servers": entry.authorization_servers,
                "scopes_supported": entry.scopes_supported,
                "bearer_methods_supported": ["header"],
            });
            if let Some(name) = &entry.resource_name {
                document["resource_name"] = json!(name);
            }
            entries.push(Resource {
                resource: entry.resource,
                prefix: entry.matcher.prefix,
                path: entry.matcher.path,
                metadata_path,
                metadata_url,
                require_audience: entry.require_audience,
                document: document.to_string(),
            });
        }
        let mut paths: Vec<&str> = entries.iter().map(|e| e.metadata_path.as_str()).collect();
        paths.sort_unstable();
        if paths.windows(2).any(|w| w[0] == w[1]) {
            return Err(ConfigError::new(
                "protected_resources",
                "two entries would serve the same metadata document: give them distinct resource paths",
            ));
        }
        Ok(Resources { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry covering a (normalised) request path.
    pub fn covering(&self, path: &str) -> Option<&Resource> {
        self.entries.iter().find(|e| match (&e.prefix, &e.path) {
            (Some(prefix), _) => path.starts_with(prefix.as_str()),
            (None, Some(exact)) => path == exact,
            (None, None) => false,
        })
    }

    /// The metadata document for `path` (`GET`, or `OPTIONS` for a browser's preflight), or None
    /// when `path` is no document. With a single entry the root form answers too.
    pub fn metadata(&self, method: &str, path: &str) -> Option<Reply> {
        let entry = self
            .entries
            .iter()
            .find(|e| e.metadata_path == path)
            .or_else(|| {
                (path == WELL_KNOWN && self.entries.len() == 1).then(|| &self.entries[0])
            })?;
        let cors = [
            ("access-control-allow-origin", "*"),
            ("access-control-allow-methods", "GET, OPTIONS"),
            ("access-control-allow-headers", "*"),
        ];
        let headers = |extra: &[(&str, &str)]| {
            cors.iter()
                .chain(extra)
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        };
        Some(match method {
            "OPTIONS" => Reply {
                status: 204,
                headers: headers(&[]),
                body: String::new(),
            },
            "GET" | "HEAD" => Reply {
                status: 200,
                headers: headers(&[
                    ("content-type", "application/json"),
                    ("cache-control", "public, max-age=3600"),
                ]),
                body: entry.document.clone(),
            },
            _ => Reply {
                status: 405,
                headers: headers(&[("allow", "GET, OPTIONS")]),
                body: String::new(),
            },
        })
    }
}

impl Resource {
    /// A 401 or an `insufficient_scope` 403 on a covered request, with the challenge MCP clients
    /// read: where the metadata is and the scopes the rule requires (RFC 9728 §5.1).
    pub fn challenge(&self, mut reply: Reply, scopes: &[String]) -> Reply {
        let error = reply
            .headers
            .iter()
            .find(|(n, _)| n == "www-authenticate")
            .and_then(|(_, v)| {
                ["invalid_token", "insufficient_scope"]
                    .into_iter()
                    .find(|e| v.contains(&format!("error=\"{e}\"")))
            });
        let mut challenge = String::from("Bearer");
        if let Some(error) = error {
            challenge.push_str(&format!(" error=\"{error}\","));
        }
        challenge.push_str(&format!(" resource_metadata=\"{}\"", self.metadata_url));
        if !scopes.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
        }
        reply.headers.retain(|(n, _)| n != "www-authenticate");
        reply
            .headers
            .push(("www-authenticate".to_string(), challenge));
        reply
            .headers
            .push(("access-control-allow-origin".to_string(), "*".to_string()));
        reply.headers.push((
            "access-control-expose-headers".to_string(),
            "WWW-Authenticate".to_string(),
        ));
        reply
    }

    /// Whether a token's `aud` names this resource: the same URL, scheme and host compared
    /// without case, a default port elided (RFC 8707).
    pub fn audience_matches(&self, audiences: &[String]) -> bool {
        let want = canonical(&self.resource);
        audiences.iter().any(|aud| canonical(aud) == want)
    }
}

fn canonical(url: &str) -> String {
    let lower = url.to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://").unwrap_or(("", &lower));
    let original_rest = &url[url.len() - rest.len()..];
    let (authority, path) = match original_rest.find('/') {
        Some(i) => (&rest[..i], &original_rest[i..]),
        None => (rest, ""),
    };
    let authority = match (scheme, authority.rsplit_once(':')) {
        ("https", Some((host, "443"))) | ("http", Some((host, "80"))) => host,
        _ => authority,
    };
    format!("{scheme}://{authority}{}", path.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources(json: serde_json::Value) -> Result<Resources, ConfigError> {
        let raw: Vec<raw::Resource> = serde_json::from_value(json).unwrap();
        Resources::compile(raw)
    }

    #[test]
    fn documents_paths_and_audiences() {
        let r = resources(serde_json::json!([
            {"resource": "https://mcp.example.com/mcp", "match": {"prefix": "/mcp"},
             "authorization_servers": ["https://idp.example.com/realms/corp"],
             "scopes_supported": ["mcp:tools"], "resource_name": "Corp MCP"},
            {"resource": "https://mcp.example.com/other", "match": {"prefix": "/other"},
             "authorization_servers": ["https://idp.example.com/realms/corp"]}
        ]))
        .unwrap();
        let doc = r
            .metadata("GET", "/.well-known/oauth-protected-resource/mcp")
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
        assert_eq!(body["resource"], "https://mcp.example.com/mcp");
        assert_eq!(
            body["bearer_methods_supported"],
            serde_json::json!(["header"])
        );
        assert!(
            r.metadata("GET", "/.well-known/oauth-protected-resource")
                .is_none(),
            "two entries: no root form"
        );
        assert_eq!(
            r.metadata("OPTIONS", "/.well-known/oauth-protected-resource/other")
                .unwrap()
                .status,
            204
        );
        let mcp = r.covering("/mcp/tools").unwrap();
        assert_eq!(
            mcp.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert!(mcp.audience_matches(&["HTTPS://MCP.example.com:443/mcp".to_string()]));
        assert!(!mcp.audience_matches(&["https://mcp.example.com/mcp2".to_string()]));
        assert!(!mcp.audience_matches(&["https://evil.example/mcp".to_string()]));
        assert!(r.covering("/elsewhere").is_none());
        let clash = resources(serde_json::json!([
            {"resource": "https://a.example/mcp", "match": {"prefix": "/a"}, "authorization_servers": ["https://idp"]},
            {"resource": "https://b.example/mcp", "match": {"prefix": "/b"}, "authorization_servers": ["https://idp"]}
        ]));
        assert!(clash.is_err());
    }
}
