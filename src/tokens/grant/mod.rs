//! The token endpoint (RFC 6749 §3.2), free of HTTP types: client
//! authentication, grant dispatch, and the response. Each grant is a module
//! of its own (`client_credentials`, `password`, `refresh`): a new grant is
//! one new file and one [`GrantType`] variant. `src/http/token.rs` only
//! parses the request and renders the result.

mod authorization_code;
mod client_credentials;
mod password;
mod refresh;
mod token_exchange;

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;

use super::client_auth::ClientAuthenticator;
use super::mint::{MintError, Minter, TokenRequest};
use super::policy::{check_browser_request, check_rate, grant_allowed, unsupported_grant};
use crate::audit::{Action, Auditor, Event, client_actor};
use crate::auth::login::{Credentials, LoginError};
use crate::auth::network;
use crate::auth::rate_limit::RateLimiter;
use crate::auth::throttle::{LoginThrottle, NetworkCount};
use crate::oauth::{ErrorCode, OAuthError, invalid_request, too_many_requests, unavailable};
use crate::revocation::RevocationCache;
use crate::store::Store;

/// The grants the token endpoint serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantType {
    /// RFC 6749 §4.4: a confidential client for itself.
    ClientCredentials,
    /// RFC 6749 §4.1 with PKCE: a code from tessera's login page.
    AuthorizationCode,
    /// RFC 6749 §4.3 (legacy): a user's password through the client.
    Password,
    /// RFC 6749 §6: a refresh token for a new pair.
    RefreshToken,
    /// RFC 8693: a user's token for a narrower one (on behalf of), or an
    /// upstream issuer's ID token for a tessera session.
    TokenExchange,
}

impl GrantType {
    /// Every grant, in the order error messages list them.
    pub const ALL: [GrantType; 5] = [
        GrantType::AuthorizationCode,
        GrantType::ClientCredentials,
        GrantType::Password,
        GrantType::RefreshToken,
        GrantType::TokenExchange,
    ];

    /// The `grant_type` value.
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::ClientCredentials => "client_credentials",
            GrantType::Password => "password",
            GrantType::RefreshToken => "refresh_token",
            GrantType::TokenExchange => "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    }

    /// The name a client is registered with (`client add --grant`): the
    /// wire name, except `token-exchange` for the URN.
    pub fn registered_name(self) -> &'static str {
        match self {
            GrantType::TokenExchange => crate::auth::accounts::TOKEN_EXCHANGE,
            other => other.as_str(),
        }
    }

    /// The grant named `value`, if it is one tessera serves.
    pub fn parse(value: &str) -> Option<GrantType> {
        GrantType::ALL.into_iter().find(|g| g.as_str() == value)
    }
}

/// What the request carried besides its form: client credentials from the
/// header, and the facts a session is bound to.
#[derive(Debug, Default)]
pub struct Presented {
    /// From `Authorization: Basic` (already form-decoded), if used.
    pub basic: Option<(String, String)>,
    /// The `User-Agent` header.
    pub user_agent: Option<String>,
    /// The client's IP address.
    pub ip: Option<std::net::IpAddr>,
    /// The `__Host-tessera-rt` cookie (cookie-mode clients' refresh token).
    pub refresh_cookie: Option<String>,
    /// The `Origin` header.
    pub origin: Option<String>,
    /// Whether `X-Tessera-CSRF: 1` was sent.
    pub csrf_header: bool,
    /// The `DPoP` proof header (RFC 9449), if one was sent; an error
    /// names what was wrong with the header itself (repeated, not ASCII).
    pub dpop: Option<Result<String, &'static str>>,
}

/// Session lifetimes, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct SessionPolicy {
    /// Sliding idle lifetime.
    pub idle_ttl: i64,
    /// Fixed lifetime from login.
    pub absolute_ttl: i64,
    /// Refresh-token reuse grace window (0: none).
    pub reuse_grace: i64,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// The access token (JWS, or JWE for encrypted audiences).
    pub access_token: String,
    /// `DPoP` when the access token is bound to the request's DPoP key,
    /// else `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Granted scopes, space-separated.
    pub scope: String,
    /// The session's next refresh token (user grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// OpenID Connect: the ID token, when `openid` was in the scope of an
    /// authorization code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
    /// RFC 8693 §2.2.1: what `access_token` is, for token exchange.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issued_token_type: Option<&'static str>,
    /// Cookie mode: the refresh token goes into the `__Host-tessera-rt`
    /// cookie with this `Max-Age` (the session's remaining idle lifetime)
    /// instead of the body.
    #[serde(skip)]
    pub refresh_cookie_max_age: Option<i64>,
}

/// What the token endpoint works with.
pub struct Collaborators {
    /// Persistence.
    pub store: Arc<dyn Store>,
    /// Mints access tokens.
    pub minter: Arc<Minter>,
    /// Authenticates clients.
    pub clients: Arc<ClientAuthenticator>,
    /// Session lifetimes and the reuse grace window.
    pub sessions: SessionPolicy,
    /// Checks users' passwords and second factors.
    pub credentials: Arc<Credentials>,
    /// Opens authorization codes.
    pub sealer: crate::authorize::Sealer,
    /// Issues and checks refresh tokens.
    pub refresh_tokens: crate::tokens::refresh::RefreshTokens,
    /// Records audit events.
    pub auditor: Auditor,
    /// Refreshed after a revocation.
    pub revocations: Arc<RevocationCache>,
    /// Failed-login limits.
    pub throttle: LoginThrottle,
    /// Requests per client.
    pub rate_limit: RateLimiter,
    /// The time.
    pub clock: Arc<dyn crate::clock::Clock>,
    /// Checks DPoP proofs.
    pub dpop: crate::verify::dpop::DpopValidator,
    /// This endpoint's URL, which proofs' `htu` must name.
    pub token_url: String,
    /// Verifies tessera's own access tokens (token exchange's subject
    /// tokens): keys from the ring, any audience, revocations applied.
    pub own_tokens: Arc<crate::verify::Verifier>,
    /// Verifies trusted upstream issuers' tokens (token exchange).
    pub upstream: Arc<crate::federation::upstream::UpstreamVerifier>,
    /// tessera's issuer URL (never an audience a subject token is for).
    pub issuer: String,
}

/// The token endpoint.
pub struct TokenEndpoint {
    store: Arc<dyn Store>,
    minter: Arc<Minter>,
    clients: Arc<ClientAuthenticator>,
    sessions: SessionPolicy,
    credentials: Arc<Credentials>,
    sealer: crate::authorize::Sealer,
    refresh_tokens: crate::tokens::refresh::RefreshTokens,
    auditor: Auditor,
    revocations: Arc<RevocationCache>,
    throttle: LoginThrottle,
    rate_limit: RateLimiter,
    clock: Arc<dyn crate::clock::Clock>,
    dpop: crate::verify::dpop::DpopValidator,
    token_url: String,
    own_tokens: Arc<crate::verify::Verifier>,
    upstream: Arc<crate::federation::upstream::UpstreamVerifier>,
    issuer: String,
}

impl TokenEndpoint {
    /// An endpoint working with `c`.
    pub fn new(c: Collaborators) -> TokenEndpoint {
        TokenEndpoint {
            store: c.store,
            minter: c.minter,
            clients: c.clients,
            sessions: c.sessions,
            credentials: c.credentials,
            sealer: c.sealer,
            refresh_tokens: c.refresh_tokens,
            auditor: c.auditor,
            revocations: c.revocations,
            throttle: c.throttle,
            rate_limit: c.rate_limit,
            clock: c.clock,
            dpop: c.dpop,
            token_url: c.token_url,
            own_tokens: c.own_tokens,
            upstream: c.upstream,
            issuer: c.issuer,
        }
    }

    /// Handles one token request: `params` are the form parameters (each at
    /// most once, empty ones already dropped), `presented` the header credentials.
    pub async fn handle(
        &self,
        params: &HashMap<String, String>,
        mut presented: Presented,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let requested = params
            .get("grant_type")
            .ok_or_else(|| invalid_request("grant_type is required"))?;
        let Some(grant) = GrantType::parse(requested) else {
            return Err(unsupported_grant(requested));
        };
        let user_agent = presented.user_agent.take();
        let ip = presented.ip;
        let client = match self
            .clients
            .authenticate(params, presented.basic.take())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                if e.code == ErrorCode::InvalidClient {
                    self.failed_client_auth(grant, ip, now).await?;
                }
                return Err(e);
            }
        };
        check_rate(&self.rate_limit, &client, ip, "token")?;
        grant_allowed(&client, grant)?;
        // Before anything is consumed: a refused browser request changes nothing.
        check_browser_request(&client, &presented)?;
        let jkt = self
            .dpop_key(&client, presented.dpop.take(), ip, now)
            .await?;
        let jkt = jkt.as_deref();
        // A key whose HSM is gone: refuse before a refresh token or a code
        // is consumed (the client retries and loses nothing).
        self.minter.ready(now).map_err(mint_error)?;
        let issued = match grant {
            GrantType::ClientCredentials => {
                let issued = self.client_credentials(&client, params, jkt, now).await?;
                self.auditor
                    .record(
                        Event::new(client_actor(&client.id), Action::ClientTokenIssued)
                            .detail("scope", issued.scope.clone())
                            .network(ip.map(network::prefix)),
                    )
                    .await;
                issued
            }
            GrantType::AuthorizationCode => {
                self.authorization_code(&client, params, user_agent, ip, jkt, now)
                    .await?
            }
            GrantType::Password => {
                self.password(&client, params, user_agent, ip, jkt, now)
                    .await?
            }
            GrantType::RefreshToken => {
                let cookie = presented.refresh_cookie.take();
                self.refresh(&client, params, cookie, user_agent, ip, jkt, now)
                    .await?
            }
            GrantType::TokenExchange => {
                self.token_exchange(&client, params, user_agent, ip, jkt, now)
                    .await?
            }
        };
        let m = crate::metrics::metrics();
        if grant == GrantType::RefreshToken {
            m.refresh_rotations.inc();
        }
        m.tokens_issued
            .with_label_values(&[grant.registered_name()])
            .inc();
        Ok(issued)
    }

    /// The thumbprint of the request's DPoP key, if it sent a valid proof
    /// (RFC 9449 §4.3; `htu` is this endpoint); `None` without one, unless
    /// the client requires DPoP. A refused proof is audited.
    async fn dpop_key(
        &self,
        client: &crate::store::Client,
        header: Option<Result<String, &'static str>>,
        ip: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<Option<String>, OAuthError> {
        let refused = |reason: String| OAuthError::new(ErrorCode::InvalidDpopProof, reason);
        let proof = match header {
            None if client.require_dpop => {
                return Err(refused(format!(
                    "client {} requires DPoP: send a DPoP proof header",
                    client.id
                )));
            }
            None => return Ok(None),
            Some(Err(what)) => return Err(refused(what.to_owned())),
            Some(Ok(proof)) => proof,
        };
        let request = crate::verify::dpop::Request {
            method: "POST",
            url: &self.token_url,
            access_token: None,
            now,
        };
        match self.dpop.check(&proof, &request) {
            Ok(proof) => Ok(Some(proof.jkt)),
            Err(crate::verify::dpop::DpopError::UseNonce) => Err(OAuthError::new(
                ErrorCode::UseDpopNonce,
                "the DPoP proof needs the server nonce sent in the DPoP-Nonce header",
            )),
            Err(crate::verify::dpop::DpopError::Busy) => Err(OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many DPoP proofs at once; retry shortly",
            )),
            Err(e) => {
                self.auditor
                    .record(
                        Event::new(client_actor(&client.id), Action::DpopProofRefused)
                            .detail("reason", e.to_string())
                            .network(ip.map(network::prefix)),
                    )
                    .await;
                Err(refused(e.to_string()))
            }
        }
    }

    /// The nonce for the `DPoP-Nonce` header, when proofs must carry one.
    pub fn dpop_nonce(&self, now: i64) -> Option<String> {
        self.dpop
            .requires_nonce()
            .then(|| self.dpop.nonce(now))
            .flatten()
    }

    /// Counts a failed client authentication against its network and
    /// audits it while under the cap; past it the answer is 429, with one
    /// summary audit row when the cap is reached and nothing written after
    /// (an anonymous flood cannot grow the append-only log).
    async fn failed_client_auth(
        &self,
        grant: GrantType,
        ip: Option<std::net::IpAddr>,
        now: i64,
    ) -> Result<(), OAuthError> {
        let network = ip.map(network::prefix);
        let count = match ip {
            Some(ip) => self
                .throttle
                .failed_client_auth(ip, now)
                .await
                .map_err(unavailable)?,
            None => NetworkCount::Counted,
        };
        let refused = |t: crate::auth::throttle::Throttled| {
            too_many_requests(
                t.retry_after,
                "too many failed authentications from this network; retry later",
            )
        };
        match count {
            NetworkCount::Counted => {
                self.auditor
                    .record(
                        Event::new("anonymous", Action::ClientAuthFailed)
                            .detail("grant_type", grant.as_str())
                            .network(network),
                    )
                    .await;
                Ok(())
            }
            NetworkCount::CapReached(t) => {
                self.auditor
                    .record(
                        Event::new("anonymous", Action::NetworkFailureCapReached)
                            .detail("failures", self.throttle.policy().network_failures)
                            .detail("until", now + t.retry_after)
                            .network(network),
                    )
                    .await;
                Err(refused(t))
            }
            NetworkCount::Capped(t) => Err(refused(t)),
        }
    }

    /// Mints the access token and builds the §5.1 response.
    ///
    /// A `sub` or `client` revocation covers tokens issued up to the second
    /// it committed. A token this request would issue in that second (or
    /// earlier: the request began before the revocation) would be revoked
    /// at birth although its session or client is live, so it is issued
    /// with the next second's `iat`, waiting for that second if need be
    /// (at most a second, and only right after such a revocation). A
    /// cut-off further ahead means the user or client is disabled.
    async fn respond(
        &self,
        request: TokenRequest,
        refresh_token: Option<String>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let mut now = now;
        if let Some(cutoff) = self
            .revocations
            .set()
            .cutoff(&request.sub, &request.client_id)
            .filter(|cutoff| *cutoff >= now)
        {
            if cutoff > now + 2 {
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "the tokens of this user or client are revoked",
                ));
            }
            now = cutoff + 1;
            self.clock.sleep_until(now).await;
        }
        let scope = request.scope.clone();
        let bound = request.jkt.is_some();
        if request.expires_at.is_some_and(|cap| cap <= now) {
            return Err(OAuthError::new(
                ErrorCode::InvalidGrant,
                "the subject token expires now: obtain a fresh one",
            ));
        }
        let minted = self.minter.mint(request, now).map_err(mint_error)?;
        Ok(TokenResponse {
            access_token: minted.token,
            token_type: if bound { "DPoP" } else { "Bearer" },
            expires_in: minted.claims.exp - now,
            scope,
            refresh_token,
            id_token: None,
            issued_token_type: None,
            refresh_cookie_max_age: None,
        })
    }

    /// Opens a session of `user` through `client` with id `id`, and its
    /// first refresh token. `None` if the user's credentials changed (or
    /// the user was disabled) since they were checked, or a session with
    /// this id exists (the caller knows which it expects); the first is
    /// audited here.
    #[allow(clippy::too_many_arguments)]
    async fn open_session(
        &self,
        user: &crate::store::User,
        client: &crate::store::Client,
        scope: &str,
        user_agent: Option<String>,
        network: Option<String>,
        now: i64,
        id: uuid::Uuid,
        jkt: Option<&str>,
        upstream: Option<crate::store::UpstreamOrigin>,
    ) -> Result<Option<OpenedSession>, OAuthError> {
        // RFC 9449 §5: a public client's refresh tokens are bound to its
        // DPoP key (a cookie-mode client's stay in their cookie, and a
        // confidential client's are bound to its authentication).
        let binding = jkt.filter(|_| !client.confidential && !client.cookie);
        let secret = crate::tokens::refresh::SessionSecret::generate();
        let session = crate::store::NewSession {
            id,
            user_id: user.id,
            client_id: client.id.clone(),
            scope: scope.to_owned(),
            created_at: now,
            idle_expires_at: now + self.sessions.idle_ttl.min(self.sessions.absolute_ttl),
            absolute_expires_at: now + self.sessions.absolute_ttl,
            user_agent_summary: user_agent
                .as_deref()
                .map(crate::tokens::user_agent::summary),
            user_agent_hash: user_agent.map(|ua| crate::digest::sha256(ua.as_bytes()).to_vec()),
            network_prefix: network,
            credential_version: user.credential_version,
            upstream,
        };
        if !self
            .store
            .create_session(&session, &secret.digest())
            .await
            .map_err(unavailable)?
        {
            return Ok(None);
        }
        Ok(Some(OpenedSession {
            id,
            idle_expires_at: session.idle_expires_at,
            refresh_token: self
                .refresh_tokens
                .issue(id, 0, &secret, binding)
                .to_string(),
        }))
    }

    /// The answer to a login that opened `session`: an access token of the
    /// session and its refresh token (in the cookie, for cookie-mode clients).
    #[allow(clippy::too_many_arguments)]
    async fn session_response(
        &self,
        client: &crate::store::Client,
        user: &crate::store::User,
        session: OpenedSession,
        audiences: Vec<String>,
        scope: String,
        jkt: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let mut response = self
            .respond(
                TokenRequest {
                    sub: user.id.to_string(),
                    audiences,
                    client_id: client.id.clone(),
                    scope,
                    sid: Some(session.id),
                    jkt: jkt.map(str::to_owned),
                    act: None,
                    expires_at: None,
                },
                Some(session.refresh_token),
                now,
            )
            .await?;
        if client.cookie {
            response.refresh_cookie_max_age = Some(session.idle_expires_at - now);
        }
        Ok(response)
    }

    /// Audits a login whose session was refused because the user's
    /// credentials changed (or the user was disabled) while it was checked.
    async fn audit_credentials_changed(
        &self,
        client: &crate::store::Client,
        user: &crate::store::User,
        ip: Option<std::net::IpAddr>,
    ) {
        self.auditor
            .record(
                Event::new(client_actor(&client.id), Action::LoginFailed)
                    .subject(user.id)
                    .detail("reason", "credentials changed during login")
                    .network(ip.map(network::prefix)),
            )
            .await;
    }
}

/// A session just opened.
struct OpenedSession {
    id: uuid::Uuid,
    idle_expires_at: i64,
    refresh_token: String,
}

/// `invalid_grant` for a login whose user's credentials changed meanwhile.
fn credentials_changed() -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidGrant,
        "the user's credentials changed while this login was checked; log in again",
    )
}

/// The token endpoint's answer to a failed login.
fn login_error(e: LoginError) -> OAuthError {
    match e {
        LoginError::Busy => OAuthError::new(ErrorCode::TemporarilyUnavailable, e.to_string()),
        LoginError::NetworkBusy => too_many_requests(1, e.to_string()),
        LoginError::Throttled { retry_after, .. } => too_many_requests(retry_after, e.to_string()),
        LoginError::BadCredentials | LoginError::OtpRequired | LoginError::WrongOtp => {
            OAuthError::new(ErrorCode::InvalidGrant, e.to_string())
        }
        LoginError::Unavailable(e) => unavailable(e),
        LoginError::Internal => OAuthError::new(ErrorCode::ServerError, e.to_string()),
    }
}

fn mint_error(e: MintError) -> OAuthError {
    match e {
        MintError::SharedEncryptedAudience(_) | MintError::NoAudience => OAuthError::new(
            ErrorCode::InvalidRequest,
            format!("{e}; request one audience with the audience parameter"),
        ),
        MintError::Signer(_) | MintError::SignerUnavailable | MintError::NoSigningKey => {
            tracing::error!(error = %e, "minting failed: the signing key cannot sign");
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the signing key is unavailable; try again shortly",
            )
        }
        other => {
            tracing::error!(error = %other, "minting failed");
            OAuthError::new(ErrorCode::ServerError, "the token could not be issued")
        }
    }
}
