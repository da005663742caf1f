//! Every stat authgate emits, declared once. Envoy shows them as `wasmcustom.<name>` in
//! `/stats` and as `<name>` (dots as underscores) in `/stats/prometheus`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Allowed,
    Denied,
    DeniedMissingCredential,
    DeniedInvalidToken,
    DeniedForbidden,
    DeniedInsufficientScope,
    DeniedNoRule,
    DeniedBadRequest,
    SessionExpired,
    JwksUnavailable,
    JwtCacheHit,
    JwtCacheMiss,
    JwksFetchSuccess,
    JwksFetchFailed,
    AllowedJwt,
    AllowedApiKey,
    AllowedOpaqueToken,
    DeniedJwt,
    DeniedApiKey,
    DeniedOpaqueToken,
    RateLimited,
    AuthzCall,
    AuthzOk,
    AuthzDenied,
    AuthzError,
    AuthzTimeout,
    AuthzCacheHit,
    AuthzCacheMiss,
    AuthzHeaderDropped,
    FailureModeAllowed,
    DeniedAuthzUnavailable,
    SessionExpiredApi,
    SessionExpiredBrowser,
    SessionExpiredOpenAi,
    SessionExpiredAnthropic,
    Overloaded,
    AuthzEvictedUpstream,
    AllowedSession,
    DeniedSession,
}

impl Metric {
    /// The "allowed" counts (total and per credential kind).
    pub fn is_allowed(self) -> bool {
        matches!(
            self,
            Metric::Allowed
                | Metric::AllowedJwt
                | Metric::AllowedApiKey
                | Metric::AllowedOpaqueToken
                | Metric::AllowedSession
        )
    }

    pub const ALL: [Metric; 39] = [
        Metric::Allowed,
        Metric::Denied,
        Metric::DeniedMissingCredential,
        Metric::DeniedInvalidToken,
        Metric::DeniedForbidden,
        Metric::DeniedInsufficientScope,
        Metric::DeniedNoRule,
        Metric::DeniedBadRequest,
        Metric::SessionExpired,
        Metric::JwksUnavailable,
        Metric::JwtCacheHit,
        Metric::JwtCacheMiss,
        Metric::JwksFetchSuccess,
        Metric::JwksFetchFailed,
        Metric::AllowedJwt,
        Metric::AllowedApiKey,
        Metric::AllowedOpaqueToken,
        Metric::DeniedJwt,
        Metric::DeniedApiKey,
        Metric::DeniedOpaqueToken,
        Metric::RateLimited,
        Metric::AuthzCall,
        Metric::AuthzOk,
        Metric::AuthzDenied,
        Metric::AuthzError,
        Metric::AuthzTimeout,
        Metric::AuthzCacheHit,
        Metric::AuthzCacheMiss,
        Metric::AuthzHeaderDropped,
        Metric::FailureModeAllowed,
        Metric::DeniedAuthzUnavailable,
        Metric::SessionExpiredApi,
        Metric::SessionExpiredBrowser,
        Metric::SessionExpiredOpenAi,
        Metric::SessionExpiredAnthropic,
        Metric::Overloaded,
        Metric::AuthzEvictedUpstream,
        Metric::AllowedSession,
        Metric::DeniedSession,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Allowed => "authgate.allowed",
            Metric::Denied => "authgate.denied",
            Metric::DeniedMissingCredential => "authgate.denied.missing_credential",
            Metric::DeniedInvalidToken => "authgate.denied.invalid_token",
            Metric::DeniedForbidden => "authgate.denied.forbidden",
            Metric::DeniedInsufficientScope => "authgate.denied.insufficient_scope",
            Metric::DeniedNoRule => "authgate.denied.no_rule",
            Metric::DeniedBadRequest => "authgate.denied.bad_request",
            Metric::SessionExpired => "authgate.session_expired",
            Metric::JwksUnavailable => "authgate.jwks_unavailable",
            Metric::JwtCacheHit => "authgate.jwt_cache_hit",
            Metric::JwtCacheMiss => "authgate.jwt_cache_miss",
            Metric::JwksFetchSuccess => "authgate.jwks_fetch_success",
            Metric::JwksFetchFailed => "authgate.jwks_fetch_failed",
            Metric::AllowedJwt => "authgate.allowed.jwt",
            Metric::AllowedApiKey => "authgate.allowed.api_key",
            Metric::AllowedOpaqueToken => "authgate.allowed.opaque_token",
            Metric::DeniedJwt => "authgate.denied.jwt",
            Metric::DeniedApiKey => "authgate.denied.api_key",
            Metric::DeniedOpaqueToken => "authgate.denied.opaque_token",
            Metric::RateLimited => "authgate.rate_limited",
            Metric::AuthzCall => "authgate.authz_call",
            Metric::AuthzOk => "authgate.authz_ok",
            Metric::AuthzDenied => "authgate.authz_denied",
            Metric::AuthzError => "authgate.authz_error",
            Metric::AuthzTimeout => "authgate.authz_timeout",
            Metric::AuthzCacheHit => "authgate.authz_cache_hit",
            Metric::AuthzCacheMiss => "authgate.authz_cache_miss",
            Metric::AuthzHeaderDropped => "authgate.authz_header_dropped",
            Metric::FailureModeAllowed => "authgate.failure_mode_allowed",
            Metric::DeniedAuthzUnavailable => "authgate.denied.authorization_unavailable",
            Metric::SessionExpiredApi => "authgate.session_expired.api",
            Metric::SessionExpiredBrowser => "authgate.session_expired.browser",
            Metric::SessionExpiredOpenAi => "authgate.session_expired.openai",
            Metric::SessionExpiredAnthropic => "authgate.session_expired.anthropic",
            Metric::Overloaded => "authgate.overloaded",
            Metric::AuthzEvictedUpstream => "authgate.authz_evicted_upstream",
            Metric::AllowedSession => "authgate.allowed.session",
            Metric::DeniedSession => "authgate.denied.session",
        }
    }

    /// Its position in `ALL` (the variants are declared in that order).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where the core reports stats; the shell backs it with Envoy counters.
pub trait MetricSink {
    fn increment(&mut self, metric: Metric);
}

/// Collects increments; for tests and for code paths that report later.
#[derive(Debug, Default)]
pub struct Recorded(pub Vec<Metric>);

impl MetricSink for Recorded {
    fn increment(&mut self, metric: Metric) {
        self.0.push(metric);
    }
}

impl Recorded {
    pub fn count(&self, metric: Metric) -> usize {
        self.0.iter().filter(|m| **m == metric).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_the_position_in_all() {
        for (position, metric) in Metric::ALL.iter().enumerate() {
            assert_eq!(metric.index(), position, "{metric:?}");
        }
    }
}
