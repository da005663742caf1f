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
