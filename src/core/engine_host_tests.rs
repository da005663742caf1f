//! Requests judged by their host go upstream with that host: `:authority` loses the port and
//! trailing dot the rules ignored, so Envoy routes them where the rule that judged them meant.

use serde_json::json;

use crate::core::config::Config;
use crate::core::engine::{decide, Context, Effects, State, Step};
use crate::core::metrics::Recorded;
use crate::core::policy::backoff::MemoryStore;
use crate::core::request::{borrow_pairs, Request};

fn config(rules: serde_json::Value) -> Config {
    let json = json!({"rules": rules, "api_keys": {"keys": []}});
    Config::parse(json.to_string().as_bytes()).unwrap()
}

/// The `:authority` the request goes upstream with, when authgate changes it; None when refused.
fn forwarded(config: &Config, authority: &str) -> Option<Option<String>> {
    let owned = [
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), "/status".to_string()),
        (":authority".to_string(), authority.to_string()),
    ];
    let pairs = borrow_pairs(&owned);
    let decision = decide(
        config,
        &mut State::new(config),
        &Request::new(&pairs),
        Context {
            now_ms: 1_900_000_000_000,
            may_wait: false,
            log: false,
        },
        Effects {
            metrics: &mut Recorded::default(),
            shared: &mut MemoryStore::default(),
            random: &mut crate::core::random::OsRandom,
        },
    );
    match decision.step {
        Step::Continue { rewrite, .. } => Some(rewrite.authority),
        _ => None,
    }
}

#[test]
fn a_host_judged_request_goes_upstream_with_that_host() {
    let host_rules = config(json!([
        {"match": {"prefix": "/", "hosts": ["public.example.com"]}, "public": true},
        {"match": {"prefix": "/"}, "requires_any": ["api_key"]}
    ]));
    assert_eq!(forwarded(&host_rules, "public.example.com"), Some(None));
    assert_eq!(forwarded(&host_rules, "Public.Example.com"), Some(None));
    for spelling in [
        "public.example.com.",
        "public.example.com:8080",
        "public.example.com.:443",
        "public.example.com..",
    ] {
        assert_eq!(
            forwarded(&host_rules, spelling),
            Some(Some(
                spelling
                    .split(':')
                    .next()
                    .unwrap()
                    .trim_end_matches('.')
                    .to_string()
            )),
            "{spelling}"
        );
    }
    assert_eq!(forwarded(&host_rules, "other.example.com:8080"), None);
    assert_eq!(
        forwarded(&host_rules, "[::1]:8080"),
        None,
        "not the public host: refused, whatever its spelling"
    );

    // Without host-limited rules the host decides nothing and is left alone.
    let no_hosts = config(json!([{"match": {"prefix": "/"}, "public": true}]));
    assert_eq!(forwarded(&no_hosts, "public.example.com:8080"), Some(None));
}
