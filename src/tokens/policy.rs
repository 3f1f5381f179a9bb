//! The rules the grants share, free of HTTP and storage: which scopes and
//! audiences a request may have, what a cookie-mode client accepts, and the
//! per-client request budget.

use std::collections::HashMap;

use crate::auth::accounts::ADMIN_SCOPE;
use crate::auth::rate_limit::RateLimiter;
use crate::oauth::{ErrorCode, OAuthError, invalid_request, too_many_requests};
use crate::store::Client;

use super::grant::{GrantType, Presented};

/// `unsupported_grant_type` for a `grant_type` tessera does not serve,
/// listing the ones it does.
pub fn unsupported_grant(requested: &str) -> OAuthError {
    let served: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
    OAuthError::new(
        ErrorCode::UnsupportedGrantType,
        format!(
            "grant_type {requested:?} is not supported (use {})",
            served.join(", ")
        ),
    )
}

/// `unauthorized_client` unless `client` is registered for `grant`.
pub fn grant_allowed(client: &Client, grant: GrantType) -> Result<(), OAuthError> {
    if client
        .grant_types
        .iter()
        .any(|g| g == grant.registered_name())
    {
        return Ok(());
    }
    Err(OAuthError::new(
        ErrorCode::UnauthorizedClient,
        format!(
            "client {} may not use the {} grant",
            client.id,
            grant.as_str()
        ),
    ))
}

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
    match requested_audience(params)? {
        None => Ok(client.audiences.clone()),
        Some(aud) if client.audiences.contains(aud) => Ok(vec![aud.clone()]),
        Some(aud) => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            format!("audience {aud:?} is not allowed for client {}", client.id),
        )),
    }
}

/// The audience a request names: `audience`, or RFC 8707 `resource`
/// (not both).
pub fn requested_audience(params: &HashMap<String, String>) -> Result<Option<&String>, OAuthError> {
    match (params.get("audience"), params.get("resource")) {
        (Some(_), Some(_)) => Err(invalid_request("give audience or resource, not both")),
        (a, r) => Ok(a.or(r)),
    }
}

/// Whether a token with audience `aud` is addressed to `client`: one of
/// the client's audiences, never `issuer` itself (the admin API's, which
/// no resource server serves). Decides what a resource server may
/// introspect and what a service may exchange on a user's behalf.
pub fn addressed_to(client: &Client, aud: &crate::verify::Audience, issuer: &str) -> bool {
    client
        .audiences
        .iter()
        .any(|a| a != issuer && aud.contains(a))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::rate_limit::Rate;
    use crate::store::BindingPolicy;

    fn client(confidential: bool) -> Client {
        Client {
            id: "app".into(),
            confidential,
            secret_digest: None,
            grant_types: vec!["password".into(), "refresh_token".into()],
            scopes: vec!["read".into(), "write".into(), ADMIN_SCOPE.into()],
            audiences: vec!["https://a.example".into(), "https://b.example".into()],
            origins: vec!["https://app.example".into()],
            redirect_uris: vec![],
            cookie: false,
            admin: false,
            resource_server: false,
            on_binding_change: BindingPolicy::Audit,
            require_dpop: false,
            exchange_audiences: vec![],
            disabled: false,
            created_at: 0,
        }
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn narrow_keeps_the_requested_allowed_scopes_once_in_order() {
        let allowed = ["read", "write"];
        assert_eq!(
            narrow(&allowed, "write read write", "x").unwrap(),
            "write read"
        );
        assert_eq!(narrow(&allowed, "  read  ", "x").unwrap(), "read");
        assert_eq!(narrow(&allowed, "", "x").unwrap(), "");
        let e = narrow(&allowed, "read delete write", "client app").unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidScope);
        assert!(e.description.contains("\"delete\"") && e.description.contains("client app"));
        // A prefix or a different case is another scope.
        assert!(narrow(&allowed, "rea", "x").is_err());
        assert!(narrow(&allowed, "READ", "x").is_err());
    }

    #[test]
    fn admin_scope_is_never_grantable_with_a_user() {
        let list = ["read", "", ADMIN_SCOPE];
        assert_eq!(grantable(list.into_iter(), false), ["read", ADMIN_SCOPE]);
        assert_eq!(grantable(list.into_iter(), true), ["read"]);
        let c = client(true);
        assert_eq!(scopes(&c, &params(&[]), true).unwrap(), "read write");
        assert_eq!(
            scopes(&c, &params(&[]), false).unwrap(),
            format!("read write {ADMIN_SCOPE}")
        );
        let asked = params(&[("scope", ADMIN_SCOPE)]);
        assert_eq!(
            scopes(&c, &asked, true).unwrap_err().code,
            ErrorCode::InvalidScope
        );
        assert_eq!(scopes(&c, &asked, false).unwrap(), ADMIN_SCOPE);
    }

    #[test]
    fn audiences_pick_one_of_the_clients() {
        let c = client(true);
        assert_eq!(audiences(&c, &params(&[])).unwrap(), c.audiences);
        for key in ["audience", "resource"] {
            let one = params(&[(key, "https://b.example")]);
            assert_eq!(audiences(&c, &one).unwrap(), ["https://b.example"]);
            let other = params(&[(key, "https://evil.example")]);
            assert_eq!(
                audiences(&c, &other).unwrap_err().code,
                ErrorCode::InvalidTarget
            );
        }
        let both = params(&[
            ("audience", "https://a.example"),
            ("resource", "https://a.example"),
        ]);
        assert_eq!(
            audiences(&c, &both).unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn cookie_clients_need_an_allowed_origin_and_the_csrf_header() {
        let mut c = client(false);
        let request = |origin: Option<&str>, csrf_header: bool| Presented {
            origin: origin.map(str::to_owned),
            csrf_header,
            ..Presented::default()
        };
        // Not a cookie client: nothing to check.
        assert!(check_browser_request(&c, &request(None, false)).is_ok());
        c.cookie = true;
        assert!(check_browser_request(&c, &request(Some("https://app.example"), true)).is_ok());
        for refused in [
            request(None, true),
            request(Some("https://evil.example"), true),
            request(Some("https://app.example.evil.example"), true),
            request(Some("https://app.example"), false),
        ] {
            let e = check_browser_request(&c, &refused).unwrap_err();
            assert_eq!(e.code, ErrorCode::AccessDenied, "{refused:?}");
        }
    }

    #[test]
    fn grant_types_parse_exactly_and_clients_use_only_theirs() {
        for g in GrantType::ALL {
            assert_eq!(GrantType::parse(g.as_str()), Some(g));
        }
        for other in ["", "PASSWORD", "implicit", "password "] {
            assert_eq!(GrantType::parse(other), None, "{other:?}");
        }
        let e = unsupported_grant("implicit");
        assert_eq!(e.code, ErrorCode::UnsupportedGrantType);
        assert!(
            e.description
                .contains("authorization_code, client_credentials, password, refresh_token")
        );
        let c = client(true);
        assert!(grant_allowed(&c, GrantType::Password).is_ok());
        let e = grant_allowed(&c, GrantType::ClientCredentials).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnauthorizedClient);
    }

    #[test]
    fn public_clients_are_rate_limited_per_network() {
        let limiter = RateLimiter::new(Rate::parse("1/m").unwrap());
        let here = Some("192.0.2.1".parse().unwrap());
        let neighbour = Some("192.0.2.200".parse().unwrap());
        let elsewhere = Some("198.51.100.1".parse().unwrap());
        let public = client(false);
        assert!(check_rate(&limiter, &public, here, "token").is_ok());
        let e = check_rate(&limiter, &public, neighbour, "token").unwrap_err();
        assert_eq!(e.code, ErrorCode::TooManyRequests);
        assert!(e.retry_after.unwrap() >= 1);
        // Another network still has its budget.
        assert!(check_rate(&limiter, &public, elsewhere, "token").is_ok());
        // A confidential client's budget is its own, wherever it calls from.
        let confidential = Client {
            id: "svc".into(),
            ..client(true)
        };
        assert!(check_rate(&limiter, &confidential, here, "token").is_ok());
        assert!(check_rate(&limiter, &confidential, elsewhere, "token").is_err());
        // Off means off.
        let off = RateLimiter::new(None);
        for _ in 0..100 {
            assert!(check_rate(&off, &public, here, "token").is_ok());
        }
    }
}
