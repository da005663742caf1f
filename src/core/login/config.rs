//! The `login` section: the gateway as an OpenID Connect relying party.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use crate::core::config_error::ConfigError;
use crate::core::jwt::discovery::Discovered;
use crate::core::jwt::provider::{JwksSource, Provider};
use crate::core::login::seal::Keys;
use crate::core::syntax::split_uri;

pub mod raw {
    //! The login section exactly as written.
    use serde::Deserialize;

    use super::{SameSite, TokenAuth};

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Login {
        pub provider: String,
        pub authorization_endpoint: Option<String>,
        pub token_endpoint: Option<String>,
        pub end_session_endpoint: Option<String>,
        pub token_cluster: Option<String>,
        pub client_id: String,
        pub client_secret: String,
        pub token_auth: Option<TokenAuth>,
        pub scopes: Option<Vec<String>>,
        pub public_url: String,
        pub callback_path: Option<String>,
        pub login_path: Option<String>,
        pub logout_path: Option<String>,
        pub reauth_path: Option<String>,
        #[serde(default)]
        pub cookie: Cookie,
        pub cookie_keys: Vec<String>,
        pub session_lifetime_s: Option<u64>,
        pub email_claim: Option<String>,
        pub require_email_verified: Option<bool>,
    }

    #[derive(Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Cookie {
        pub name: Option<String>,
        pub domain: Option<String>,
        pub same_site: Option<SameSite>,
        pub secure: Option<bool>,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenAuth {
    #[default]
    ClientSecretBasic,
    ClientSecretPost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SameSite {
    #[default]
    Lax,
    Strict,
    None,
}

/// An endpoint authgate calls or sends browsers to: the URL as given, and for calls the
/// `:authority` and path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: String,
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    fn parse(at: &str, url: String) -> Result<Endpoint, ConfigError> {
        let (authority, path) = split_uri(&url)
            .ok_or_else(|| ConfigError::new(at, "must be an absolute http(s) URL"))?;
        Ok(Endpoint {
            authority,
            path,
            url,
        })
    }
}

#[derive(Debug)]
pub struct Login {
    /// Index into the configured providers: its issuer and keys check the ID token.
    pub provider: usize,
    /// Configured endpoints; absent ones come from the provider's discovery document.
    pub authorization: Option<Endpoint>,
    pub token: Option<Endpoint>,
    pub end_session: Option<Endpoint>,
    /// The Envoy cluster the token request goes over.
    pub token_cluster: String,
    pub client_id: String,
    pub client_secret: String,
    pub token_auth: TokenAuth,
    pub scopes: Vec<String>,
    /// The gateway's external origin, without a trailing slash.
    pub public_url: String,
    pub callback_path: String,
    pub login_path: String,
    pub logout_path: String,
    pub reauth_path: String,
    /// The session cookie's name (with `__Host-` when secure and host-only).
    pub cookie_name: String,
    pub cookie_domain: Option<String>,
    pub same_site: SameSite,
    pub secure: bool,
    pub keys: Keys,
    pub session_lifetime_s: u64,
    pub email_claim: String,
    pub require_email_verified: bool,
}

/// The IdP's endpoints as one sign-in uses them: configured, else discovered.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub authorization: Endpoint,
    pub token: Endpoint,
    pub end_session: Option<Endpoint>,
}

impl Login {
    /// The endpoints, configured or from the discovery document; None while a discovery
    /// provider's document has not been fetched.
    pub fn endpoints(&self, discovered: Option<&Discovered>) -> Option<Endpoints> {
        let found = |url: Option<&String>| {
            url.and_then(|url| Endpoint::parse("discovered", url.clone()).ok())
        };
        Some(Endpoints {
            authorization: self
                .authorization
                .clone()
                .or_else(|| found(discovered?.authorization_endpoint.as_ref()))?,
            token: self
                .token
                .clone()
                .or_else(|| found(discovered?.token_endpoint.as_ref()))?,
            end_session: self
                .end_session
                .clone()
                .or_else(|| found(discovered?.end_session_endpoint.as_ref())),
        })
    }

    /// Client authentication on a token request: the `authorization` header value for
    /// `client_secret_basic` (id and secret form-encoded first, RFC 6749 §2.3.1), or the form
    /// fields appended for `client_secret_post`.
    pub fn authenticate(&self, form: &mut String) -> Option<String> {
        use crate::core::login::flow::percent_encode;
        let (id, secret) = (
            percent_encode(&self.client_id),
            percent_encode(&self.client_secret),
        );
        match self.token_auth {
            TokenAuth::ClientSecretBasic => {
                use base64::engine::general_purpose::STANDARD;
                Some(format!(
                    "Basic {}",
                    STANDARD.encode(format!("{id}:{secret}"))
                ))
            }
            TokenAuth::ClientSecretPost => {
                form.push_str(&format!("&client_id={id}&client_secret={secret}"));
                None
            }
        }
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}{}", self.public_url, self.callback_path)
    }

    /// Whether `path` is one of the sign-in endpoints the filter answers itself.
    pub fn owns_path(&self, path: &str) -> bool {
        [
            &self.login_path,
            &self.callback_path,
            &self.logout_path,
            &self.reauth_path,
        ]
        .iter()
        .any(|p| p.as_str() == path)
    }
}

pub fn compile(raw: raw::Login, providers: &[Provider]) -> Result<Login, ConfigError> {
    let at = |field: &str| format!("login.{field}");
    let provider = providers
        .iter()
        .position(|p| p.name == raw.provider)
        .ok_or_else(|| {
            ConfigError::new(
                at("provider"),
                format!("no jwt_providers entry named {:?}", raw.provider),
            )
        })?;
    let discovers =
        matches!(&providers[provider].jwks, JwksSource::Remote(r) if r.discovery.is_some());
    if !discovers && (raw.authorization_endpoint.is_none() || raw.token_endpoint.is_none()) {
        return Err(ConfigError::new(
            at("authorization_endpoint"),
            "set authorization_endpoint and token_endpoint, or \"discovery\": true on the provider",
        ));
    }
    let authorization = raw
        .authorization_endpoint
        .map(|url| Endpoint::parse(&at("authorization_endpoint"), url))
        .transpose()?;
    let token = raw
        .token_endpoint
        .map(|url| Endpoint::parse(&at("token_endpoint"), url))
        .transpose()?;
    let end_session = raw
        .end_session_endpoint
        .map(|url| Endpoint::parse(&at("end_session_endpoint"), url))
        .transpose()?;
    let token_cluster = match (raw.token_cluster, &providers[provider].jwks) {
        (Some(cluster), _) if !cluster.is_empty() => cluster,
        (None, JwksSource::Remote(remote)) => remote.cluster.clone(),
        _ => {
            return Err(ConfigError::new(
                at("token_cluster"),
                "name the Envoy cluster that reaches the token endpoint (the provider has no remote_jwks cluster)",
            ))
        }
    };
    if raw.client_id.is_empty() || raw.client_secret.is_empty() {
        return Err(ConfigError::new(
            at("client_id"),
            "client_id and client_secret must not be empty",
        ));
    }
    let scopes = raw
        .scopes
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid") {
        return Err(ConfigError::new(at("scopes"), "must include \"openid\""));
    }
    if let Some(i) = scopes
        .iter()
        .position(|s| s.is_empty() || !s.bytes().all(|b| b.is_ascii_graphic() && b != b'"'))
    {
        return Err(ConfigError::new(
            at(&format!("scopes[{i}]")),
            "not a scope name",
        ));
    }
    let public_url = raw.public_url.trim_end_matches('/').to_string();
    match split_uri(&public_url) {
        Some((_, path)) if path == "/" || path.is_empty() => {}
        _ => {
            return Err(ConfigError::new(
                at("public_url"),
                "must be the gateway's external origin, such as https://gw.example.com (no path)",
            ))
        }
    }
    let path_or = |field: &str, value: Option<String>, default: &str| {
        let value = value.unwrap_or_else(|| default.to_string());
        if value.starts_with('/') && !value.contains(['?', '#']) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                at(field),
                "must be a path starting with '/'",
            ))
        }
    };
    let callback_path = path_or("callback_path", raw.callback_path, "/auth/callback")?;
    let login_path = path_or("login_path", raw.login_path, "/auth/login")?;
    let logout_path = path_or("logout_path", raw.logout_path, "/auth/logout")?;
    let reauth_path = path_or("reauth_path", raw.reauth_path, "/auth/reauth")?;
    let mut paths = [&callback_path, &login_path, &logout_path, &reauth_path];
    paths.sort();
    if paths.windows(2).any(|w| w[0] == w[1]) {
        return Err(ConfigError::new(
            at("callback_path"),
            "the sign-in paths must differ from each other",
        ));
    }
    let secure = raw.cookie.secure.unwrap_or(true);
    let same_site = raw.cookie.same_site.unwrap_or_default();
    if same_site == SameSite::None {
        return Err(ConfigError::new(
            at("cookie.same_site"),
            "\"none\" would send the session cookie on cross-site requests; use \"lax\" or \"strict\"",
        ));
    }
    let name = raw
        .cookie
        .name
        .unwrap_or_else(|| "authgate_session".to_string());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(ConfigError::new(
            at("cookie.name"),
            "letters, digits, '_' and '-' only",
        ));
    }
    let cookie_name = if secure && raw.cookie.domain.is_none() {
        format!("__Host-{name}")
    } else {
        name
    };
    if raw.cookie_keys.is_empty() {
        return Err(ConfigError::new(
            at("cookie_keys"),
            "list at least one key: 32 random bytes in base64url (head -c32 /dev/urandom | basenc --base64url)",
        ));
    }
    let mut keys = Vec::with_capacity(raw.cookie_keys.len());
    for (i, key) in raw.cookie_keys.iter().enumerate() {
        let bytes = URL_SAFE_NO_PAD
            .decode(key.trim_end_matches('='))
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                ConfigError::new(
                    at(&format!("cookie_keys[{i}]")),
                    "must be 32 bytes in base64url",
                )
            })?;
        keys.push(bytes);
    }
    let keys = Keys::new(&keys)
        .ok_or_else(|| ConfigError::new(at("cookie_keys"), "list at least one key"))?;
    let session_lifetime_s = raw.session_lifetime_s.unwrap_or(28_800);
    if !(60..=30 * 86_400).contains(&session_lifetime_s) {
        return Err(ConfigError::new(
            at("session_lifetime_s"),
            "must be between 60 s and 30 days",
        ));
    }
    Ok(Login {
        provider,
        authorization,
        token,
        end_session,
        token_cluster,
        client_id: raw.client_id,
        client_secret: raw.client_secret,
        token_auth: raw.token_auth.unwrap_or_default(),
        scopes,
        public_url,
        callback_path,
        login_path,
        logout_path,
        reauth_path,
        cookie_name,
        cookie_domain: raw.cookie.domain,
        same_site,
        secure,
        keys,
        session_lifetime_s,
        email_claim: raw.email_claim.unwrap_or_else(|| "email".to_string()),
        require_email_verified: raw.require_email_verified.unwrap_or(true),
    })
}
