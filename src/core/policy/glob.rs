//! Host patterns such as `*.example.com`: case-insensitive, port ignored, `*` matches any run
//! of characters (as in Envoy's virtual-host domains). Hand-written: path-glob crates treat `.`
//! and `/` specially and pull in far more than this needs.

use crate::core::syntax::host_of;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostGlob {
    pattern: Vec<u8>,
}

impl HostGlob {
    pub fn new(pattern: &str) -> Result<HostGlob, String> {
        let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
        if pattern.is_empty() {
            return Err("host pattern must not be empty".to_string());
        }
        if !pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.*:[]".contains(&b))
        {
            return Err(format!("{pattern:?} is not a host name pattern"));
        }
        Ok(HostGlob {
            pattern: pattern.into_bytes(),
        })
    }

    /// The pattern as configured (lower case, no trailing dot).
    pub fn pattern(&self) -> String {
        String::from_utf8_lossy(&self.pattern).into_owned()
    }

    /// Matches a `:authority`/`host` value; any `:port` suffix and trailing dot are ignored
    /// (`API.example.com.:443` is `api.example.com`).
    pub fn matches(&self, authority: &str) -> bool {
        self.matches_host(&host_of(authority))
    }

    /// Matches a host already in the form [`host_of`] gives.
    pub fn matches_host(&self, host: &str) -> bool {
        glob_match(&self.pattern, host.as_bytes())
    }
}

/// A name pattern such as `deploy_*` (MCP tool names): case-sensitive, `*` as for hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameGlob {
    pattern: Vec<u8>,
}

impl NameGlob {
    pub fn new(pattern: &str) -> Result<NameGlob, String> {
        if pattern.is_empty() || pattern.chars().any(char::is_control) {
            return Err(format!("{pattern:?} is not a name pattern"));
        }
        Ok(NameGlob {
            pattern: pattern.as_bytes().to_vec(),
        })
    }

    pub fn matches(&self, name: &str) -> bool {
        glob_match(&self.pattern, name.as_bytes())
    }
}

/// `*` matches one or more bytes, so `*.example.com` does not match `.example.com`.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // After the last star seen: where the pattern resumes, and where the text resumes.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if pattern.get(p) == Some(&b'*') {
            star = Some((p + 1, t + 1));
            p += 1;
            t += 1;
        } else if pattern.get(p) == Some(&text[t]) {
            p += 1;
            t += 1;
        } else if let Some((resume_p, resume_t)) = star {
            star = Some((resume_p, resume_t + 1));
            p = resume_p;
            t = resume_t + 1;
        } else {
            return false;
        }
    }
    p == pattern.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(p: &str) -> HostGlob {
        HostGlob::new(p).unwrap()
    }

    #[test]
    fn exact_host_ignores_case_and_port() {
        assert!(glob("api.example.com").matches("API.Example.com:8443"));
        assert!(!glob("api.example.com").matches("api.example.org"));
        assert!(!glob("api.example.com").matches("xapi.example.com"));
    }

    #[test]
    fn leading_star_needs_at_least_one_character() {
        let g = glob("*.example.com");
        assert!(g.matches("a.example.com"));
        assert!(g.matches("a.b.example.com:80"));
        assert!(!g.matches("example.com"));
        assert!(!g.matches(".example.com"));
        assert!(!g.matches("a.example.com.evil.org"));
    }

    #[test]
    fn trailing_and_inner_stars() {
        assert!(glob("api.*").matches("api.example.com"));
        assert!(!glob("api.*").matches("api."));
        assert!(glob("api-*.example.com").matches("api-eu.example.com"));
        assert!(!glob("api-*.example.com").matches("api-.example.com"));
        assert!(glob("*").matches("anything"));
    }

    #[test]
    fn trailing_dots_and_ports_do_not_defeat_a_glob() {
        assert!(glob("admin.corp.test").matches("admin.corp.test."));
        assert!(glob("admin.corp.test").matches("ADMIN.corp.test.:8443"));
        assert!(glob("*.corp.test").matches("a.corp.test..:80"));
        assert!(glob("admin.corp.test.").matches("admin.corp.test"));
    }

    #[test]
    fn ipv6_authority_keeps_brackets() {
        assert!(glob("[::1]").matches("[::1]:8080"));
    }

    #[test]
    fn rejects_bad_patterns() {
        assert!(HostGlob::new("").is_err());
        assert!(HostGlob::new("a/b").is_err());
    }
}
