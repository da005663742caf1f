//! Remote JWKS in one VM, coordinated across VMs through shared data: a fetched key set is
//! published for every VM, a lease lets one VM fetch at a time, and a shared timestamp limits
//! unknown-`kid` refetches to one per 30 s per provider across the gateway.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use proxy_wasm::types::LogLevel;
use sha2::{Digest, Sha256};

use crate::core::config::Config;
use crate::core::jwt::discovery;
use crate::core::jwt::jwks::KeySet;
use crate::core::jwt::keystate::{self, FetchReason, FORCED_REFETCH_INTERVAL_MS};
use crate::core::jwt::provider::{JwksSource, RemoteJwks};
use crate::core::metrics::Metric;
use crate::filter::host;
use crate::filter::vm::Vm;

/// JWKS bodies larger than this are refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// Shared-data keys of one remote provider.
struct SharedKeys {
    jwks: String,
    lease: String,
    forced: String,
    /// The provider's discovery document, as last fetched (discovery providers only).
    discovery: String,
    /// The shared-data version of the discovery document this VM last adopted.
    discovery_adopted: Cell<Option<u32>>,
}

/// What a call in flight fetches: a provider's discovery document (then its key set), or the
/// key set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Discovery,
    Jwks,
}

#[derive(Default)]
pub struct Fetcher {
    shared: HashMap<usize, SharedKeys>,
    in_flight: HashMap<u32, (usize, Stage)>,
}

impl Fetcher {
    pub fn new(config: &Config) -> Self {
        let mut shared = HashMap::new();
        for (index, provider) in config.providers.iter().enumerate() {
            if let JwksSource::Remote(remote) = &provider.jwks {
                // The source is part of the key, so a changed config never adopts stale keys.
                let source = format!("{}|{}|{}", remote.cluster, remote.authority, remote.path);
                let tag = hex::encode(&Sha256::digest(source.as_bytes())[..6]);
                let base = format!("authgate.v1.{}.{tag}", provider.name);
                shared.insert(
                    index,
                    SharedKeys {
                        jwks: format!("{base}.jwks"),
                        lease: format!("{base}.lease"),
                        forced: format!("{base}.forced"),
                        discovery: format!("{base}.discovery"),
                        discovery_adopted: Cell::new(None),
                    },
                );
            }
        }
        Fetcher {
            shared,
            in_flight: HashMap::new(),
        }
    }

    pub fn tick(&mut self, vm: &Vm) {
        let now_ms = host::now_ms();
        for (index, provider) in vm.config.providers.iter().enumerate() {
            let (JwksSource::Remote(remote), Some(keys)) =
                (&provider.jwks, self.shared.get(&index))
            else {
                continue;
            };
            adopt_shared(vm, index, keys);
            if let Some(token) = start_fetch_if_due(vm, index, remote, keys, now_ms) {
                let stage = if remote.discovery.is_some() {
                    Stage::Discovery
                } else {
                    Stage::Jwks
                };
                self.in_flight.insert(token, (index, stage));
            }
        }
        if vm.has_waiters() {
            vm.wake_waiters();
        }
    }

    pub fn on_response(&mut self, vm: &Vm, token: u32, body_size: usize) {
        let Some((index, stage)) = self.in_flight.remove(&token) else {
            return;
        };
        let (Some(provider), Some(keys)) =
            (vm.config.providers.get(index), self.shared.get(&index))
        else {
            return;
        };
        let JwksSource::Remote(remote) = &provider.jwks else {
            return;
        };
        let now_ms = host::now_ms();
        let (status, body) = host::callout_response(body_size, MAX_JWKS_BYTES);
        if stage == Stage::Discovery {
            // The document first, then the key set it names, under the same lease.
            let fetched = match (status, body.as_deref()) {
                (200, Some(body)) => {
                    discovery::parse(&provider.issuer, body).map(|found| (found, body.to_vec()))
                }
                (0, _) => Err("no response".to_string()),
                (status, _) => Err(format!("HTTP {status}")),
            };
            let dispatched = fetched.and_then(|(found, body)| {
                host::shared_set(&keys.discovery, &body, None);
                let timeout = Duration::from_millis(remote.timeout_ms);
                let token =
                    host::dispatch_get(&remote.cluster, &found.jwks.0, &found.jwks.1, timeout);
                if let Ok(mut state) = vm.state.try_borrow_mut() {
                    state.keys[index].discovered = Some(found);
                }
                token.ok_or_else(|| format!("cannot call cluster {:?}", remote.cluster))
            });
            match dispatched {
                Ok(token) => {
                    self.in_flight.insert(token, (index, Stage::Jwks));
                }
                Err(reason) => fetch_failed(
                    vm,
                    index,
                    remote,
                    keys,
                    now_ms,
                    &format!("discovery: {reason}"),
                ),
            }
            return;
        }
        match parse_fetched(status, body.as_deref()) {
            Ok((key_set, body)) => {
                let skipped = key_set.skipped.join("; ");
                let count = key_set.keys.len();
                host::shared_set(
                    &keys.jwks,
                    &keystate::encode_shared_jwks(now_ms, body),
                    None,
                );
                let (_, version) = host::shared_get(&keys.jwks);
                install(vm, index, key_set, now_ms, version);
                host::shared_set(&keys.lease, &keystate::encode_ms(0), None);
                vm.count(Metric::JwksFetchSuccess);
                let note = if skipped.is_empty() {
                    String::new()
                } else {
                    format!(" (skipped {skipped})")
                };
                host::log(
                    LogLevel::Info,
                    &format!(
                        "authgate: fetched {count} keys for provider {}{note}",
                        provider.name
                    ),
                );
            }
            Err(reason) => fetch_failed(vm, index, remote, keys, now_ms, &reason),
        }
        vm.wake_waiters();
    }
}

/// A fetch (of the discovery document or the key set) failed: keep what was known, retry later.
fn fetch_failed(
    vm: &Vm,
    index: usize,
    remote: &RemoteJwks,
    keys: &SharedKeys,
    now_ms: u64,
    reason: &str,
) {
    let retry_at = match vm.state.try_borrow_mut() {
        Ok(mut state) => state.keys[index].fetch_failed(now_ms, remote),
        Err(_) => now_ms,
    };
    // Hold the lease until the retry so other VMs back off too.
    host::shared_set(&keys.lease, &keystate::encode_ms(retry_at), None);
    vm.count(Metric::JwksFetchFailed);
    let name = vm
        .config
        .providers
        .get(index)
        .map_or("?", |p| p.name.as_str());
    host::log(
        LogLevel::Warn,
        &format!(
            "authgate: JWKS fetch for provider {name} failed: {reason}; keeping previous keys, retry in {} ms",
            retry_at.saturating_sub(now_ms)
        ),
    );
    vm.wake_waiters();
}

fn parse_fetched(status: u16, body: Option<&[u8]>) -> Result<(KeySet, &[u8]), String> {
    if status != 200 {
        return Err(if status == 0 {
            "no response".to_string()
        } else {
            format!("HTTP {status}")
        });
    }
    let body = body.ok_or_else(|| format!("body larger than {MAX_JWKS_BYTES} bytes"))?;
    let key_set = KeySet::parse(body).map_err(|e| format!("response {e}"))?;
    if key_set.is_empty() {
        return Err("no usable signing keys in the response".to_string());
    }
    Ok((key_set, body))
}

/// Installs keys (and a discovery document) another VM published, if they are newer than ours.
fn adopt_shared(vm: &Vm, index: usize, keys: &SharedKeys) {
    adopt_discovery(vm, index, keys);
    let (Some(value), Some(version)) = host::shared_get(&keys.jwks) else {
        return;
    };
    let installed = vm
        .state
        .try_borrow()
        .ok()
        .and_then(|s| s.keys[index].refresh.as_ref().map(|r| r.installed_version));
    if installed == Some(Some(version)) {
        return;
    }
    let Some((fetched_at, body)) = keystate::decode_shared_jwks(&value) else {
        return;
    };
    if let Ok(key_set) = KeySet::parse(body) {
        install(vm, index, key_set, fetched_at, Some(version));
    }
}

/// Adopts the discovery document another VM fetched whenever it changed: the lease lets one VM
/// fetch at a time, so the others would otherwise keep their first document (and the IdP's old
/// endpoints) for good.
fn adopt_discovery(vm: &Vm, index: usize, keys: &SharedKeys) {
    let Some(issuer) = vm.config.providers.get(index).map(|p| p.issuer.as_str()) else {
        return;
    };
    let (Some(body), version) = host::shared_get(&keys.discovery) else {
        return;
    };
    if version.is_some() && version == keys.discovery_adopted.get() {
        return;
    }
    if let Ok(found) = discovery::parse(issuer, &body) {
        if let Ok(mut state) = vm.state.try_borrow_mut() {
            state.keys[index].discovered = Some(found);
            keys.discovery_adopted.set(version);
        }
    }
}

fn install(vm: &Vm, index: usize, key_set: KeySet, fetched_at: u64, version: Option<u32>) {
    let Ok(mut state) = vm.state.try_borrow_mut() else {
        return;
    };
    let kids: Vec<String> = key_set.keys.iter().filter_map(|k| k.kid.clone()).collect();
    state.keys[index].fetch_finished();
    if state.keys[index].install(key_set, fetched_at, version) {
        state
            .tokens
            .forget_unlisted_kids(index, |kid| kids.iter().any(|k| k == kid));
    }
}

fn start_fetch_if_due(
    vm: &Vm,
    index: usize,
    remote: &RemoteJwks,
    keys: &SharedKeys,
    now_ms: u64,
) -> Option<u32> {
    let reason = vm.state.try_borrow().ok()?.keys[index].fetch_due(now_ms, remote)?;
    let (lease, version) = host::shared_get(&keys.lease);
    if lease.is_some_and(|l| keystate::decode_ms(&l) > now_ms) {
        return None; // another VM is fetching, or backing off; its result arrives via shared data
    }
    if reason == FetchReason::UnknownKid && !take_forced_slot(vm, index, keys, now_ms) {
        return None;
    }
    if !host::shared_set(
        &keys.lease,
        &keystate::encode_ms(keystate::lease_until(now_ms, remote)),
        version,
    ) {
        return None;
    }
    let timeout = Duration::from_millis(remote.timeout_ms);
    // A discovery provider fetches its document first; the key set follows from it.
    let (authority, path) = match &remote.discovery {
        Some((authority, path)) => (authority.as_str(), path.as_str()),
        None => (remote.authority.as_str(), remote.path.as_str()),
    };
    let token = host::dispatch_get(&remote.cluster, authority, path, timeout);
    let mut state = vm.state.try_borrow_mut().ok()?;
    match token {
        Some(token) => {
            state.keys[index].fetch_started(reason, now_ms);
            Some(token)
        }
        None => {
            state.keys[index].fetch_failed(now_ms, remote);
            drop(state);
            vm.count(Metric::JwksFetchFailed);
            host::log(
                LogLevel::Error,
                &format!(
                    "authgate: cannot call cluster {:?} for JWKS (is the cluster defined?)",
                    remote.cluster
                ),
            );
            None
        }
    }
}

/// At most one unknown-`kid` refetch per provider per 30 s across all VMs.
fn take_forced_slot(vm: &Vm, index: usize, keys: &SharedKeys, now_ms: u64) -> bool {
    let (last, version) = host::shared_get(&keys.forced);
    let last_ms = last.as_deref().map_or(0, keystate::decode_ms);
    let allowed = last.is_none() || now_ms >= last_ms + FORCED_REFETCH_INTERVAL_MS;
    if allowed && host::shared_set(&keys.forced, &keystate::encode_ms(now_ms), version) {
        return true;
    }
    if let Ok(mut state) = vm.state.try_borrow_mut() {
        state.keys[index].refetch_refused(if allowed { now_ms } else { last_ms });
    }
    false
}
