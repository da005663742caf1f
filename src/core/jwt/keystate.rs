//! Per-provider signing keys in one VM and the schedule for fetching them: refresh every
//! `cache_duration_s`, one early refetch for an unknown `kid` (at most once per 30 s across the
//! gateway), retries with backoff after a failure, and never replacing good keys with nothing.
//! The shell shares fetched key sets between VMs through Envoy shared data.

use std::rc::Rc;

use crate::core::jwt::jwks::KeySet;
use crate::core::jwt::provider::{JwksSource, Provider, RemoteJwks};

/// An unknown `kid` triggers at most one refetch per provider in this window.
pub const FORCED_REFETCH_INTERVAL_MS: u64 = 30_000;
const FIRST_RETRY_MS: u64 = 1_000;
const MAX_RETRY_MS: u64 = 60_000;
/// How long a VM owns a fetch beyond its timeout before another VM may try.
const LEASE_SLACK_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchReason {
    Initial,
    Refresh,
    UnknownKid,
    Retry,
}

#[derive(Debug, Default)]
pub struct ProviderKeys {
    pub keys: Option<Rc<KeySet>>,
    /// Bumped whenever requests waiting for these keys should decide again.
    pub generation: u64,
    pub refresh: Option<RefreshState>,
    /// With discovery: what the provider's discovery document says (kept when a fetch fails).
    pub discovered: Option<crate::core::jwt::discovery::Discovered>,
}

#[derive(Debug, Default)]
pub struct RefreshState {
    pub fetched_at_ms: Option<u64>,
    /// Shared-data version of the key set installed here, to notice fetches by other VMs.
    pub installed_version: Option<u32>,
    pub in_flight: bool,
    pub failures: u32,
    pub next_attempt_ms: u64,
    pub refetch_wanted: bool,
    pub last_forced_ms: Option<u64>,
}

impl ProviderKeys {
    pub fn for_provider(provider: &Provider) -> Self {
        match &provider.jwks {
            JwksSource::Local(keys) => ProviderKeys {
                keys: Some(Rc::new(keys.clone())),
                generation: 0,
                refresh: None,
                discovered: None,
            },
            JwksSource::Remote(_) => ProviderKeys {
                keys: None,
                generation: 0,
                refresh: Some(RefreshState::default()),
                discovered: None,
            },
        }
    }

    /// Whether a request with an unknown `kid` may wait for a refetch rather than fail now.
    pub fn refetch_possible(&self, now_ms: u64) -> bool {
        match &self.refresh {
            None => false,
            Some(r) => r
                .last_forced_ms
                .is_none_or(|t| now_ms >= t + FORCED_REFETCH_INTERVAL_MS),
        }
    }

    pub fn want_refetch(&mut self) {
        if let Some(r) = &mut self.refresh {
            r.refetch_wanted = true;
        }
    }

    /// What fetch, if any, this VM should try to start now.
    pub fn fetch_due(&self, now_ms: u64, remote: &RemoteJwks) -> Option<FetchReason> {
        let r = self.refresh.as_ref()?;
        if r.in_flight || now_ms < r.next_attempt_ms {
            return None;
        }
        if r.failures > 0 {
            return Some(FetchReason::Retry);
        }
        let Some(fetched_at) = r.fetched_at_ms.filter(|_| self.keys.is_some()) else {
            return Some(FetchReason::Initial);
        };
        if now_ms >= fetched_at + remote.cache_duration_s * 1000 {
            return Some(FetchReason::Refresh);
        }
        if r.refetch_wanted {
            return Some(FetchReason::UnknownKid);
        }
        None
    }

    /// Installs a key set fetched by this or another VM. An empty set never replaces keys.
    pub fn install(&mut self, keys: KeySet, fetched_at_ms: u64, version: Option<u32>) -> bool {
        let Some(r) = &mut self.refresh else {
            return false;
        };
        r.installed_version = version;
        if keys.is_empty() {
            return false;
        }
        r.fetched_at_ms = Some(fetched_at_ms);
        r.failures = 0;
        r.next_attempt_ms = 0;
        r.refetch_wanted = false;
        self.keys = Some(Rc::new(keys));
        self.generation += 1;
        true
    }

    /// A fetch failed or returned nothing usable: keep the keys, retry with backoff.
    pub fn fetch_failed(&mut self, now_ms: u64, remote: &RemoteJwks) -> u64 {
        let Some(r) = &mut self.refresh else { return 0 };
        r.in_flight = false;
        r.failures = r.failures.saturating_add(1);
        let cap = MAX_RETRY_MS
            .min(remote.cache_duration_s.saturating_mul(1000))
            .max(FIRST_RETRY_MS);
        let delay = FIRST_RETRY_MS
            .saturating_mul(1 << (r.failures - 1).min(16))
            .min(cap);
        r.next_attempt_ms = now_ms + delay;
        // Waiting requests must not hang on a fetch that failed.
        r.refetch_wanted = false;
        self.generation += 1;
        r.next_attempt_ms
    }

    /// Another VM (or this one) forced a refetch recently: unknown kids fail without waiting.
    pub fn refetch_refused(&mut self, last_forced_ms: u64) {
        if let Some(r) = &mut self.refresh {
            r.refetch_wanted = false;
            r.last_forced_ms = Some(last_forced_ms);
            self.generation += 1;
        }
    }

    pub fn fetch_started(&mut self, reason: FetchReason, now_ms: u64) {
        if let Some(r) = &mut self.refresh {
            r.in_flight = true;
            if reason == FetchReason::UnknownKid {
                r.last_forced_ms = Some(now_ms);
            }
        }
    }

    pub fn fetch_finished(&mut self) {
        if let Some(r) = &mut self.refresh {
            r.in_flight = false;
        }
    }
}

/// How long a fetch lease lasts: the fetch's own timeout plus slack.
pub fn lease_until(now_ms: u64, remote: &RemoteJwks) -> u64 {
    now_ms + remote.timeout_ms + LEASE_SLACK_MS
}

/// Shared-data encoding of a fetched key set: `<fetched_at_ms>\n<jwks json>`.
pub fn encode_shared_jwks(fetched_at_ms: u64, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{fetched_at_ms}\n").into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn decode_shared_jwks(value: &[u8]) -> Option<(u64, &[u8])> {
    let newline = value.iter().position(|b| *b == b'\n')?;
    let fetched_at = std::str::from_utf8(&value[..newline]).ok()?.parse().ok()?;
    Some((fetched_at, &value[newline + 1..]))
}

/// Shared-data encoding of a millisecond timestamp (leases, last forced refetch).
pub fn encode_ms(ms: u64) -> Vec<u8> {
    ms.to_string().into_bytes()
}

pub fn decode_ms(value: &[u8]) -> u64 {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote() -> RemoteJwks {
        RemoteJwks {
            cluster: "idp".into(),
            authority: "idp".into(),
            path: "/jwks".into(),
            timeout_ms: 1000,
            cache_duration_s: 600,
            discovery: None,
        }
    }

    fn remote_keys() -> ProviderKeys {
        ProviderKeys {
            keys: None,
            generation: 0,
            refresh: Some(RefreshState::default()),
            discovered: None,
        }
    }

    fn one_key() -> KeySet {
        KeySet::parse(br#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0MTI"}]}"#)
            .unwrap()
    }

    #[test]
    fn schedule_initial_then_refresh_after_cache_duration() {
        let mut keys = remote_keys();
        assert_eq!(keys.fetch_due(0, &remote()), Some(FetchReason::Initial));
        keys.fetch_started(FetchReason::Initial, 0);
        assert_eq!(keys.fetch_due(10, &remote()), None);
        keys.fetch_finished();
        assert!(keys.install(one_key(), 100, Some(1)));
        assert_eq!(keys.fetch_due(1_000, &remote()), None);
        assert_eq!(
            keys.fetch_due(600_100, &remote()),
            Some(FetchReason::Refresh)
        );
    }

    #[test]
    fn failures_keep_keys_and_back_off() {
        let mut keys = remote_keys();
        keys.install(one_key(), 0, None);
        assert_eq!(keys.fetch_failed(1_000, &remote()), 2_000);
        assert_eq!(keys.fetch_failed(2_000, &remote()), 4_000);
        assert_eq!(keys.fetch_failed(4_000, &remote()), 8_000);
        assert!(keys.keys.is_some());
        assert_eq!(keys.fetch_due(7_999, &remote()), None);
        assert_eq!(keys.fetch_due(8_000, &remote()), Some(FetchReason::Retry));
        assert!(
            !keys.install(KeySet::default(), 9_000, None),
            "empty set must not replace keys"
        );
        assert!(keys.keys.is_some());
    }

    #[test]
    fn unknown_kid_refetch_at_most_every_30s() {
        let mut keys = remote_keys();
        keys.install(one_key(), 0, None);
        assert!(keys.refetch_possible(1_000));
        keys.want_refetch();
        assert_eq!(
            keys.fetch_due(1_000, &remote()),
            Some(FetchReason::UnknownKid)
        );
        keys.fetch_started(FetchReason::UnknownKid, 1_000);
        assert!(!keys.refetch_possible(30_999));
        assert!(keys.refetch_possible(31_000));
    }

    #[test]
    fn shared_encoding_round_trips() {
        let encoded = encode_shared_jwks(42, b"{\"keys\":[]}");
        assert_eq!(
            decode_shared_jwks(&encoded),
            Some((42, &b"{\"keys\":[]}"[..]))
        );
        assert_eq!(decode_ms(&encode_ms(7)), 7);
        assert_eq!(decode_ms(b"junk"), 0);
    }
}
