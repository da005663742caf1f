//! What the filter writes to Envoy's log (DESIGN.md "Observability", "Security invariants"):
//! the version at VM start, expected denials only at debug, real faults at warn/error, and never
//! a token (only a 12-hex fingerprint).

use std::time::Duration;

use authgate_integration::expect::{self, Checks};
use authgate_integration::plugin::{corp_claims, corp_config, remote_provider, stat};
use authgate_integration::tokens::{alg_none, corrupt_signature};
use authgate_integration::{jwks, repo_root, FixtureKey, Gateway, JwksMode, Req, TokenBuilder};

/// Lines the filter logged (Envoy prefixes them with `wasm log <plugin> <root id>`).
fn filter_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("wasm log authgate"))
        .collect()
}

fn at_warn_or_error(line: &str) -> bool {
    line.contains("][warning][")
        || line.contains("][warn][")
        || line.contains("][error][")
        || line.contains("][critical][")
}

/// `version = "…"` of the root package.
fn package_version() -> String {
    let manifest = std::fs::read_to_string(repo_root().join("Cargo.toml")).unwrap_or_default();
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[package]")
        .find_map(|l| {
            l.trim()
                .strip_prefix("version = \"")?
                .strip_suffix('"')
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no [package] version in the root Cargo.toml"))
}

#[test]
fn log_levels_and_no_secrets() {
    // cache_duration_s 1, so a broken IdP shows up in the log quickly.
    let gw = Gateway::start(&corp_config(remote_provider(1)), jwks(&[FixtureKey::Rsa1]));
    gw.wait_jwks_fetched();
    let mut checks = Checks::new();

    let valid = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(corp_claims("alice"))
        .sign();
    let mut expired_claims = corp_claims("bob");
    expired_claims["exp"] = serde_json::json!(authgate_integration::now() - 600);
    let tokens = [
        valid.clone(),
        corrupt_signature(&valid),
        TokenBuilder::new(FixtureKey::Rsa1)
            .claims(expired_claims)
            .sign(),
        TokenBuilder::new(FixtureKey::Rsa3)
            .claims(corp_claims("mallory"))
            .sign(),
        alg_none("rsa-1", &corp_claims("eve")),
    ];
    for t in &tokens {
        Req::get(gw.url("/api/a")).bearer(t).send();
    }
    Req::get(gw.url("/api/a")).send();
    checks.check(
        "the valid token was allowed",
        expect::allowed(&Req::get(gw.url("/api/a")).bearer(&valid).send()),
    );

    let log = gw.envoy.log();
    let version = package_version();
    checks.check(
        "version logged at VM start",
        if filter_lines(&log).iter().any(|l| l.contains(&version)) {
            Ok(())
        } else {
            Err(format!("no filter log line contains the version {version}"))
        },
    );
    let loud: Vec<&str> = filter_lines(&log)
        .into_iter()
        .filter(|l| at_warn_or_error(l))
        .collect();
    checks.check(
        "expected denials are not logged at warn/error",
        if loud.is_empty() {
            Ok(())
        } else {
            Err(format!("lines: {loud:#?}"))
        },
    );

    // A real fault: the IdP answers 500 on refresh.
    let failed = gw.envoy.stat(stat::JWKS_FETCH_FAILED);
    gw.idp.set_mode(JwksMode::Status(500));
    let counted = gw
        .envoy
        .wait_stat(stat::JWKS_FETCH_FAILED, failed + 1, Duration::from_secs(10));
    checks.check("failing refresh counted", counted.map(|_| ()));
    let log = gw.envoy.log();
    let loud = filter_lines(&log)
        .into_iter()
        .filter(|l| at_warn_or_error(l))
        .count();
    checks.check(
        "a failing JWKS fetch is logged at warn or error",
        if loud > 0 {
            Ok(())
        } else {
            Err("no warn/error line from the filter".into())
        },
    );

    for t in &tokens {
        let signature = t.rsplit('.').next().unwrap_or("");
        let payload = t.split('.').nth(1).unwrap_or("");
        let leaked = log.contains(t.as_str())
            || (signature.len() >= 16 && log.contains(signature))
            || log.contains(payload);
        checks.check(
            "no token (nor its payload or signature) in the log",
            if leaked {
                Err(format!("found in the log: {t}"))
            } else {
                Ok(())
            },
        );
    }
    checks.finish();
}
