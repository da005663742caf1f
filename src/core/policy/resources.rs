//! OAuth 2.0 protected resources (RFC 9728), as MCP clients discover how to authenticate: each
//! `protected_resources` entry's metadata document, answered by the filter, and the challenges on
//! the requests it covers (`WWW-Authenticate: Bearer resource_metadata=…, scope=…`).

use serde_json::json;

use crate::core::config_error::ConfigError;
use crate::core::policy::glob::HostGlob;
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
        #[serde(default)]
        pub hosts: Vec<String>,
    }
}

const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

#[derive(Debug)]
pub struct Resource {
    pub resource: String,
    prefix: Option<String>,
    path: Option<String>,
    /// Empty: every host. Several MCP servers on one gateway usually differ by host, each at
    /// `/mcp`: each entry then covers, and serves its document on, its own hosts.
    hosts: Vec<HostGlob>,
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
            let mut hosts = Vec::with_capacity(entry.matcher.hosts.len());
            for (j, host) in entry.matcher.hosts.iter().enumerate() {
                hosts.push(
                    HostGlob::new(host)
                        .map_err(|e| ConfigError::new(at(&format!("match.hosts[{j}]")), e))?,
                );
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
                hosts,
                metadata_path,
                metadata_url,
                require_audience: entry.require_audience,
                document: document.to_string(),
            });
        }
        // Two entries may share a document path only when each is limited to hosts the other
        // does not list: else one of them could never be discovered.
        for (i, later) in entries.iter().enumerate() {
            let clash = entries[..i].iter().any(|earlier| {
                earlier.metadata_path == later.metadata_path
                    && (earlier.hosts.is_empty()
                        || later.hosts.is_empty()
                        || earlier.hosts.iter().any(|h| later.hosts.contains(h)))
            });
            if clash {
                return Err(ConfigError::new(
                    format!("protected_resources[{i}]"),
                    "another entry serves the same metadata document on the same hosts: give them \
                     distinct resource paths or distinct match.hosts",
                ));
            }
        }
        Ok(Resources { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether some entry is limited to hosts.
    pub fn any_hosts(&self) -> bool {
        self.entries.iter().any(|e| !e.hosts.is_empty())
    }

    /// The request's host as host globs match it, computed only when some entry lists hosts
    /// (both lookups run on every request).
    fn host_of(&self, authority: &str) -> Option<String> {
        self.any_hosts()
            .then(|| crate::core::syntax::host_of(authority))
    }

    /// The first entry covering a request's `:authority` and (normalised) path.
    pub fn covering(&self, authority: &str, path: &str) -> Option<&Resource> {
        if self.entries.is_empty() {
            return None;
        }
        let host = self.host_of(authority);
        self.entries.iter().find(|e| {
            e.on_host(host.as_deref())
                && match (&e.prefix, &e.path) {
                    (Some(prefix), _) => path.starts_with(prefix.as_str()),
                    (None, Some(exact)) => path == exact,
                    (None, None) => false,
                }
        })
    }

    /// The metadata document for `path` on the request's `:authority` (`GET`, or `OPTIONS` for
    /// a browser's preflight), or None when `path` is no document there. Where a single entry
    /// serves the host, the root form answers too.
    pub fn metadata(&self, method: &str, authority: &str, path: &str) -> Option<Reply> {
        if !path.starts_with(WELL_KNOWN) {
            return None;
        }
        let host = self.host_of(authority);
        let mut on_host = self.entries.iter().filter(|e| e.on_host(host.as_deref()));
        let entry = match on_host.clone().find(|e| e.metadata_path == path) {
            Some(entry) => entry,
            None if path == WELL_KNOWN => match (on_host.next(), on_host.next()) {
                (Some(only), None) => only,
                _ => return None,
            },
            None => return None,
        };
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
    /// `host`: None when no entry lists hosts.
    fn on_host(&self, host: Option<&str>) -> bool {
        self.hosts.is_empty()
            || host.is_some_and(|host| self.hosts.iter().any(|h| h.matches_host(host)))
    }

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
            .metadata("GET", "gw", "/.well-known/oauth-protected-resource/mcp")
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
        assert_eq!(body["resource"], "https://mcp.example.com/mcp");
        assert_eq!(
            body["bearer_methods_supported"],
            serde_json::json!(["header"])
        );
        assert!(
            r.metadata("GET", "gw", "/.well-known/oauth-protected-resource")
                .is_none(),
            "two entries: no root form"
        );
        assert_eq!(
            r.metadata(
                "OPTIONS",
                "gw",
                "/.well-known/oauth-protected-resource/other"
            )
            .unwrap()
            .status,
            204
        );
        let mcp = r.covering("gw", "/mcp/tools").unwrap();
        assert_eq!(
            mcp.metadata_url,
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert!(mcp.audience_matches(&["HTTPS://MCP.example.com:443/mcp".to_string()]));
        assert!(!mcp.audience_matches(&["https://mcp.example.com/mcp2".to_string()]));
        assert!(!mcp.audience_matches(&["https://evil.example/mcp".to_string()]));
        assert!(r.covering("gw", "/elsewhere").is_none());
        let clash = resources(serde_json::json!([
            {"resource": "https://a.example/mcp", "match": {"prefix": "/a"}, "authorization_servers": ["https://idp"]},
            {"resource": "https://b.example/mcp", "match": {"prefix": "/b"}, "authorization_servers": ["https://idp"]}
        ]));
        assert!(clash.is_err());
    }

    /// Two MCP servers on one gateway, each on its own host at `/mcp`: each host gets its own
    /// document (root form included), challenge and audience; no entry leaks onto another host.
    #[test]
    fn entries_limited_to_hosts() {
        let entry = |host: &str| {
            serde_json::json!({"resource": format!("https://{host}/mcp"),
                "match": {"prefix": "/mcp", "hosts": [host]},
                "authorization_servers": ["https://idp.example.com"]})
        };
        let r = resources(serde_json::json!([
            entry("a.example.com"),
            entry("b.example.com")
        ]))
        .unwrap();
        let document = |host: &str, path: &str| {
            r.metadata("GET", host, path).map(|doc| {
                let body: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
                body["resource"].as_str().unwrap_or_default().to_string()
            })
        };
        for host in ["a.example.com", "b.example.com"] {
            let want = Some(format!("https://{host}/mcp"));
            assert_eq!(
                document(host, "/.well-known/oauth-protected-resource/mcp"),
                want
            );
            assert_eq!(
                document(host, "/.well-known/oauth-protected-resource"),
                want
            );
            assert_eq!(
                r.covering(host, "/mcp").map(|e| e.resource.as_str()),
                want.as_deref()
            );
        }
        assert_eq!(
            document("c.example.com", "/.well-known/oauth-protected-resource/mcp"),
            None
        );
        assert!(r.covering("c.example.com", "/mcp").is_none());

        // A host-limited entry and one on every host may not share a document path, nor may
        // two entries listing the same host.
        let every_host = serde_json::json!({"resource": "https://c.example.com/mcp",
            "match": {"prefix": "/mcp"}, "authorization_servers": ["https://idp.example.com"]});
        let err = resources(serde_json::json!([entry("a.example.com"), every_host])).unwrap_err();
        assert_eq!(err.path, "protected_resources[1]");
        assert!(resources(serde_json::json!([
            entry("a.example.com"),
            entry("A.example.com")
        ]))
        .is_err());
        let err = resources(serde_json::json!([{"resource": "https://a/mcp",
            "match": {"prefix": "/mcp", "hosts": ["a b"]},
            "authorization_servers": ["https://idp"]}]))
        .unwrap_err();
        assert_eq!(err.path, "protected_resources[0].match.hosts[0]");
    }
}
