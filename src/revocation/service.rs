//! What clients and administrators do to tokens: revoke (RFC 7009), log out,
//! introspect (RFC 7662), read the feed, and the admin revocations. Free of
//! HTTP types; `src/http/` parses and renders.

use std::sync::Arc;

use serde::Serialize;

use super::{RevocationCache, feed_entry, relevant_until};
use crate::audit::{Action, Auditor, Event, client_actor};
use crate::store::PresentedRefresh;
use crate::store::{Client, Cutoff, JtiOwner, JtiRevocation, Store, StoreError};
use crate::tokens::refresh::RefreshTokens;
use crate::verify::{AccessClaims, FeedPage, Verifier, VerifyError};

/// Why a revocation request was refused.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// The token belongs to another client (RFC 7009 §2.1).
    #[error("the token was not issued to this client")]
    NotYourToken,
    /// The thing to revoke does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A DPoP-bound refresh token without a proof by its key: a copied
    /// token alone cannot end its session.
    #[error("this refresh token is bound to a DPoP key: send a DPoP proof signed by that key")]
    DpopProofRequired,
    /// The database failed; nothing was revoked.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An RFC 7662 introspection answer: `active` and, only when active, the
/// token's facts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Introspection {
    /// Whether the token is valid now.
    pub active: bool,
    /// `Bearer` (or `DPoP` when bound) for access tokens, `refresh_token`
    /// for refresh tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_type: Option<&'static str>,
    /// Issuer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Subject (user id, or client id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Audience(s).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<String>>)]
    pub aud: Option<crate::verify::Audience>,
    /// Granted scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The client the token was issued to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Expiry (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exp: Option<i64>,
    /// Issued at (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before (Unix seconds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token id (access tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// Session id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// The key a DPoP-bound access token is bound to (RFC 9449 §6.2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<crate::verify::Confirmation>,
    /// The client acting for `sub` (RFC 8693 §4.1), for exchanged tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub act: Option<crate::verify::Actor>,
}

impl Introspection {
    fn inactive() -> Introspection {
        Introspection::default()
    }

    fn access(c: AccessClaims) -> Introspection {
        Introspection {
            active: true,
            token_type: Some(if c.cnf.is_some() { "DPoP" } else { "Bearer" }),
            iss: Some(c.iss),
            sub: Some(c.sub),
            aud: Some(c.aud),
            scope: Some(c.scope),
            client_id: Some(c.client_id),
            exp: Some(c.exp),
            iat: Some(c.iat),
            nbf: Some(c.nbf),
            jti: Some(c.jti),
            sid: c.sid,
            cnf: c.cnf,
            act: c.act,
        }
    }
}

/// Revocation and introspection.
pub struct Revoker {
    store: Arc<dyn Store>,
    cache: Arc<RevocationCache>,
    /// Verifies our own tokens (keys from the key ring, any audience, the
    /// revocation list applied).
    refresh_tokens: RefreshTokens,
    verifier: Arc<Verifier>,
    auditor: Auditor,
    issuer: String,
    access_ttl: i64,
    /// Full feed pages by (cursor, limit), as JSON (see [`Revoker::feed_json`]).
    feed_pages: quick_cache::sync::Cache<(i64, i64), std::sync::Arc<[u8]>>,
}

/// Full feed pages kept in memory (at most about 114 KB each).
const FEED_PAGES_CACHED: usize = 32;

/// Largest feed page.
pub const MAX_FEED_PAGE: i64 = 1000;

/// Access tokens of one session (or one client's own) revoked one by one,
/// relevant at once, before they are folded into one entry: the session is
/// revoked, or the client's tokens issued so far. Bounds what one client
/// can add to every instance's revocation list and to the feed.
pub const FOLD_AFTER: i64 = 64;

impl Revoker {
    /// Entries in this instance's revocation list.
    pub fn list_len(&self) -> usize {
        self.cache.set().len()
    }

    /// A revoker over `store`, keeping `cache` current.
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<RevocationCache>,
        refresh_tokens: RefreshTokens,
        verifier: Arc<Verifier>,
        auditor: Auditor,
        issuer: String,
        access_ttl: i64,
    ) -> Revoker {
        Revoker {
            store,
            cache,
            refresh_tokens,
            verifier,
            auditor,
            issuer,
            access_ttl,
            feed_pages: quick_cache::sync::Cache::new(FEED_PAGES_CACHED),
        }
    }

    /// The verifier of our own access tokens (any audience, revocations
    /// applied), for endpoints that authenticate requests with them.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Verifies one of our access tokens, revocations included.
    pub async fn verify_access_token(&self, token: &str) -> Result<AccessClaims, VerifyError> {
        self.verifier.verify(token).await
    }

    /// Brings this instance's revocation list up to date now (after a
    /// revocation made outside the revoker, such as a key retirement).
    pub async fn refresh_list(&self) {
        self.cache.refresh_now().await;
    }

    /// The issuer (the admin API's audience).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    fn until(&self, now: i64) -> i64 {
        relevant_until(now, self.access_ttl)
    }

    /// RFC 7009: a refresh token revokes its session, an access token its
    /// `jti`. Unknown, malformed and expired tokens are not an error.
    /// `jkt` is the key of the request's DPoP proof, which a bound
    /// refresh token needs.
    pub async fn revoke(
        &self,
        client: &Client,
        token: &str,
        jkt: Option<&str>,
        network: Option<String>,
        now: i64,
    ) -> Result<(), RevokeError> {
        if let Some(presented) = self.refresh_tokens.parse(token) {
            if !self.refresh_tokens.binding_allows(&presented, jkt) {
                return Err(RevokeError::DpopProofRequired);
            }
            return self
                .end_session(
                    client,
                    &presented.to_store(),
                    "revoked by client",
                    now,
                    |session| {
                        Event::new(client_actor(&client.id), Action::SessionRevoked)
                            .subject(session.id)
                            .detail("sub", session.user_id.to_string())
                            .detail("via", "revocation_endpoint")
                            .network(network)
                    },
                )
                .await;
        }
        let claims = match self.verifier.verify_ignoring_binding(token).await {
            Ok(c) => c,
            // Not ours, expired, or already revoked: nothing to do.
            Err(_) => return Ok(()),
        };
        if claims.client_id != client.id {
            return Err(RevokeError::NotYourToken);
        }
        // An exchanged token (`act`) belongs to its actor, not to the
        // user's session: many revocations by a service fold into the
        // service's own tokens, never into the session of a user it acts for.
        let owner = match claims.sid.as_deref().map(uuid::Uuid::parse_str) {
            Some(Ok(sid)) if claims.act.is_none() => JtiOwner::Session(sid),
            _ => JtiOwner::Client(client.id.clone()),
        };
        let outcome = self
            .store
            .revoke_jti(
                &claims.jti,
                now,
                claims.exp + super::SLACK,
                Some(&owner),
                FOLD_AFTER,
            )
            .await?;
        if outcome != JtiRevocation::AlreadyListed {
            self.cache.refresh_now().await;
            let mut event = Event::new(client_actor(&client.id), Action::TokenRevoked)
                .subject(&claims.jti)
                .detail("sub", claims.sub)
                .detail("via", "revocation_endpoint")
                .network(network);
            if outcome == JtiRevocation::Folded {
                event = event.detail(
                    "folded_into",
                    match &owner {
                        JtiOwner::Session(sid) => format!("sid:{sid}"),
                        JtiOwner::Client(id) => format!("client:{id}"),
                    },
                );
            }
            self.auditor.record_durable(event).await;
        }
        Ok(())
    }

    /// Ends the session of `refresh_token` (the caller's own). Unknown or
    /// already ended sessions are not an error.
    pub async fn logout(
        &self,
        client: &Client,
        refresh_token: &str,
        jkt: Option<&str>,
        network: Option<String>,
        now: i64,
    ) -> Result<(), RevokeError> {
        let Some(presented) = self.refresh_tokens.parse(refresh_token) else {
            return Ok(());
        };
        if !self.refresh_tokens.binding_allows(&presented, jkt) {
            return Err(RevokeError::DpopProofRequired);
        }
        self.end_session(client, &presented.to_store(), "logout", now, |session| {
            Event::new(crate::audit::user_actor(session.user_id), Action::Logout)
                .subject(session.id)
                .detail("client_id", client.id.clone())
                .network(network)
        })
        .await
    }

    /// Revokes the session of the presented refresh token if it was issued
    /// to `client`, and audits `event` if it was live. Unknown tokens are
    /// not an error.
    async fn end_session(
        &self,
        client: &Client,
        presented: &PresentedRefresh,
        reason: &str,
        now: i64,
        event: impl FnOnce(&crate::store::Session) -> Event,
    ) -> Result<(), RevokeError> {
        let Some(info) = self.store.refresh_token(presented).await? else {
            return Ok(());
        };
        if info.session.client_id != client.id {
            return Err(RevokeError::NotYourToken);
        }
        if self
            .store
            .revoke_session(info.session.id, now, reason, self.until(now))
            .await?
        {
            self.cache.refresh_now().await;
            self.auditor.record_durable(event(&info.session)).await;
        }
        Ok(())
    }

    /// RFC 7662, for resource servers. An access token is active if it
    /// verifies (signature, expiry, issuer), is not revoked, and is meant
    /// for one of the caller's audiences; the issuer itself (the admin
    /// API's audience) is never one of a resource server's. A refresh token
    /// is active only for the client it was issued to. Encrypted access
    /// tokens cannot be read by the issuer and are reported inactive.
    pub async fn introspect(
        &self,
        client: &Client,
        token: &str,
        now: i64,
    ) -> Result<Introspection, StoreError> {
        if let Some(presented) = self.refresh_tokens.parse(token) {
            let Some(info) = self.store.refresh_token(&presented.to_store()).await? else {
                return Ok(Introspection::inactive());
            };
            let s = &info.session;
            if info.state != crate::store::TokenState::Active
                || !s.is_live(now)
                || info.user_disabled
                || s.client_id != client.id
            {
                return Ok(Introspection::inactive());
            }
            return Ok(Introspection {
                active: true,
                token_type: Some("refresh_token"),
                iss: Some(self.issuer.clone()),
                sub: Some(s.user_id.to_string()),
                scope: Some(s.scope.clone()),
                client_id: Some(s.client_id.clone()),
                exp: Some(s.idle_expires_at),
                iat: info.created_at,
                sid: Some(s.id.to_string()),
                ..Introspection::default()
            });
        }
        // Introspection reports a DPoP-bound token with its `cnf`; the
        // resource server checks the proof.
        let Ok(claims) = self.verifier.verify_ignoring_binding(token).await else {
            return Ok(Introspection::inactive());
        };
        if !crate::tokens::policy::addressed_to(client, &claims.aud, &self.issuer) {
            return Ok(Introspection::inactive());
        }
        Ok(Introspection::access(claims))
    }

    /// A page of the revocation feed after `since`.
    pub async fn feed(&self, since: i64, limit: i64, now: i64) -> Result<FeedPage, StoreError> {
        let limit = limit.clamp(1, MAX_FEED_PAGE);
        let rows = self.store.revocations_since(since, now, limit).await?;
        let next = rows.last().map_or(since, |r| r.id);
        let has_more = rows.len() as i64 == limit;
        Ok(FeedPage {
            revocations: rows.into_iter().map(feed_entry).collect(),
            next_cursor: next.to_string(),
            has_more,
        })
    }

    /// [`Self::feed`] as JSON. A full page (`has_more`) never changes once
    /// read: entries are appended after it in cursor order, and what leaves
    /// it later (purged or folded entries) is harmless to keep, since
    /// readers drop what is no longer relevant. So full pages are served
    /// from memory: a resource server catching up, or many reading the same
    /// pages, cost one query per page, not one per request. The tail page
    /// is always read.
    pub async fn feed_json(
        &self,
        since: i64,
        limit: i64,
        now: i64,
    ) -> Result<std::sync::Arc<[u8]>, StoreError> {
        let limit = limit.clamp(1, MAX_FEED_PAGE);
        if let Some(page) = self.feed_pages.get(&(since, limit)) {
            return Ok(page);
        }
        let page = self.feed(since, limit, now).await?;
        let json: std::sync::Arc<[u8]> = serde_json::to_vec(&page)
            .expect("a feed page serializes")
            .into();
        if page.has_more {
            self.feed_pages.insert((since, limit), json.clone());
        }
        Ok(json)
    }

    /// Admin: revokes one session.
    pub async fn revoke_session(
        &self,
        actor: &str,
        sid: uuid::Uuid,
        now: i64,
    ) -> Result<(), RevokeError> {
        let Some(session) = self.store.session(sid).await? else {
            return Err(RevokeError::NotFound("session"));
        };
        if self
            .store
            .revoke_session(sid, now, "revoked by an administrator", self.until(now))
            .await?
        {
            self.cache.refresh_now().await;
        }
        self.auditor
            .record_durable(
                Event::new(actor, Action::SessionRevoked)
                    .subject(sid)
                    .detail("sub", session.user_id.to_string()),
            )
            .await;
        Ok(())
    }

    /// Admin: every session and token of a user ("logout everywhere").
    pub async fn revoke_user(
        &self,
        actor: &str,
        user: uuid::Uuid,
        now: i64,
    ) -> Result<u64, RevokeError> {
        let n = self
            .store
            .revoke_user_sessions(
                user,
                Some(Cutoff::Commit),
                now,
                "logout everywhere",
                self.until(now),
            )
            .await?;
        self.cache.refresh_now().await;
        self.auditor
            .record_durable(
                Event::new(actor, Action::UserSessionsRevoked)
                    .subject(user)
                    .detail("sessions", n),
            )
            .await;
        Ok(n)
    }

    /// Admin: every token issued to a client so far.
    pub async fn revoke_client(
        &self,
        actor: &str,
        client_id: &str,
        now: i64,
    ) -> Result<u64, RevokeError> {
        if self.store.client_by_id(client_id).await?.is_none() {
            return Err(RevokeError::NotFound("client"));
        }
        let n = self
            .store
            .revoke_client_tokens(
                client_id,
                Cutoff::Commit,
                now,
                "client revoked by an administrator",
                self.until(now),
            )
            .await?;
        self.cache.refresh_now().await;
        self.auditor
            .record_durable(
                Event::new(actor, Action::ClientTokensRevoked)
                    .subject(client_id)
                    .detail("sessions", n),
            )
            .await;
        Ok(n)
    }

    /// Admin: one access token by `jti` (its expiry unknown: listed for a
    /// full token lifetime).
    pub async fn revoke_jti(&self, actor: &str, jti: &str, now: i64) -> Result<(), RevokeError> {
        let outcome = self
            .store
            .revoke_jti(jti, now, self.until(now), None, FOLD_AFTER)
            .await?;
        if outcome == JtiRevocation::Listed {
            self.cache.refresh_now().await;
        }
        self.auditor
            .record_durable(Event::new(actor, Action::TokenRevoked).subject(jti))
            .await;
        Ok(())
    }
}
