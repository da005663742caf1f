//! The common setup: echo upstream + JWKS stub + Envoy with the filter, started together.

use std::time::Duration;

use serde_json::Value;

use crate::envoy::{Envoy, EnvoyConfig};
use crate::jwks_stub::JwksStub;
use crate::plugin::stat;
use crate::upstream::Upstream;

/// Fields drop in declaration order: Envoy first, then the servers it talks to.
pub struct Gateway {
    pub envoy: Envoy,
    pub upstream: Upstream,
    pub idp: JwksStub,
}

impl Gateway {
    /// Upstream + a JWKS stub serving `jwks` + Envoy (one worker) with `plugin` as configuration.
    pub fn start(plugin: &Value, jwks: Value) -> Gateway {
        Gateway::start_with(plugin, JwksStub::start(jwks), |c| c)
    }

    /// Same, with a stub made by the caller (e.g. [`JwksStub::start_down`]) and a chance to
    /// change the Envoy configuration (workers, extra clusters).
    pub fn start_with(
        plugin: &Value,
        idp: JwksStub,
        edit: impl FnOnce(EnvoyConfig) -> EnvoyConfig,
    ) -> Gateway {
        let upstream = Upstream::start();
        let config = edit(EnvoyConfig::new(plugin, upstream.port()).idp(idp.port()));
        let envoy = Envoy::start(&config).unwrap_or_else(|e| panic!("starting envoy: {e}"));
        Gateway {
            envoy,
            upstream,
            idp,
        }
    }

    pub fn url(&self, path: &str) -> String {
        self.envoy.url(path)
    }

    /// Waits (bounded, 10 s) until the filter has fetched the JWKS once (`jwks_fetch_success`
    /// >= 1): the filter fetches remote keys at start, so tests wait for that instead of sleeping.
    pub fn wait_jwks_fetched(&self) {
        if let Err(e) = self
            .envoy
            .wait_stat(stat::JWKS_FETCH_SUCCESS, 1, Duration::from_secs(10))
        {
            panic!(
                "the filter did not fetch the JWKS after start ({e}; the stub saw {} /jwks requests)",
                self.idp.requests()
            );
        }
    }
}
