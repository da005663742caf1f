//! Invalid plugin configurations are refused at load time: Envoy never serves a 200 with them,
//! and its log has a line naming authgate and the exact field path (DESIGN.md: "Config mistakes
//! … must be reported at load time with the exact field path").

use std::time::Duration;

use authgate_integration::plugin::{corp_config, local_provider, remote_provider};
use authgate_integration::{start_expecting_failure, EnvoyConfig, FixtureKey, Upstream};
use serde_json::{json, Value};

/// Starts Envoy with `config` (raw text) and checks the outcome.
fn assert_refused(config_text: &str, log_needles: &[&str]) {
    let upstream = Upstream::start();
    let envoy = EnvoyConfig::new(&json!({}), upstream.port())
        .idp(upstream.port())
        .raw_plugin_config(config_text);
    let outcome = start_expecting_failure(&envoy, Duration::from_secs(15));
    let tail: Vec<&str> = outcome
        .log
        .lines()
        .rev()
        .take(40)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    assert!(
        outcome.never_served_200(),
        "Envoy served a 200 with an invalid plugin configuration ({config_text});\nlog tail:\n{}",
        tail.join("\n")
    );
    // One error-level line that names authgate and the field path.
    let mut needles = vec!["][error][", "authgate"];
    needles.extend_from_slice(log_needles);
    assert!(
        !outcome.log_lines_with(&needles).is_empty(),
        "no log line contains all of {needles:?} (exited: {:?}, ready: {});\nlog tail:\n{}",
        outcome.exited,
        outcome.ready,
        tail.join("\n")
    );
}

fn with_provider_field(name: &str, value: Value) -> String {
    let mut config = corp_config(remote_provider(600));
    config["jwt_providers"]["corp"][name] = value;
    config.to_string()
}

#[test]
fn unknown_top_level_key() {
    let mut config = corp_config(remote_provider(600));
    let providers = config["jwt_providers"].take();
    config.as_object_mut().map(|o| o.remove("jwt_providers"));
    config["jwt_provider"] = providers;
    assert_refused(&config.to_string(), &["jwt_provider"]);
}

#[test]
fn unknown_key_inside_a_provider() {
    assert_refused(
        &with_provider_field("audience", json!(["gateway"])),
        &["jwt_providers.corp.audience"],
    );
}

#[test]
fn wrong_type() {
    assert_refused(
        &with_provider_field("clock_skew_s", json!("60")),
        &["jwt_providers.corp.clock_skew_s"],
    );
}

#[test]
fn missing_issuer() {
    let mut config = corp_config(local_provider(&[FixtureKey::Rsa1]));
    config["jwt_providers"]["corp"]
        .as_object_mut()
        .map(|o| o.remove("issuer"));
    assert_refused(&config.to_string(), &["jwt_providers.corp.issuer"]);
}

#[test]
fn provider_names_are_case_sensitive() {
    let mut config = corp_config(remote_provider(600));
    config["rules"][1]["requires_any"] = json!(["jwt:Corp"]);
    assert_refused(&config.to_string(), &["rules", "Corp"]);
}

#[test]
fn not_json_at_all() {
    assert_refused("{\"jwt_providers\": {", &[]);
}

#[test]
fn raw_api_key_instead_of_its_digest() {
    let mut config = corp_config(local_provider(&[FixtureKey::Rsa1]));
    config["api_keys"] = json!({"keys": [
        {"id": "ci", "sha256": "ek_live_51HxQ2eZvKYlo2C8xT4mN7pR", "principal": "svc:ci"}]});
    let text = config.to_string();
    assert_refused(&text, &["api_keys.keys[0].sha256", "64 hex"]);
}

#[test]
fn api_key_rule_without_keys_and_backoff_typo() {
    let mut config = corp_config(local_provider(&[FixtureKey::Rsa1]));
    config["rules"][1]["requires_any"] = json!(["jwt:corp", "api_key"]);
    assert_refused(
        &config.to_string(),
        &["rules[1].requires_any[1]", "api_keys"],
    );

    let mut config = corp_config(local_provider(&[FixtureKey::Rsa1]));
    config["failed_auth_backoff"] = json!({"after_failure": 5});
    assert_refused(&config.to_string(), &["failed_auth_backoff.after_failure"]);
}

#[test]
fn a_role_hierarchy_with_a_cycle() {
    assert_refused(
        &with_provider_field(
            "role_hierarchy",
            json!({"owner": ["admin"], "admin": ["developer"], "developer": ["owner"]}),
        ),
        &["jwt_providers.corp.role_hierarchy", "cycle"],
    );
}
