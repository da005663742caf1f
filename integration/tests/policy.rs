//! Route policy in real Envoy: `require_scopes` (space-delimited `scope` or an array claim) and
//! `require_roles` (Keycloak-style `realm_access.roles`), checked on every request, cached or not.

use authgate_integration::expect::{self, error_reply};
use authgate_integration::plugin::{corp_claims, local_provider, ISSUER};
use authgate_integration::{Checks, FixtureKey, Gateway, Req, TokenBuilder};
use serde_json::json;

fn gateway() -> Gateway {
    let mut provider = local_provider(&[FixtureKey::Rsa1]);
    provider["subject_claims"] = json!({"roles": "realm_access.roles", "scopes": "scp"});
    let plugin = json!({
        "jwt_providers": {"corp": provider},
        "rules": [
            {"match": {"prefix": "/admin"}, "requires_any": ["jwt:corp"], "require_roles": ["admin"]},
            {"match": {"prefix": "/v1/"}, "requires_any": ["jwt:corp"],
             "require_scopes": ["llm:invoke"]}
        ]
    });
    Gateway::start(&plugin, authgate_integration::jwks(&[]))
}

fn token(roles: &[&str], scopes: &[&str]) -> String {
    let mut claims = corp_claims("alice");
    claims["iss"] = json!(ISSUER);
    claims["realm_access"] = json!({"roles": roles});
    claims["scp"] = json!(scopes);
    TokenBuilder::new(FixtureKey::Rsa1).claims(claims).sign()
}

#[test]
fn scopes_and_roles_decide_after_the_token_is_valid() {
    let gw = gateway();
    let mut checks = Checks::new();
    let admin = token(&["user", "admin"], &["llm:invoke"]);
    let plain = token(&["user"], &["read"]);

    // Twice each: the second request is a token-cache hit and must be judged the same way.
    for round in 1..=2 {
        let reply = Req::get(gw.url("/admin/users")).bearer(&admin).send();
        checks.check(
            &format!("round {round}: admin role passes"),
            expect::allowed(&reply),
        );

        let reply = Req::get(gw.url("/admin/users")).bearer(&plain).send();
        checks.check(
            &format!("round {round}: missing role is 403 forbidden naming the role"),
            error_reply(&reply, 403, "forbidden").and_then(|body| {
                (body["message"] == "missing role(s): admin")
                    .then_some(())
                    .ok_or(format!("{body}"))
            }),
        );

        let reply = Req::post(gw.url("/v1/chat/completions"))
            .bearer(&plain)
            .body("{}")
            .send();
        checks.check(
            &format!("round {round}: missing scope is 403 insufficient_scope with a challenge"),
            error_reply(&reply, 403, "insufficient_scope").and_then(|_| {
                let challenge = reply.header("www-authenticate").unwrap_or_default();
                challenge
                    .contains("error=\"insufficient_scope\", scope=\"llm:invoke\"")
                    .then_some(())
                    .ok_or(challenge.to_string())
            }),
        );

        let reply = Req::post(gw.url("/v1/chat/completions"))
            .bearer(&admin)
            .body("{}")
            .send();
        checks.check(
            &format!("round {round}: array scope claim passes"),
            expect::allowed(&reply),
        );
    }
    assert_eq!(gw.envoy.stat("authgate.denied.insufficient_scope"), 2);
    checks.finish();
}

#[test]
fn a_role_hierarchy_lets_higher_roles_meet_lower_requirements() {
    let mut provider = local_provider(&[FixtureKey::Rsa1]);
    provider["subject_claims"] = json!({"roles": "realm_access.roles", "scopes": "scp"});
    let plugin = json!({
        "jwt_providers": {"corp": provider},
        "role_hierarchy": {"owner": ["admin"], "admin": ["developer"], "developer": ["viewer"]},
        "rules": [
            {"match": {"prefix": "/admin"}, "requires_any": ["jwt:corp"], "require_roles": ["admin"]},
            {"match": {"prefix": "/dev"}, "requires_any": ["jwt:corp"], "require_roles": ["developer"]}
        ]
    });
    let gw = Gateway::start(&plugin, authgate_integration::jwks(&[]));
    let mut checks = Checks::new();
    let developer = token(&["developer"], &[]);
    let owner = token(&["owner"], &[]);
    for round in 1..=2 {
        checks.check(
            &format!("round {round}: a developer on an admin rule is 403"),
            error_reply(
                &Req::get(gw.url("/admin/x")).bearer(&developer).send(),
                403,
                "forbidden",
            )
            .map(|_| ()),
        );
        let reply = Req::get(gw.url("/dev/x")).bearer(&owner).send();
        checks.check(
            &format!("round {round}: an owner meets a developer rule"),
            expect::allowed(&reply),
        );
        checks.check(
            &format!("round {round}: the identity header keeps the token's own roles"),
            expect::upstream_header(&reply, "x-auth-roles", Some("owner")),
        );
        checks.check(
            &format!("round {round}: an owner meets an admin rule"),
            expect::allowed(&Req::get(gw.url("/admin/x")).bearer(&owner).send()),
        );
    }
    checks.finish();
}
