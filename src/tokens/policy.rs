//! The rules the grants share, free of HTTP and storage: which scopes and
//! audiences a request may have, what a cookie-mode client accepts, and the
//! per-client request budget.

use std::collections::HashMap;

use crate::auth::accounts::ADMIN_SCOPE;
use crate::auth::rate_limit::RateLimiter;
use crate::oauth::{ErrorCode, OAuthError, invalid_request, too_many_requests};
use crate::store::Client;

use super::grant::Presented;

/// The cookie that carries a cookie-mode client's refresh token.
pub const REFRESH_COOKIE: &str = "__Host-tessera-rt";

/// A cookie-mode client accepts only requests from one of its origins that
/// carry `X-Tessera-CSRF: 1` (which a cross-site form cannot send, and which
/// forces a CORS preflight on fetches).
pub fn check_browser_request(client: &Client, presented: &Presented) -> Result<(), OAuthError> {
    if !client.cookie {
        return Ok(());
    }
    let denied = |why: &str| OAuthError::new(ErrorCode::AccessDenied, why);
    match &presented.origin {
        None => {
            return Err(denied(
                "client uses cookie mode: the Origin header is required",
            ));
        }
        Some(o) if !client.origins.iter().any(|allowed| allowed == o) => {
            return Err(denied(&format!(
                "origin {o} is not allowed for client {}",
                client.id
            )));
        }
        Some(_) => {}
    }
    if !presented.csrf_header {
        return Err(denied(
            "client uses cookie mode: send the X-Tessera-CSRF: 1 header",
        ));
    }
    Ok(())
}

/// Scopes: each requested one must be allowed; none requested means all
/// allowed. `tessera:admin` is granted only to a client acting for itself
/// (client_credentials): never to a token that carries a user.
pub fn scopes(
    client: &Client,
    params: &HashMap<String, String>,
    for_user: bool,
) -> Result<String, OAuthError> {
    let allowed = grantable(client.scopes.iter().map(String::as_str), for_user);
    match params.get("scope") {
        None => Ok(allowed.join(" ")),
        Some(requested) => narrow(&allowed, requested, &format!("client {}", client.id)),
    }
}

/// Audiences: `audience` (or RFC 8707 `resource`) picks one of the
/// client's; otherwise all of them.
pub fn audiences(
    client: &Client,
    params: &HashMap<String, String>,
) -> Result<Vec<String>, OAuthError> {
    let requested = match (params.get("audience"), params.get("resource")) {
        (Some(_), Some(_)) => {
            return Err(invalid_request("give audience or resource, not both"));
        }
        (a, r) => a.or(r),
    };
    match requested {
        None => Ok(client.audiences.clone()),
        Some(aud) if client.audiences.contains(aud) => Ok(vec![aud.clone()]),
        Some(aud) => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("audience {aud:?} is not allowed for client {}", client.id),
        )),
    }
}

/// The scopes of `list` a token may carry: all of them for a client acting
/// for itself, all but `tessera:admin` for a token that carries a user.
pub fn grantable<'a>(list: impl Iterator<Item = &'a str>, for_user: bool) -> Vec<&'a str> {
    list.filter(|s| !(s.is_empty() || for_user && *s == ADMIN_SCOPE))
        .collect()
}

/// The requested scopes if each is in `allowed` (deduplicated, in request
/// order), else `invalid_scope` naming the first that is not.
pub fn narrow(allowed: &[&str], requested: &str, whose: &str) -> Result<String, OAuthError> {
    let mut granted: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.contains(&s) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("scope {s:?} is not allowed for {whose}"),
            ));
        }
        if !granted.contains(&s) {
            granted.push(s);
        }
    }
    Ok(granted.join(" "))
}

/// Spends one request of `client`'s budget at `endpoint`, or answers 429
/// with how long to wait.
///
/// A public client is identified by its id alone, which anyone can send, so
/// its budget is kept per client network: a flood from one place cannot
/// starve the client's users elsewhere.
pub fn check_rate(
    limiter: &RateLimiter,
    client: &Client,
    ip: Option<std::net::IpAddr>,
    endpoint: &str,
) -> Result<(), OAuthError> {
    let key = if client.confidential {
        std::borrow::Cow::Borrowed(client.id.as_str())
    } else {
        let network = ip.map_or_else(|| "unknown".to_owned(), crate::auth::network::prefix);
        std::borrow::Cow::Owned(format!("{} {network}", client.id))
    };
    limiter
        .check(&key, std::time::Instant::now())
        .map_err(|wait| {
            tracing::debug!(client = %client.id, endpoint, "client rate limit reached");
            crate::metrics::metrics()
                .rate_limited
                .with_label_values(&[endpoint])
                .inc();
            let rate = limiter.rate().map_or_else(String::new, |r| r.to_string());
            too_many_requests(
                crate::auth::rate_limit::retry_after_secs(wait),
                format!(
                    "client {} is over its {endpoint} request limit ({rate}); retry later",
                    client.id
                ),
            )
        })
}
