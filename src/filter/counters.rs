//! authgate's stats as Envoy counters, counted in the VM and added to Envoy on the root context's
//! tick (every 100 ms): a host call per increment cost about as much as the whole decision for a
//! cached token, and a scrape never needs sub-tick freshness.

use std::cell::RefCell;

use crate::core::metrics::{Metric, MetricSink};
use crate::filter::host;

pub struct Counters {
    /// Envoy counter ids, indexed like `Metric::ALL`.
    ids: Vec<Option<u32>>,
    /// Increments not yet added to Envoy, indexed the same way.
    pending: RefCell<Vec<u64>>,
}

impl Counters {
    pub fn define() -> Self {
        Counters {
            ids: Metric::ALL
                .iter()
                .map(|m| host::define_counter(m.name()))
                .collect(),
            pending: RefCell::new(vec![0; Metric::ALL.len()]),
        }
    }

    /// Adds what was counted since the last flush to Envoy's counters.
    pub fn flush(&self) {
        let Ok(mut pending) = self.pending.try_borrow_mut() else {
            return;
        };
        for (count, id) in pending.iter_mut().zip(&self.ids) {
            if let (true, Some(id)) = (*count > 0, id) {
                host::increment_by(*id, *count);
            }
            *count = 0;
        }
    }
}

impl MetricSink for &Counters {
    fn increment(&mut self, metric: Metric) {
        if let Ok(mut pending) = self.pending.try_borrow_mut() {
            if let Some(count) = pending.get_mut(metric.index()) {
                *count += 1;
            }
        }
    }
}

/// What a scrape shows of the caches and keys: sizes as gauges summed over the workers (each
/// adds its own change), evictions to make room as counters, and each remote provider's last
/// successful key fetch (Unix seconds; every worker reports the shared fetch). Reported on the
/// tick, and only what changed.
pub struct CacheStats {
    token_size: Option<u32>,
    decision_size: Option<u32>,
    token_evictions: Option<u32>,
    decision_evictions: Option<u32>,
    /// Per provider; None for local key sets.
    fetched_at: Vec<Option<u32>>,
    /// What was last reported: sizes, evictions, then fetch times.
    last: RefCell<Vec<u64>>,
}

/// One tick's figures.
pub struct CacheFigures {
    pub token_size: u64,
    pub decision_size: u64,
    pub token_evictions: u64,
    pub decision_evictions: u64,
    pub fetched_at_ms: Vec<Option<u64>>,
}

impl CacheStats {
    /// `remote_providers`: each provider's name if its keys are fetched, in config order.
    pub fn define(remote_providers: &[Option<&str>]) -> Self {
        CacheStats {
            token_size: host::define_gauge("authgate.jwt_cache_size"),
            decision_size: host::define_gauge("authgate.authz_cache_size"),
            token_evictions: host::define_counter("authgate.jwt_cache_evictions"),
            decision_evictions: host::define_counter("authgate.authz_cache_evictions"),
            fetched_at: remote_providers
                .iter()
                .map(|name| {
                    name.and_then(|n| {
                        host::define_gauge(&format!("authgate.jwks_fetched_at_s.{n}"))
                    })
                })
                .collect(),
            last: RefCell::new(vec![0; 4 + remote_providers.len()]),
        }
    }

    pub fn report(&self, figures: &CacheFigures) {
        let Ok(mut last) = self.last.try_borrow_mut() else {
            return;
        };
        let now = [
            figures.token_size,
            figures.decision_size,
            figures.token_evictions,
            figures.decision_evictions,
        ];
        let ids = [
            self.token_size,
            self.decision_size,
            self.token_evictions,
            self.decision_evictions,
        ];
        for ((value, id), previous) in now.iter().zip(ids).zip(last.iter_mut()) {
            if let (true, Some(id)) = (*value != *previous, id) {
                let delta = i64::try_from(*value).unwrap_or(i64::MAX)
                    - i64::try_from(*previous).unwrap_or(i64::MAX);
                host::add_to_metric(id, delta);
                *previous = *value;
            }
        }
        for ((fetched, id), previous) in figures
            .fetched_at_ms
            .iter()
            .zip(&self.fetched_at)
            .zip(last.iter_mut().skip(4))
        {
            if let (Some(ms), Some(id)) = (fetched, id) {
                let seconds = ms / 1000;
                if seconds != *previous {
                    host::record(*id, seconds);
                    *previous = seconds;
                }
            }
        }
    }
}
