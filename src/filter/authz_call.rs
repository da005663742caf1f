//! Authorization calls in flight in one VM, single-flight per decision key: the first request
//! with a key makes the call, later ones with the same key wait for its answer.
//!
//! The answer is delivered to whichever context made the call. If that was a request that went
//! away before the answer came (client hung up), Envoy drops the call with it; the root context's
//! tick then calls again for the requests still waiting. Every call has a deadline so nothing
//! waits forever.

use std::collections::HashMap;

use crate::core::authz::decision_cache::DecisionKey;
use crate::core::engine::Pending;

/// Who receives the answer: a request's context, or the root context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Http(u32),
    Root,
}

pub struct Inflight {
    /// None once the owner went away: the call has to be made again.
    pub token: Option<u32>,
    pub owner: Owner,
    pub started_ms: u64,
    pub deadline_ms: u64,
    pub body: Vec<u8>,
    pub request_id: Option<String>,
    /// The request that made the call; its credential's expiry bounds the cached answer.
    pub leader: Pending,
    pub waiters: Vec<(u32, Pending)>,
}

#[derive(Default)]
pub struct AuthzCalls {
    inflight: HashMap<DecisionKey, Inflight>,
    by_token: HashMap<u32, DecisionKey>,
}

impl AuthzCalls {
    /// Adds a waiter to the call in flight for `key`; false when there is none.
    pub fn join(&mut self, key: &DecisionKey, context_id: u32, pending: Pending) -> bool {
        match self.inflight.get_mut(key) {
            Some(call) => {
                call.waiters.push((context_id, pending));
                true
            }
            None => false,
        }
    }

    pub fn insert(&mut self, key: DecisionKey, call: Inflight) {
        if let Some(token) = call.token {
            self.by_token.insert(token, key);
        }
        self.inflight.insert(key, call);
    }

    /// The call answered by `token`, removed.
    pub fn take_by_token(&mut self, token: u32) -> Option<(DecisionKey, Inflight)> {
        let key = self.by_token.remove(&token)?;
        let call = self.inflight.remove(&key)?;
        Some((key, call))
    }

    /// A request went away: it waits no more; a call it owned will never be answered.
    pub fn forget(&mut self, context_id: u32) {
        for call in self.inflight.values_mut() {
            call.waiters.retain(|(id, _)| *id != context_id);
            if call.owner == Owner::Http(context_id) {
                if let Some(token) = call.token.take() {
                    self.by_token.remove(&token);
                }
            }
        }
        self.inflight
            .retain(|_, call| call.token.is_some() || !call.waiters.is_empty());
    }

    pub fn is_waiting(&self, context_id: u32) -> bool {
        self.inflight
            .values()
            .any(|call| call.waiters.iter().any(|(id, _)| *id == context_id))
    }

    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Requests waiting for an answer, over all calls.
    pub fn waiting(&self) -> usize {
        self.inflight.values().map(|call| call.waiters.len()).sum()
    }

    /// Calls past their deadline (removed), and the keys of orphaned calls to make again.
    pub fn sweep(&mut self, now_ms: u64) -> (Vec<(DecisionKey, Inflight)>, Vec<DecisionKey>) {
        let expired: Vec<DecisionKey> = self
            .inflight
            .iter()
            .filter(|(_, call)| now_ms >= call.deadline_ms)
            .map(|(key, _)| *key)
            .collect();
        let mut overdue = Vec::with_capacity(expired.len());
        for key in expired {
            if let Some(call) = self.inflight.remove(&key) {
                if let Some(token) = call.token {
                    self.by_token.remove(&token);
                }
                overdue.push((key, call));
            }
        }
        let orphaned = self
            .inflight
            .iter()
            .filter(|(_, call)| call.token.is_none())
            .map(|(key, _)| *key)
            .collect();
        (overdue, orphaned)
    }

    /// Records that an orphaned call was made again, from the root context.
    pub fn redispatched(&mut self, key: &DecisionKey, token: u32) {
        if let Some(call) = self.inflight.get_mut(key) {
            call.token = Some(token);
            call.owner = Owner::Root;
            self.by_token.insert(token, *key);
        }
    }

    pub fn body_of(&self, key: &DecisionKey) -> Option<(Vec<u8>, Option<String>)> {
        self.inflight
            .get(key)
            .map(|call| (call.body.clone(), call.request_id.clone()))
    }
}
