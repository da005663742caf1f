//! The authorization service's answers per VM, keyed by everything the service was told
//! (credential hash, method, host, normalised path, and the client's address when it was sent).
//! Bounded and LRU. Entries outlive their freshness so `allow_stale` can serve an expired allow
//! when the service is down; only a fresh entry answers a request otherwise.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::rc::Rc;

use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::core::jwt::token_cache::TokenHash;
use crate::core::policy::mcp::Call;

pub type DecisionKey = [u8; 32];

/// One request's key. The host is compared case-insensitively, the path without its query;
/// `client_ip` is given when the service was told it (an allow for one address is not one for
/// another).
pub fn key(
    credential: &TokenHash,
    method: &str,
    host: &str,
    path: &str,
    client_ip: Option<IpAddr>,
    mcp: Option<&Call>,
) -> DecisionKey {
    let mut hasher = Sha256::new();
    hasher.update(credential);
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(host.to_ascii_lowercase().as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hasher.update([0]);
    if let Some(ip) = client_ip {
        hasher.update(ip.to_string().as_bytes());
    }
    hasher.update([0]);
    // Length-prefixed: method and name are client text, and may hold any byte.
    if let Some(call) = mcp {
        for part in [Some(call.method.as_str()), call.name.as_deref()] {
            let part = part.unwrap_or("");
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.update([u8::from(call.name.is_some())]);
    }
    hasher.finalize().into()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// `add`: identity and service headers together; `names`: the service's header names, which
    /// are removed from the incoming request first.
    Allow {
        add: Rc<Vec<(String, String)>>,
        names: Rc<Vec<String>>,
    },
    Deny {
        reason: Rc<str>,
    },
    Expired {
        reauth_url: Option<Rc<str>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Fresh(Decided),
    /// Past its TTL (by `stale_ms`): usable only as `allow_stale`'s fallback.
    Stale {
        decided: Decided,
        stale_ms: u64,
    },
    Miss,
}

struct Entry {
    /// The credential's hash: every decision about it can be dropped at once.
    credential: TokenHash,
    decided: Decided,
    fresh_until_ms: u64,
}

pub struct DecisionCache {
    entries: LruCache<DecisionKey, Entry>,
    evictions: u64,
}

impl DecisionCache {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        DecisionCache {
            entries: LruCache::new(capacity),
            evictions: 0,
        }
    }

    pub fn get(&mut self, key: &DecisionKey, now_ms: u64) -> Lookup {
        match self.entries.get(key) {
            Some(entry) if now_ms < entry.fresh_until_ms => Lookup::Fresh(entry.decided.clone()),
            Some(entry) => Lookup::Stale {
                decided: entry.decided.clone(),
                stale_ms: now_ms - entry.fresh_until_ms,
            },
            None => Lookup::Miss,
        }
    }

    pub fn insert(
        &mut self,
        key: DecisionKey,
        credential: TokenHash,
        decided: Decided,
        ttl_ms: u64,
        now_ms: u64,
    ) {
        let entry = Entry {
            credential,
            decided,
            fresh_until_ms: now_ms.saturating_add(ttl_ms),
        };
        if let Some((pushed_out, _)) = self.entries.push(key, entry) {
            if pushed_out != key {
                self.evictions += 1;
            }
        }
    }

    /// Drops every decision about `credential` (the upstream stopped accepting it); returns how
    /// many. A scan: rare, and bounded by `max_entries`.
    pub fn evict_credential(&mut self, credential: &TokenHash) -> usize {
        let keys: Vec<DecisionKey> = self
            .entries
            .iter()
            .filter(|(_, entry)| entry.credential == *credential)
            .map(|(key, _)| *key)
            .collect();
        for key in &keys {
            self.entries.pop(key);
        }
        keys.len()
    }

    /// Entries pushed out to make room, since the cache was made (for stats).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_stale_and_bounded() {
        let mut cache = DecisionCache::new(2);
        let deny = Decided::Deny {
            reason: Rc::from("no"),
        };
        let a = key(&[1; 32], "GET", "API.example.com", "/a", None, None);
        assert_eq!(a, key(&[1; 32], "GET", "api.example.com", "/a", None, None));
        assert_ne!(a, key(&[1; 32], "GET", "api.example.com", "/b", None, None));
        assert_ne!(a, key(&[2; 32], "GET", "api.example.com", "/a", None, None));
        let ip = |s: &str| s.parse().ok();
        let from = key(
            &[1; 32],
            "GET",
            "api.example.com",
            "/a",
            ip("10.0.0.1"),
            None,
        );
        assert_ne!(a, from);
        assert_ne!(
            from,
            key(
                &[1; 32],
                "GET",
                "api.example.com",
                "/a",
                ip("10.0.0.2"),
                None
            )
        );
        // Each MCP call is its own question; the parts cannot run into each other.
        let call = |method: &str, name: Option<&str>| Call {
            method: method.to_string(),
            name: name.map(str::to_string),
        };
        let mcp = |c: &Call| key(&[1; 32], "POST", "h", "/mcp", None, Some(c));
        let deploy = mcp(&call("tools/call", Some("deploy")));
        assert_ne!(deploy, mcp(&call("tools/call", Some("deploy_prod"))));
        assert_ne!(deploy, key(&[1; 32], "POST", "h", "/mcp", None, None));
        assert_ne!(mcp(&call("a", Some("bc"))), mcp(&call("ab", Some("c"))));
        assert_ne!(mcp(&call("a", None)), mcp(&call("a", Some(""))));
        cache.insert(a, [1; 32], deny.clone(), 1_000, 0);
        assert_eq!(cache.get(&a, 999), Lookup::Fresh(deny.clone()));
        assert_eq!(
            cache.get(&a, 1_000),
            Lookup::Stale {
                decided: deny,
                stale_ms: 0
            }
        );
        cache.insert(
            [2; 32],
            [2; 32],
            Decided::Expired { reauth_url: None },
            1,
            0,
        );
        cache.insert(
            [3; 32],
            [2; 32],
            Decided::Expired { reauth_url: None },
            1,
            0,
        );
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&a, 0), Lookup::Miss);
        assert_eq!(cache.evictions(), 1);
        assert_eq!(cache.evict_credential(&[2; 32]), 2);
        assert!(cache.is_empty());
    }
}
