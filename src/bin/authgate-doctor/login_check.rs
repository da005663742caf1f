//! `login-check CONFIG`: the sign-in set-up against the identity provider itself, before a user
//! finds out: its discovery document (issuer, endpoints, PKCE S256, client authentication,
//! scopes), whether it knows the redirect URI (an authorization request with it), and whether
//! it accepts the client's credentials (a token request with a code that cannot be valid:
//! `invalid_grant` means the client authenticated, `invalid_client` that it did not).

use std::time::Duration;

use serde_json::Value;

use authgate::core::jwt::discovery;
use authgate::core::login::config::{Endpoints, Login, TokenAuth};
use authgate::core::login::flow::{percent_encode, pkce_challenge};

use crate::{load_config, Outcome};

const TIMEOUT: Duration = Duration::from_secs(5);

pub fn run(args: &[String]) -> Outcome {
    let Some(path) = args.first() else {
        return Outcome::Usage("login-check needs a configuration file".to_string());
    };
    let config = match load_config(path) {
        Ok(config) => config,
        Err(outcome) => return outcome,
    };
    let Some(login) = &config.login else {
        println!("✗ {path} has no login section");
        return Outcome::NotFine;
    };
    let Some(provider) = config.providers.get(login.provider) else {
        return Outcome::NotFine;
    };
    let mut fine = true;
    let mut report = |ok: bool, line: String| {
        println!("{} {line}", if ok { "✓" } else { "✗" });
        fine &= ok;
    };
    let redirect_uri = login.redirect_uri();
    let discovery_url = format!(
        "{}/.well-known/openid-configuration",
        provider.issuer.trim_end_matches('/')
    );
    let mut discovered = None;
    match get_json(&discovery_url) {
        Ok(document) => {
            check_discovery(login, &provider.issuer, &document, &mut report);
            discovered = discovery::parse(&provider.issuer, document.to_string().as_bytes()).ok();
        }
        Err(error) => report(false, format!("discovery {discovery_url}: {error}")),
    }
    let Some(endpoints) = login.endpoints(discovered.as_ref()) else {
        report(
            false,
            "no authorization and token endpoints (configured or discovered)".to_string(),
        );
        return Outcome::NotFine;
    };
    report(
        !redirect_uri.ends_with('/'),
        format!("redirect URI {redirect_uri} (must match the IdP's registration exactly)"),
    );
    match probe_redirect(login, &endpoints, &redirect_uri) {
        Ok(()) => report(
            true,
            "the IdP accepts this client and redirect URI".to_string(),
        ),
        Err(error) => report(false, error),
    }
    match probe_client_auth(login, &endpoints, &redirect_uri) {
        Ok(()) => report(true, "the IdP accepts the client's credentials".to_string()),
        Err(error) => report(false, error),
    }
    if fine {
        Outcome::Fine
    } else {
        Outcome::NotFine
    }
}

fn check_discovery(
    login: &Login,
    issuer: &str,
    document: &Value,
    report: &mut dyn FnMut(bool, String),
) {
    let text = |name: &str| document[name].as_str().unwrap_or("");
    let list = |name: &str| -> Vec<String> {
        document[name]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    };
    report(
        text("issuer") == issuer,
        format!("issuer {:?} (configured {issuer:?})", text("issuer")),
    );
    for (name, configured) in [
        ("authorization_endpoint", &login.authorization),
        ("token_endpoint", &login.token),
    ] {
        match configured {
            Some(endpoint) => report(
                text(name) == endpoint.url,
                format!("{name} {:?} (configured {:?})", text(name), endpoint.url),
            ),
            None => report(
                !text(name).is_empty(),
                format!("{name} {:?} (discovered)", text(name)),
            ),
        }
    }
    let methods = list("code_challenge_methods_supported");
    report(
        methods.iter().any(|m| m == "S256"),
        format!("PKCE S256 supported ({methods:?})"),
    );
    let auth = match login.token_auth {
        TokenAuth::ClientSecretBasic => "client_secret_basic",
        TokenAuth::ClientSecretPost => "client_secret_post",
    };
    let supported = list("token_endpoint_auth_methods_supported");
    report(
        supported.is_empty() || supported.iter().any(|m| m == auth),
        format!("client authentication {auth} ({supported:?})"),
    );
    let scopes = list("scopes_supported");
    let missing: Vec<&String> = login
        .scopes
        .iter()
        .filter(|s| !scopes.is_empty() && !scopes.contains(s))
        .collect();
    report(
        missing.is_empty(),
        format!("scopes {:?} (missing: {missing:?})", login.scopes),
    );
}

/// An authorization request as the gateway makes it: an IdP that does not know the client or
/// the redirect URI answers an error page instead of sending the browser on to sign in.
fn probe_redirect(login: &Login, endpoints: &Endpoints, redirect_uri: &str) -> Result<(), String> {
    let url =
        format!(
        "{}{}response_type=code&client_id={}&redirect_uri={}&scope={}&state=doctor&nonce=doctor\
         &code_challenge={}&code_challenge_method=S256",
        endpoints.authorization.url,
        if endpoints.authorization.url.contains('?') { '&' } else { '?' },
        percent_encode(&login.client_id),
        percent_encode(redirect_uri),
        percent_encode(&login.scopes.join(" ")),
        pkce_challenge("authgate-doctor-login-check-verifier-0123456789"),
    );
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout(TIMEOUT)
        .build();
    let (status, body) = match agent.get(&url).call() {
        Ok(response) => (
            response.status(),
            response.into_string().unwrap_or_default(),
        ),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Transport(error)) => {
            return Err(format!("authorization endpoint: {error}"))
        }
    };
    match status {
        200..=399 if !body.contains("redirect_uri") && !body.contains("invalid_client") => Ok(()),
        _ => Err(format!(
            "the IdP refused the authorization request ({status}): check the client id and that \
             {redirect_uri} is registered exactly: {}",
            snippet(&body)
        )),
    }
}

/// A token request with a code that cannot be valid: the IdP checks the client first.
fn probe_client_auth(
    login: &Login,
    endpoints: &Endpoints,
    redirect_uri: &str,
) -> Result<(), String> {
    let mut form = format!(
        "grant_type=authorization_code&code=authgate-doctor-invalid-code&redirect_uri={}\
         &code_verifier=authgate-doctor-login-check-verifier-0123456789",
        percent_encode(redirect_uri)
    );
    let mut request = ureq::post(&endpoints.token.url)
        .timeout(TIMEOUT)
        .set("content-type", "application/x-www-form-urlencoded");
    if let Some(authorization) = login.authenticate(&mut form) {
        request = request.set("authorization", &authorization);
    }
    let (status, body) = match request.send_string(&form) {
        Ok(response) => (
            response.status(),
            response.into_string().unwrap_or_default(),
        ),
        Err(ureq::Error::Status(status, response)) => {
            (status, response.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Transport(error)) => return Err(format!("token endpoint: {error}")),
    };
    let error = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    match error.as_str() {
        "invalid_grant" => Ok(()),
        "invalid_client" | "unauthorized_client" => Err(format!(
            "the IdP refused the client's credentials ({status} {error}): check client_id, \
             client_secret and token_auth"
        )),
        _ => Err(format!(
            "unexpected token endpoint answer ({status}): {}",
            snippet(&body)
        )),
    }
}

fn get_json(url: &str) -> Result<Value, String> {
    let text = ureq::get(url)
        .timeout(TIMEOUT)
        .call()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))
}

fn snippet(body: &str) -> String {
    body.chars().filter(|c| !c.is_control()).take(200).collect()
}
