//! Bearer-token verification for resource servers: the `tessera-verify`
//! crate (re-exported by `tessera` as `tessera::verify`, feature `verify`).
//! It compiles neither the server nor a database driver.
//!
//! Features: `actix` (the [`Authenticated`] extractor), `jwe` (tokens
//! encrypted to the audience), `remote-jwks` (the issuer's JWKS over HTTP,
//! and the revocation feed); all on by default.
//!
//! A [`Verifier`] checks tokens minted by tessera against the issuer's own
//! key set, applying the rules of the spec in a fixed order and failing
//! closed:
//!
//! 1. size limit, then the shape: 3 parts (JWS) or, for an audience with a
//!    decryption key, 5 parts (JWE) — never one where the other is expected;
//! 2. JWE: `alg` exactly the registered one, `enc` A256GCM, `cty` JWT, no
//!    `zip`, no `crit`, ephemeral key on the curve; then the nested JWS;
//! 3. JWS header: `alg` exactly ES256 (so no `none`, no HMAC with the public
//!    key), `typ` at+jwt, no `crit`, a `kid`; `jwk`/`jku`/`x5u`/`x5c` are
//!    ignored — keys come only from the issuer's JWKS;
//! 4. the signature's r and s within [1, n−1], then the signature itself;
//! 5. claims: `iss`, `aud`, `exp`, `nbf` (with leeway), and every claim of
//!    an access token present and well-typed.
//!
//! ```no_run
//! use tessera_verify::{Authenticated, Verifier};
//! use actix_web::{App, HttpServer, web};
//!
//! async fn hello(user: Authenticated) -> String {
//!     format!("hello {}", user.claims().sub)
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let verifier = Verifier::builder("https://auth.example", "https://api.example")
//!     .build()
//!     .expect("valid verifier configuration");
//! let verifier = web::Data::new(verifier);
//! HttpServer::new(move || App::new().app_data(verifier.clone()).route("/", web::get().to(hello)))
//!     .bind("127.0.0.1:9000")?
//!     .run()
//!     .await
//! # }
//! ```

#![warn(missing_docs)]

mod cache;
pub mod claims;
pub mod dpop;
mod error;
#[cfg(feature = "actix")]
mod extractor;
#[cfg(feature = "remote-jwks")]
mod feed;
mod header;
#[cfg(feature = "jwe")]
mod jwe;
mod jwks;
pub mod revocations;

use std::sync::Arc;
use std::time::Duration;

pub use claims::{AccessClaims, Actor, Audience, Confirmation};
pub use error::{ConfigError, FeedError, KeyError};
#[cfg(feature = "actix")]
pub use extractor::{Authenticated, BearerError, authenticate, bearer, dpop_header};
pub use jwks::VerifyingKey;
pub use revocations::{FeedEntry, FeedPage, RevocationKind, RevocationSet};

/// Keys held by the caller instead of fetched: the issuer itself verifies
/// with its own key ring this way.
pub trait KeyProvider: Send + Sync {
    /// The verification key with this `kid`, if it is in the key set.
    fn verifying_key(&self, kid: &str) -> Option<Arc<VerifyingKey>>;
}

/// The ES256 keys of a JWKS document by `kid` (other members ignored).
pub fn parse_jwks(
    json: &[u8],
) -> Result<std::collections::HashMap<String, Arc<VerifyingKey>>, KeyError> {
    jwks::parse_set(json)
}

/// Why a token was refused. The `Display` text is safe to return to the
/// client (it never contains the token or key material).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Longer than the configured limit.
    #[error("token is too long")]
    TooLong,
    /// Not a well-formed compact JWS/JWE.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// An algorithm other than the one allowed (the offending `alg`, for
    /// logs; never echoed to the client).
    #[error("algorithm not accepted")]
    Algorithm(String),
    /// `typ` is not `at+jwt`.
    #[error("not an access token (typ must be at+jwt)")]
    WrongType,
    /// The token requires an extension this verifier does not implement.
    #[error("unsupported critical header")]
    UnknownCritical,
    /// The `kid` is not in the issuer's key set.
    #[error("signed by an unknown key")]
    UnknownKey,
    /// The issuer's keys could not be fetched and none is cached.
    #[error("signing keys are unavailable")]
    KeysUnavailable,
    /// The signature does not verify.
    #[error("invalid signature")]
    BadSignature,
    /// A JWE problem: wrong algorithm, not decryptable, or a JWE where a JWS
    /// is expected (or the reverse).
    #[error("encryption: {0}")]
    Encryption(&'static str),
    /// `exp` has passed.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not name this resource server.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is missing or has the wrong type.
    #[error("missing or invalid claims")]
    Claims,
    /// The token was revoked (by jti, session, user or client).
    #[error("token has been revoked")]
    Revoked,
    /// A DPoP-bound token presented as a bearer token.
    #[error("this token is DPoP-bound: present it with Authorization: DPoP and a proof")]
    DpopBound,
    /// A bearer token presented with `Authorization: DPoP`.
    #[error("this token is not DPoP-bound: present it as a Bearer token")]
    NotDpopBound,
    /// The DPoP proof was refused (which rule it broke).
    #[error("{0}")]
    Dpop(dpop::DpopError),
    /// The revocation list is older than the verifier accepts
    /// ([`VerifierBuilder::fail_closed_after`]): the issuer's feed has not
    /// been read for too long, so no token is accepted.
    #[error("the revocation list is out of date")]
    RevocationsStale,
}

/// Builder for [`Verifier`]; see [`Verifier::builder`].
pub struct VerifierBuilder {
    issuer: String,
    audience: String,
    jwks_url: Option<String>,
    static_jwks: Option<String>,
    #[cfg(feature = "jwe")]
    decryption_jwk: Option<String>,
    leeway: Duration,
    max_token_length: usize,
    jwks_max_age: Duration,
    min_refresh_interval: Duration,
    key_provider: Option<Arc<dyn KeyProvider>>,
    #[cfg(feature = "remote-jwks")]
    feed: Option<(String, String, String)>,
    #[cfg(feature = "remote-jwks")]
    feed_interval: Duration,
    #[cfg(feature = "remote-jwks")]
    fail_closed_after: Option<Duration>,
    revocations: Option<Arc<RevocationSet>>,
    check_audience: bool,
    verified_cache: usize,
    dpop: dpop::DpopOptions,
    dpop_nonces: Option<dpop::NonceKey>,
    dpop_base_url: Option<String>,
}

impl VerifierBuilder {
    /// Take keys from `provider` instead of fetching a JWKS.
    pub fn key_provider(mut self, provider: Arc<dyn KeyProvider>) -> Self {
        self.key_provider = Some(provider);
        self
    }

    #[cfg(feature = "remote-jwks")]
    /// Poll the issuer's revocation feed (`{issuer}/v1/revocations`) as
    /// this confidential client, and refuse revoked tokens.
    pub fn revocation_feed(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        let url = format!("{}/v1/revocations", self.issuer.trim_end_matches('/'));
        self.feed = Some((url, client_id.into(), client_secret.into()));
        self
    }

    #[cfg(feature = "remote-jwks")]
    /// The feed URL, if not `{issuer}/v1/revocations`; call after
    /// [`Self::revocation_feed`].
    pub fn revocation_feed_url(mut self, url: impl Into<String>) -> Self {
        if let Some(feed) = &mut self.feed {
            feed.0 = url.into();
        }
        self
    }

    #[cfg(feature = "remote-jwks")]
    /// How often the revocation feed is polled (default 5 s, 100 ms – 1 h).
    pub fn revocation_poll_interval(mut self, interval: Duration) -> Self {
        self.feed_interval = interval;
        self
    }

    #[cfg(feature = "remote-jwks")]
    /// Fail closed: refuse every token ([`VerifyError::RevocationsStale`],
    /// a 503 from the extractor) once the revocation feed has not been read
    /// successfully for `staleness` (at least twice the poll interval).
    /// The default is to fail open: through an issuer outage the last
    /// known list stays in force and tokens keep verifying locally.
    pub fn fail_closed_after(mut self, staleness: Duration) -> Self {
        self.fail_closed_after = Some(staleness);
        self
    }

    /// Refuse tokens listed in `set`, which the caller keeps up to date.
    pub fn revocations(mut self, set: Arc<RevocationSet>) -> Self {
        self.revocations = Some(set);
        self
    }

    /// Accept any audience: for the issuer's own checks, which compare
    /// `aud` with what each caller may see themselves. A resource server
    /// never wants this.
    pub fn any_audience(mut self) -> Self {
        self.check_audience = false;
        self
    }

    /// Fetch keys from this URL (default: `{issuer}/.well-known/jwks.json`).
    pub fn jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Use this fixed JWKS document instead of fetching one.
    pub fn static_jwks(mut self, jwks_json: impl Into<String>) -> Self {
        self.static_jwks = Some(jwks_json.into());
        self
    }

    #[cfg(feature = "jwe")]
    /// The audience's private JWK, for tokens tessera encrypts to it. With
    /// it, only JWE tokens are accepted; without it, only JWS tokens.
    pub fn decryption_key(mut self, private_jwk_json: impl Into<String>) -> Self {
        self.decryption_jwk = Some(private_jwk_json.into());
        self
    }

    /// Clock-skew allowance for `exp` and `nbf` (default 30 s, at most 5 min).
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How many verified tokens to remember (default 10,000; 0 turns the
    /// cache off). A token seen again is checked only for what can change
    /// — expiry, its key still being in the key set, revocation — instead
    /// of having its signature verified (or its JWE decrypted) again.
    /// Memory: well under 1 KiB per token.
    pub fn verified_cache(mut self, tokens: usize) -> Self {
        self.verified_cache = tokens;
        self
    }

    /// How DPoP proofs are checked ([`Verifier::verify_dpop`]): the `iat`
    /// window, the replay cache, and whether server nonces issued with
    /// `nonces` are required. Instances behind one URL that require nonces
    /// share the nonce key.
    pub fn dpop(mut self, options: dpop::DpopOptions, nonces: Option<dpop::NonceKey>) -> Self {
        self.dpop = options;
        self.dpop_nonces = nonces;
        self
    }

    /// The scheme, host and port clients address this resource server at
    /// (e.g. `https://api.example`), which DPoP proofs' `htu` must name.
    /// Set it behind a proxy: otherwise the [`Authenticated`] extractor
    /// takes them from the connection, and actix believes `Forwarded` and
    /// `X-Forwarded-*` headers whoever sent them.
    pub fn dpop_base_url(mut self, url: impl Into<String>) -> Self {
        self.dpop_base_url = Some(url.into());
        self
    }

    /// Longest token accepted, in bytes (default 8 KiB).
    pub fn max_token_length(mut self, bytes: usize) -> Self {
        self.max_token_length = bytes;
        self
    }

    /// How long fetched keys are trusted when the JWKS response carries no
    /// `max-age` (default 5 min).
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.jwks_max_age = max_age;
        self
    }

    /// Minimum time between two JWKS fetches, whatever the tokens say
    /// (default 10 s): the bound on what unknown `kid`s can make us fetch.
    pub fn min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// Validates the configuration.
    pub fn build(self) -> Result<Verifier, ConfigError> {
        if self.issuer.is_empty() || self.audience.is_empty() {
            return Err(ConfigError::Invalid(
                "issuer and audience must not be empty",
            ));
        }
        if self.dpop.require_nonce && self.dpop_nonces.is_none() {
            return Err(ConfigError::Invalid(
                "DPoP nonces are required but no nonce key is given",
            ));
        }
        if self.leeway > Duration::from_secs(300) {
            return Err(ConfigError::Invalid("leeway must be at most 5 minutes"));
        }
        if self.min_refresh_interval < Duration::from_millis(100)
            || self.min_refresh_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::Invalid(
                "min_refresh_interval must be between 100 ms and 1 hour",
            ));
        }
        if self.jwks_max_age > Duration::from_secs(86_400) {
            return Err(ConfigError::Invalid("jwks_max_age must be at most 1 day"));
        }
        #[cfg(feature = "remote-jwks")]
        if self.feed_interval < Duration::from_millis(100)
            || self.feed_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::Invalid(
                "revocation_poll_interval must be between 100 ms and 1 hour",
            ));
        }
        #[cfg(feature = "remote-jwks")]
        if let Some(staleness) = self.fail_closed_after {
            if self.feed.is_none() {
                return Err(ConfigError::Invalid(
                    "fail_closed_after needs a revocation feed (revocation_feed)",
                ));
            }
            if staleness < self.feed_interval * 2 {
                return Err(ConfigError::Invalid(
                    "fail_closed_after must be at least twice the revocation poll interval",
                ));
            }
        }
        let keys = match (self.static_jwks, self.jwks_url) {
            _ if self.key_provider.is_some() => {
                jwks::KeySource::Provider(self.key_provider.expect("checked"))
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "give either a static JWKS or a JWKS URL, not both",
                ));
            }
            (Some(json), None) => {
                let keys = jwks::parse_set(json.as_bytes())?;
                if keys.is_empty() {
                    return Err(ConfigError::Invalid("the static JWKS has no ES256 key"));
                }
                jwks::KeySource::Static(keys)
            }
            (None, url) => {
                let url = url.unwrap_or_else(|| {
                    format!(
                        "{}/.well-known/jwks.json",
                        self.issuer.trim_end_matches('/')
                    )
                });
                #[cfg(feature = "remote-jwks")]
                {
                    jwks::KeySource::remote(url, self.jwks_max_age, self.min_refresh_interval)
                }
                #[cfg(not(feature = "remote-jwks"))]
                {
                    let _ = url;
                    return Err(ConfigError::Invalid(
                        "no key source: give a static JWKS or a key provider (fetching the JWKS needs the remote-jwks feature)",
                    ));
                }
            }
        };
        #[cfg(feature = "jwe")]
        let decryption = self
            .decryption_jwk
            .map(|j| jwe::Decryption::from_jwk_json(&j))
            .transpose()?;

        #[cfg(feature = "remote-jwks")]
        let revocations = match (self.revocations, &self.feed) {
            (Some(set), _) => Some(set),
            (None, Some(_)) => Some(Arc::new(RevocationSet::new())),
            (None, None) => None,
        };
        #[cfg(not(feature = "remote-jwks"))]
        let revocations = self.revocations;
        #[cfg(feature = "remote-jwks")]
        let feed = self.feed.map(|(url, id, secret)| {
            Arc::new(feed::FeedPoller::new(
                url,
                id,
                secret,
                self.feed_interval,
                revocations.clone().expect("set exists with a feed"),
            ))
        });
        Ok(Verifier {
            keys,
            #[cfg(feature = "jwe")]
            decryption,
            audience: self.check_audience.then_some(self.audience),
            issuer: self.issuer,
            leeway: self.leeway.as_secs() as i64,
            max_token_length: self.max_token_length,
            revocations,
            #[cfg(feature = "remote-jwks")]
            feed,
            #[cfg(feature = "remote-jwks")]
            fail_closed_after: self.fail_closed_after,
            verified: cache::VerifiedCache::new(self.verified_cache),
            dpop: dpop::DpopValidator::new(self.dpop, self.dpop_nonces),
            dpop_base_url: self.dpop_base_url,
        })
    }
}

/// Verifies tessera access tokens for one audience.
pub struct Verifier {
    keys: jwks::KeySource,
    #[cfg(feature = "jwe")]
    decryption: Option<jwe::Decryption>,
    issuer: String,
    /// `None`: any audience (the issuer's own checks).
    audience: Option<String>,
    leeway: i64,
    max_token_length: usize,
    revocations: Option<Arc<RevocationSet>>,
    #[cfg(feature = "remote-jwks")]
    feed: Option<Arc<feed::FeedPoller>>,
    #[cfg(feature = "remote-jwks")]
    fail_closed_after: Option<Duration>,
    verified: Option<cache::VerifiedCache>,
    dpop: dpop::DpopValidator,
    dpop_base_url: Option<String>,
}

impl Verifier {
    /// A verifier for tokens from `issuer` (exactly as in `iss`) meant for
    /// `audience`, with safe defaults.
    pub fn builder(issuer: impl Into<String>, audience: impl Into<String>) -> VerifierBuilder {
        VerifierBuilder {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            static_jwks: None,
            #[cfg(feature = "jwe")]
            decryption_jwk: None,
            leeway: Duration::from_secs(30),
            max_token_length: 8 * 1024,
            jwks_max_age: Duration::from_secs(300),
            min_refresh_interval: Duration::from_secs(10),
            key_provider: None,
            #[cfg(feature = "remote-jwks")]
            feed: None,
            #[cfg(feature = "remote-jwks")]
            feed_interval: Duration::from_secs(5),
            #[cfg(feature = "remote-jwks")]
            fail_closed_after: None,
            revocations: None,
            check_audience: true,
            verified_cache: 10_000,
            dpop: dpop::DpopOptions::default(),
            dpop_nonces: None,
            dpop_base_url: None,
        }
    }

    #[cfg(feature = "remote-jwks")]
    /// Polls the revocation feed now (it is also polled in the background);
    /// returns the number of new entries. Without a feed, does nothing.
    pub async fn poll_revocations(&self) -> Result<usize, FeedError> {
        match &self.feed {
            Some(feed) => feed.poll().await,
            None => Ok(0),
        }
    }

    #[cfg(feature = "remote-jwks")]
    /// How long ago the revocation list was last read from the feed to its
    /// end (`None`: never, or no feed): export it as a metric and alert on it.
    pub fn revocation_feed_age(&self) -> Option<Duration> {
        self.feed.as_ref().and_then(|f| f.age())
    }

    /// Verifies a bearer `token` and returns its claims. A DPoP-bound token
    /// (one with `cnf.jkt`) is refused: without its proof it may be stolen.
    pub async fn verify(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        let claims = self.verify_ignoring_binding(token).await?;
        if claims.cnf.is_some() {
            return Err(VerifyError::DpopBound);
        }
        Ok(claims)
    }

    /// Verifies a DPoP-bound `token` presented as `Authorization: DPoP`
    /// with `proof` (the `DPoP` header) on a request with this `method` and
    /// absolute `url` (RFC 9449 §7): the proof passes every check of
    /// [`dpop`], carries the token's hash, and is signed by the key the
    /// token is bound to. An unbound token is refused here.
    pub async fn verify_dpop(
        &self,
        token: &str,
        proof: &str,
        method: &str,
        url: &str,
    ) -> Result<AccessClaims, VerifyError> {
        let claims = self.verify_ignoring_binding(token).await?;
        let Some(bound) = &claims.cnf else {
            return Err(VerifyError::NotDpopBound);
        };
        let request = dpop::Request {
            method,
            url,
            access_token: Some(token),
            now: unix_now(),
        };
        let proof = self
            .dpop
            .check(proof, &request)
            .map_err(VerifyError::Dpop)?;
        // Thumbprints are public; equality leaks nothing.
        if proof.jkt != bound.jkt {
            return Err(VerifyError::Dpop(dpop::DpopError::Jwk(
                "not the key the token is bound to",
            )));
        }
        Ok(claims)
    }

    /// Checks a DPoP proof that comes without an access token (the issuer's
    /// own form endpoints) for `method` on `path` under the base URL set
    /// with [`VerifierBuilder::dpop_base_url`].
    pub fn check_dpop_proof(
        &self,
        proof: &str,
        method: &str,
        path: &str,
    ) -> Result<dpop::Proof, dpop::DpopError> {
        let base = self.dpop_base_url.as_deref().unwrap_or_default();
        let url = format!("{}{path}", base.trim_end_matches('/'));
        self.dpop.check(
            proof,
            &dpop::Request {
                method,
                url: &url,
                access_token: None,
                now: unix_now(),
            },
        )
    }

    /// The public base URL set with [`VerifierBuilder::dpop_base_url`].
    pub fn dpop_base_url(&self) -> Option<&str> {
        self.dpop_base_url.as_deref()
    }

    /// A nonce for the `DPoP-Nonce` header, if nonces are configured.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop.nonce(unix_now())
    }

    /// The signed token (JWS) inside `token`: decrypted with this
    /// verifier's key if it is a JWE for this audience, else `token` itself.
    /// For passing a user's token on, e.g. in an RFC 8693 token exchange
    /// (the issuer takes the signed token: only this audience can open the
    /// JWE). Decryption only: [`Verifier::verify`] the token as well.
    #[cfg(feature = "jwe")]
    pub fn signed_token(&self, token: &str) -> Result<String, VerifyError> {
        match (token.split('.').count(), self.decryption.as_ref()) {
            (3, _) => Ok(token.to_owned()),
            (5, Some(d)) => d.decrypt(token),
            (5, None) => Err(VerifyError::Encryption(
                "an encrypted token, and no decryption key is configured",
            )),
            _ => Err(VerifyError::Malformed("wrong number of segments")),
        }
    }

    /// Verifies `token` whatever it is bound to: for the issuer's
    /// introspection and revocation, which report or end a token without
    /// accepting it as a credential. Resource servers use [`Verifier::verify`]
    /// or [`Verifier::verify_dpop`].
    pub async fn verify_ignoring_binding(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        if token.len() > self.max_token_length {
            return Err(VerifyError::TooLong);
        }
        let now = unix_now();
        let cached = self.verified.as_ref().map(|c| (c, cache::key(token)));
        let hit = cached.as_ref().and_then(|(c, key)| c.get(key));
        let (claims, kid) = match hit {
            Some(hit) => {
                // Only what can have changed since the token was verified.
                let still_valid = match self.check_times(&hit.claims, now) {
                    Ok(()) => self.keys.key(&hit.kid).await.map(drop),
                    Err(e) => Err(e),
                };
                if let Err(e) = still_valid {
                    if let Some((c, key)) = &cached {
                        c.remove(key);
                    }
                    return Err(e);
                }
                (hit.claims.clone(), hit.kid.clone())
            }
            None => {
                let (claims, kid) = self.verify_uncached(token, now).await?;
                if let Some((c, key)) = cached {
                    let entry = cache::Verified {
                        claims: claims.clone(),
                        kid: kid.clone(),
                    };
                    c.insert(key, entry);
                }
                (claims, kid)
            }
        };
        #[cfg(feature = "remote-jwks")]
        if let Some(feed) = &self.feed {
            feed.ensure_started().await;
            if let Some(staleness) = self.fail_closed_after
                && feed.age().is_none_or(|age| age > staleness)
            {
                return Err(VerifyError::RevocationsStale);
            }
        }
        if self
            .revocations
            .as_ref()
            .is_some_and(|set| set.is_revoked(&claims) || set.is_key_revoked(&kid))
        {
            return Err(VerifyError::Revoked);
        }
        Ok(claims)
    }

    /// Every check but revocation; returns the claims and the signing `kid`.
    async fn verify_uncached(
        &self,
        token: &str,
        now: i64,
    ) -> Result<(AccessClaims, String), VerifyError> {
        if !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(VerifyError::Malformed("not base64url segments"));
        }
        let parts = token.split('.').count();
        #[cfg(feature = "jwe")]
        let decryption = self.decryption.as_ref();
        // Built without JWE support: every token must be a JWS.
        #[cfg(not(feature = "jwe"))]
        let decryption: Option<&std::convert::Infallible> = None;
        let jws = match (parts, decryption) {
            (3, None) => std::borrow::Cow::Borrowed(token),
            #[cfg(feature = "jwe")]
            (5, Some(d)) => std::borrow::Cow::Owned(d.decrypt(token)?),
            #[cfg(not(feature = "jwe"))]
            (5, Some(never)) => match *never {},
            (5, None) => {
                return Err(VerifyError::Encryption(
                    "an encrypted token where a signed one is expected",
                ));
            }
            (3, Some(_)) => {
                return Err(VerifyError::Encryption(
                    "a signed token where an encrypted one is expected",
                ));
            }
            _ => return Err(VerifyError::Malformed("wrong number of segments")),
        };
        self.verify_jws(&jws, now).await
    }

    async fn verify_jws(&self, jws: &str, now: i64) -> Result<(AccessClaims, String), VerifyError> {
        let mut parts = jws.split('.');
        let (Some(h), Some(payload), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("wrong number of segments"));
        };
        let kid = header::check_jws(h)?;
        // r and s in [1, n−1] (CVE-2022-21449) before the library sees them.
        header::es256_signature(sig)?;
        let key = self.keys.key(&kid).await?;
        let signing_input = &jws[..h.len() + 1 + payload.len()];
        if !key.verifies(signing_input.as_bytes(), sig) {
            return Err(VerifyError::BadSignature);
        }
        let payload = header::b64(payload, "undecodable segment")?;
        let claims: AccessClaims =
            serde_json::from_slice(&payload).map_err(|_| VerifyError::Claims)?;
        self.check_times(&claims, now)?;
        if claims.iss != self.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        if let Some(audience) = &self.audience
            && !claims.aud.contains(audience)
        {
            return Err(VerifyError::WrongAudience);
        }
        Ok((claims, kid))
    }

    /// `exp` and `nbf` with leeway; `iat` in the future is refused too,
    /// since it would put the token after a later "revoke everything
    /// issued before" line (sub and client revocations).
    fn check_times(&self, claims: &AccessClaims, now: i64) -> Result<(), VerifyError> {
        if claims.exp < now - self.leeway {
            return Err(VerifyError::Expired);
        }
        if claims.nbf > now + self.leeway || claims.iat > now + self.leeway {
            return Err(VerifyError::NotYetValid);
        }
        Ok(())
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
