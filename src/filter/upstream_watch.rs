//! `enterprise.cache.evict_on_upstream`: requests let through on an enterprise decision are
//! watched until their response headers; an evicting status drops every cached decision of the
//! credential in this VM at once, and in the other workers through shared data.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::core::authz::evictions::{self, Applied, Eviction};
use crate::core::jwt::token_cache::TokenHash;
use crate::filter::host;

#[derive(Default)]
pub struct UpstreamWatch {
    /// In-flight requests (by context id) and the credential that let each through.
    watched: RefCell<HashMap<u32, TokenHash>>,
    applied: RefCell<Applied>,
}

impl UpstreamWatch {
    pub fn watch(&self, context_id: u32, credential: TokenHash) {
        if let Ok(mut watched) = self.watched.try_borrow_mut() {
            watched.insert(context_id, credential);
        }
    }

    /// The request is done (answered, or gone): the credential it was let through with.
    pub fn take(&self, context_id: u32) -> Option<TokenHash> {
        self.watched.try_borrow_mut().ok()?.remove(&context_id)
    }

    /// Tells the other workers (this one evicts at once itself).
    pub fn publish(&self, credential: TokenHash, now_ms: u64) {
        let eviction = Eviction {
            credential,
            at_ms: now_ms,
        };
        // Compare-and-swap: two workers publishing at once must not lose a record.
        for _ in 0..4 {
            let (current, cas) = host::shared_get(evictions::SHARED_KEY);
            let next = evictions::append(current.as_deref().unwrap_or(&[]), eviction);
            if host::shared_set(evictions::SHARED_KEY, &next, cas) {
                break;
            }
        }
        if let Ok(mut applied) = self.applied.try_borrow_mut() {
            applied.take_new(&[eviction]);
        }
    }

    /// Credentials other workers published since the last look.
    pub fn published(&self) -> Vec<TokenHash> {
        let (current, _) = host::shared_get(evictions::SHARED_KEY);
        let Some(current) = current else {
            return Vec::new();
        };
        match self.applied.try_borrow_mut() {
            Ok(mut applied) => applied.take_new(&evictions::decode(&current)),
            Err(_) => Vec::new(),
        }
    }
}
