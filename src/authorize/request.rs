//! `GET /oauth/authorize` parameters, validated at the edge: the client,
//! its exact redirect URI, PKCE, scope, state, nonce and prompt.
//!
//! The order matters: until the client and the redirect URI are known to
//! belong together, nothing redirects (an error page instead), so tessera
//! can never be made to send a browser to a URL an attacker chose.

use std::collections::HashMap;
use std::sync::Arc;

use crate::oauth::ErrorCode;
use crate::store::Client;
use crate::tokens::policy::{grantable, narrow};

/// The scopes of OpenID Connect, requestable by every client of the code flow.
pub const OIDC_SCOPES: [&str; 2] = ["openid", "profile"];

/// Longest `state` and `nonce` accepted (they travel in URLs and codes).
const MAX_OPAQUE: usize = 512;

/// What the authorization request asks about an existing sign-in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prompt {
    /// Use the browser's sign-in if there is one, else show the form.
    Default,
    /// Always show the form (`prompt=login`).
    Login,
    /// Never show the form: `login_required` without a sign-in (`prompt=none`).
    None,
}

/// A valid authorization request.
#[derive(Clone, Debug)]
pub struct AuthorizationRequest {
    /// The client.
    pub client: Arc<Client>,
    /// One of the client's registered redirect URIs, exactly.
    pub redirect_uri: String,
    /// Echoed back to the client.
    pub state: Option<String>,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// OpenID Connect nonce, put into the ID token.
    pub nonce: Option<String>,
    /// PKCE S256 challenge (43 base64url characters).
    pub code_challenge: String,
    /// What to do about an existing sign-in.
    pub prompt: Prompt,
    /// OpenID Connect `max_age`: a sign-in older than this many seconds
    /// does not count.
    pub max_age: Option<u32>,
    /// OpenID Connect `login_hint`: the username to fill in.
    pub login_hint: Option<String>,
}

impl AuthorizationRequest {
    /// Whether an ID token is asked for.
    pub fn openid(&self) -> bool {
        self.scope.split(' ').any(|s| s == "openid")
    }

    /// The parameters that reproduce this request (the login form carries
    /// them through its steps; they are validated again on every post).
    pub fn form_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("response_type", "code".to_owned()),
            ("client_id", self.client.id.clone()),
            ("redirect_uri", self.redirect_uri.clone()),
            ("code_challenge", self.code_challenge.clone()),
            ("code_challenge_method", "S256".to_owned()),
            ("scope", self.scope.clone()),
        ];
        if let Some(state) = &self.state {
            fields.push(("state", state.clone()));
        }
        if let Some(nonce) = &self.nonce {
            fields.push(("nonce", nonce.clone()));
        }
        if let Some(max_age) = self.max_age {
            fields.push(("max_age", max_age.to_string()));
        }
        fields
    }
}

/// Why a request is refused, and how the browser is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// No client/redirect URI pair to trust: an error page, never a redirect.
    Page(String),
    /// Sent back to the client's redirect URI (RFC 6749 §4.1.2.1).
    Redirect(ErrorRedirect),
}

/// An error redirect to a verified redirect URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorRedirect {
    /// The verified redirect URI.
    pub redirect_uri: String,
    /// The request's `state`, if it had one.
    pub state: Option<String>,
    /// The error code.
    pub error: ErrorCode,
    /// What was wrong.
    pub description: String,
}

/// The query or form parameters, each name with all its values (empty
/// values dropped, RFC 6749 §3.1).
pub type RawParams = HashMap<String, Vec<String>>;

/// Collects `application/x-www-form-urlencoded` pairs: at most
/// [`crate::tokens::form::MAX_PARAMS`] (a real request has about a dozen),
/// so a hostile one costs no more than a token request.
pub fn raw_params(encoded: &[u8]) -> Result<RawParams, String> {
    let mut params = RawParams::new();
    for (i, (name, value)) in url::form_urlencoded::parse(encoded).enumerate() {
        if i == crate::tokens::form::MAX_PARAMS {
            return Err(format!(
                "The sign-in request has too many parameters (at most {}).",
                crate::tokens::form::MAX_PARAMS
            ));
        }
        if !value.is_empty() {
            params
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
    }
    Ok(params)
}

/// The one value of `name`; `Err` if it was sent more than once.
fn single<'a>(params: &'a RawParams, name: &str) -> Result<Option<&'a str>, String> {
    match params.get(name).map(Vec::as_slice) {
        None | Some([]) => Ok(None),
        Some([one]) => Ok(Some(one)),
        Some(_) => Err(format!("{name} was sent more than once")),
    }
}

/// Validates an authorization request; `client` looks a client up.
pub async fn parse<F, Fut>(
    params: &RawParams,
    client: F,
) -> Result<AuthorizationRequest, RequestError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<Arc<Client>>, String>>,
{
    let page = RequestError::Page;
    let client_id = single(params, "client_id")
        .map_err(page)?
        .ok_or_else(|| page("client_id is missing".into()))?;
    if client_id.len() > 256 {
        return Err(page("client_id is not a registered client".into()));
    }
    let client = client(client_id.to_owned())
        .await
        .map_err(page)?
        .filter(|c| !c.disabled)
        .ok_or_else(|| page(format!("{client_id:?} is not a registered client")))?;
    if !client.grant_types.iter().any(|g| g == "authorization_code") {
        return Err(page(format!(
            "client {} is not registered for the authorization code flow",
            client.id
        )));
    }
    let redirect_uri = match single(params, "redirect_uri").map_err(page)? {
        // Exact string comparison: no prefix, case or normalisation games.
        Some(uri) if client.redirect_uris.iter().any(|r| r == uri) => uri.to_owned(),
        Some(_) => {
            return Err(page(format!(
                "redirect_uri is not one registered for client {}",
                client.id
            )));
        }
        None => match client.redirect_uris.as_slice() {
            [one] => one.clone(),
            _ => {
                return Err(page(format!(
                    "redirect_uri is required: client {} has several",
                    client.id
                )));
            }
        },
    };
    // From here on the redirect URI is trusted: errors go back to it.
    let state = single(params, "state").ok().flatten().map(str::to_owned);
    let redirect = |error: ErrorCode, description: String| {
        RequestError::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            state: state.clone(),
            error,
            description,
        })
    };
    let invalid = |d: String| redirect(ErrorCode::InvalidRequest, d);
    let get = |name: &str| single(params, name).map_err(invalid);
    if state.as_ref().is_some_and(|s| s.len() > MAX_OPAQUE) || get("state").is_err() {
        return Err(RequestError::Redirect(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            state: None,
            error: ErrorCode::InvalidRequest,
            description: format!("state must be sent once and be at most {MAX_OPAQUE} bytes"),
        }));
    }
    match get("response_type")? {
        Some("code") => {}
        Some(other) => {
            return Err(redirect(
                ErrorCode::UnsupportedResponseType,
                format!("response_type {other:?} is not supported: use code"),
            ));
        }
        None => return Err(invalid("response_type is required (code)".into())),
    }
    let code_challenge = get("code_challenge")?.ok_or_else(|| {
        invalid("code_challenge is required: PKCE with S256 is required for every client".into())
    })?;
    match get("code_challenge_method")? {
        Some("S256") => {}
        Some(other) => {
            return Err(invalid(format!(
                "code_challenge_method {other:?} is not supported: use S256"
            )));
        }
        // RFC 7636 would default to plain, which tessera refuses.
        None => return Err(invalid("code_challenge_method is required: S256".into())),
    }
    if code_challenge.len() != 43
        || !code_challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "code_challenge must be the base64url SHA-256 of the code verifier (43 characters)"
                .into(),
        ));
    }
    let nonce = get("nonce")?.map(str::to_owned);
    if nonce.as_ref().is_some_and(|n| n.len() > MAX_OPAQUE) {
        return Err(invalid(format!("nonce must be at most {MAX_OPAQUE} bytes")));
    }
    let prompt = match get("prompt")? {
        None => Prompt::Default,
        Some("login") => Prompt::Login,
        Some("none") => Prompt::None,
        Some(other) => {
            return Err(invalid(format!(
                "prompt {other:?} is not supported: use login or none"
            )));
        }
    };
    // OpenID Connect: the longest time since the user typed a password
    // that the client accepts (0: now, like prompt=login).
    let max_age = match get("max_age")? {
        None => None,
        Some(text) => Some(
            text.parse::<u32>()
                .map_err(|_| invalid("max_age must be a number of seconds".into()))?,
        ),
    };
    // Only the query response mode exists: a client waiting for a fragment
    // or a form post would never see the code.
    if let Some(mode) = get("response_mode")?.filter(|m| *m != "query") {
        return Err(invalid(format!(
            "response_mode {mode:?} is not supported: use query"
        )));
    }
    if get("request")?.is_some() {
        return Err(redirect(
            ErrorCode::RequestNotSupported,
            "request objects are not supported: send the parameters in the query".into(),
        ));
    }
    if get("request_uri")?.is_some() {
        return Err(redirect(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported: send the parameters in the query".into(),
        ));
    }
    let login_hint = get("login_hint")?
        .filter(|h| h.len() <= 256)
        .map(str::to_owned);
    let mut allowed = grantable(client.scopes.iter().map(String::as_str), true);
    let scope = match get("scope")? {
        None => allowed.join(" "),
        Some(requested) => {
            allowed.extend(OIDC_SCOPES);
            narrow(&allowed, requested, &format!("client {}", client.id))
                .map_err(|e| redirect(ErrorCode::InvalidScope, e.description))?
        }
    };
    Ok(AuthorizationRequest {
        code_challenge: code_challenge.to_owned(),
        client,
        redirect_uri,
        state,
        scope,
        nonce,
        prompt,
        max_age,
        login_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Arc<Client> {
        Arc::new(Client {
            id: "app".into(),
            confidential: false,
            secret_digest: None,
            grant_types: vec!["authorization_code".into(), "refresh_token".into()],
            scopes: vec!["read".into()],
            audiences: vec!["https://api.example".into()],
            origins: vec![],
            redirect_uris: vec!["https://app.example/cb".into()],
            cookie: false,
            admin: false,
            resource_server: false,
            on_binding_change: crate::store::BindingPolicy::Audit,
            require_dpop: false,
            exchange_audiences: vec![],
            disabled: false,
            created_at: 0,
        })
    }

    async fn run(query: &str) -> Result<AuthorizationRequest, RequestError> {
        let c = client();
        parse(&raw_params(query.as_bytes()).unwrap(), |id| async move {
            Ok((id == "app").then_some(c))
        })
        .await
    }

    const OK: &str = "response_type=code&client_id=app&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256";

    #[test]
    fn parameters_are_capped_like_every_form() {
        let many: Vec<String> = (0..33).map(|i| format!("p{i}=1")).collect();
        assert!(raw_params(many.join("&").as_bytes()).is_err());
        let enough: Vec<String> = (0..32).map(|i| format!("p{i}=1")).collect();
        assert_eq!(raw_params(enough.join("&").as_bytes()).unwrap().len(), 32);
    }

    #[tokio::test]
    async fn a_lone_registered_redirect_uri_may_be_omitted() {
        let r = run(OK).await.unwrap();
        assert_eq!(r.redirect_uri, "https://app.example/cb");
        assert_eq!(r.scope, "read");
        assert_eq!(r.prompt, Prompt::Default);
    }

    #[tokio::test]
    async fn near_miss_redirect_uris_get_a_page_never_a_redirect() {
        for uri in [
            "https://app.example/cb/",
            "https://app.example/cb?x=1",
            "https://app.example/cbx",
            "https://app.example/c",
            "https://APP.example/cb",
            "https://app.example.evil/cb",
            "http://app.example/cb",
            "https://app.example/cb#x",
            "https://app.example/CB",
        ] {
            let q = format!("{OK}&redirect_uri={}", urlencode(uri));
            assert!(matches!(run(&q).await, Err(RequestError::Page(_))), "{uri}");
        }
        let q = format!(
            "{OK}&redirect_uri={0}&redirect_uri={0}",
            urlencode("https://app.example/cb")
        );
        assert!(matches!(run(&q).await, Err(RequestError::Page(_))));
        assert!(matches!(
            run("client_id=nobody&response_type=code").await,
            Err(RequestError::Page(_))
        ));
    }

    #[tokio::test]
    async fn pkce_is_s256_only_and_errors_redirect_with_state() {
        let base = "response_type=code&client_id=app&state=xyz";
        for (q, needle) in [
            (base.to_owned(), "code_challenge is required"),
            (
                format!(
                    "{base}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=plain"
                ),
                "plain",
            ),
            (
                format!("{base}&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"),
                "code_challenge_method is required",
            ),
            (
                format!("{base}&code_challenge=short&code_challenge_method=S256"),
                "43",
            ),
        ] {
            match run(&q).await {
                Err(RequestError::Redirect(r)) => {
                    assert_eq!(r.error, ErrorCode::InvalidRequest, "{q}");
                    assert_eq!(r.state.as_deref(), Some("xyz"));
                    assert!(r.description.contains(needle), "{q}: {}", r.description);
                }
                other => panic!("{q}: {other:?}"),
            }
        }
        match run(&format!("{OK}&scope=write")).await {
            Err(RequestError::Redirect(r)) => assert_eq!(r.error, ErrorCode::InvalidScope),
            other => panic!("{other:?}"),
        }
        let r = run(&format!("{OK}&scope=openid%20read&prompt=none"))
            .await
            .unwrap();
        assert!(r.openid());
        assert_eq!(r.prompt, Prompt::None);
    }

    fn urlencode(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }
}
