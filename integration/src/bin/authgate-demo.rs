//! `make run` helper: the JWKS stub and the echo upstream on fixed ports, plus a demo token.
//!
//! - JWKS at `http://127.0.0.1:8082/jwks` (`AUTHGATE_DEMO_JWKS_PORT`), discovery at
//!   `/.well-known/openid-configuration`;
//! - echo upstream on `127.0.0.1:8081` (`AUTHGATE_DEMO_UPSTREAM_PORT`);
//! - prints an RS256 token (issuer `https://idp.authgate.local`, audience `gateway`) and curl lines
//!   against the gateway at `http://127.0.0.1:8080` (`AUTHGATE_DEMO_GATEWAY`), then serves until
//!   killed.

use authgate_integration::tokens::now;
use authgate_integration::{jwks, FixtureKey, JwksStub, TokenBuilder, Upstream};
use serde_json::json;

const ISSUER: &str = "https://idp.authgate.local";
/// The API key envoy/envoy.yaml lists (by its SHA-256) as `demo`.
const DEMO_API_KEY: &str = "ek_live_demo_0123456789abcdef";

fn port(var: &str, default: u16) -> u16 {
    match std::env::var(var) {
        Ok(text) => text.parse().unwrap_or_else(|_| {
            eprintln!("{var}={text} is not a port number");
            std::process::exit(2)
        }),
        Err(_) => default,
    }
}

fn main() {
    let jwks_port = port("AUTHGATE_DEMO_JWKS_PORT", 8082);
    let upstream_port = port("AUTHGATE_DEMO_UPSTREAM_PORT", 8081);
    let gateway =
        std::env::var("AUTHGATE_DEMO_GATEWAY").unwrap_or_else(|_| "http://127.0.0.1:8080".into());

    let idp = JwksStub::start_on(jwks_port, jwks(&[FixtureKey::Rsa1])).unwrap_or_else(|e| {
        eprintln!("JWKS stub: {e}");
        std::process::exit(1)
    });
    idp.set_discovery(ISSUER, &format!("http://127.0.0.1:{jwks_port}/jwks"));
    let upstream = Upstream::start_on(upstream_port).unwrap_or_else(|e| {
        eprintln!("echo upstream: {e}");
        std::process::exit(1)
    });

    let issued = now();
    let token = TokenBuilder::new(FixtureKey::Rsa1)
        .claims(json!({
            "iss": ISSUER,
            "aud": "gateway",
            "sub": "demo-user",
            "email": "demo@example.com",
            "scope": "llm:invoke",
            "realm_access": {"roles": ["user"]},
            "iat": issued,
            "exp": issued + 12 * 3600,
        }))
        .sign();

    println!(
        "JWKS stub:      http://127.0.0.1:{}/jwks (kid rsa-1, issuer {ISSUER})",
        idp.port()
    );
    println!("echo upstream:  http://127.0.0.1:{}/", upstream.port());
    println!();
    println!("Demo token (RS256, sub demo-user, aud gateway, valid 12 h):");
    println!("{token}");
    println!();
    println!("Try (gateway at {gateway}):");
    println!("  export TOKEN={token}");
    println!("  curl -i {gateway}/health");
    println!(
        "  curl -i {gateway}/v1/models                                   # 401 unauthenticated"
    );
    println!("  curl -i -H \"Authorization: Bearer $TOKEN\" {gateway}/v1/models   # 200, upstream echoes x-auth-* headers");
    println!(
        "  curl -i -H \"Authorization: Bearer $TOKEN.x\" {gateway}/v1/models # 401 invalid_token"
    );
    println!("  curl -i -H \"x-api-key: {DEMO_API_KEY}\" {gateway}/v1/models   # 200 as svc:demo");
    println!();
    println!("Agent tokens live in the reference authorization service (127.0.0.1:8083):");
    println!(
        "  target/debug/authgate-authz create-token --db .run/authz.sqlite --email you@example.com"
    );
    println!("  curl -i -H \"Authorization: Bearer <token>\" {gateway}/v1/models   # 200 via the service");
    println!("  target/debug/authgate-authz expire --db .run/authz.sqlite --sha256 <token_sha256>");
    println!(
        "  # then the same call answers with a re-auth URL; open it, sign in as the token's owner"
    );
    println!("  # and confirm: the same token works again");
    println!();
    println!("Serving until killed (Ctrl-C).");
    loop {
        std::thread::park();
    }
}
