//! Client authentication (RFC 6749 §2.3), shared by every endpoint a
//! client calls: token, revoke, introspect, logout and the feed.
//!
//! Client records are cached in memory: every token and introspection
//! request authenticates a client, and a database round trip for a record
//! that changes only when an administrator acts would be most of the cost
//! of `client_credentials` and introspection. The cache is exact about what
//! matters: a client is only ever changed by being disabled, which adds a
//! client entry to the revocation list, which moves
//! [`RevocationSet::client_generation`]; entries read under an older
//! generation are read again. So a disabled client is refused on every
//! instance as soon as that instance sees the revocation (under a second,
//! like any revocation). Unknown ids are never cached (a new client works
//! at once), and entries are re-read after a minute in any case.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::client::SecretDigester;
use crate::oauth::{ErrorCode, OAuthError, invalid_request};
use crate::store::{Client, Store};
use crate::verify::RevocationSet;

/// Longest a cached client record is used without re-reading it.
const CLIENT_TTL: Duration = Duration::from_secs(60);
/// Most client records cached (beyond it the least used are evicted).
const MAX_CACHED_CLIENTS: usize = 10_000;

#[derive(Clone)]
struct Cached {
    client: Arc<Client>,
    generation: u64,
    read_at: Instant,
}

/// Checks client credentials against the store.
pub struct ClientAuthenticator {
    store: Arc<dyn Store>,
    digester: SecretDigester,
    revocations: Arc<RevocationSet>,
    cache: quick_cache::sync::Cache<String, Cached>,
}

impl ClientAuthenticator {
    /// Checks secrets with `digester`; `revocations` tells when cached
    /// client records must be re-read.
    pub fn new(
        store: Arc<dyn Store>,
        digester: SecretDigester,
        revocations: Arc<RevocationSet>,
    ) -> ClientAuthenticator {
        ClientAuthenticator {
            store,
            digester,
            revocations,
            cache: quick_cache::sync::Cache::new(MAX_CACHED_CLIENTS),
        }
    }

    /// The client `id`, from the cache if it is current there.
    pub async fn client(&self, id: &str) -> crate::store::StoreResult<Option<Arc<Client>>> {
        // Read before the query: a disable that lands during the query
        // moves the generation past what the entry records.
        let generation = self.revocations.client_generation();
        if let Some(c) = self.cache.get(id)
            && c.generation == generation
            && c.read_at.elapsed() < CLIENT_TTL
        {
            return Ok(Some(c.client));
        }
        let read_at = Instant::now();
        let client = self.store.client_by_id(id).await?.map(Arc::new);
        match &client {
            Some(c) => self.cache.insert(
                id.to_owned(),
                Cached {
                    client: c.clone(),
                    generation,
                    read_at,
                },
            ),
            None => {
                self.cache.remove(id);
            }
        }
        Ok(client)
    }

    /// Drops the cached record of `id` (after a change made here; other
    /// instances re-read it within [`CLIENT_TTL`]).
    pub fn forget(&self, id: &str) {
        self.cache.remove(id);
    }

    /// The secret digester (to issue new secrets).
    pub fn digester(&self) -> &SecretDigester {
        &self.digester
    }

    /// Exactly one authentication method: `basic` (from the Authorization
    /// header, already form-decoded), `client_secret` in `params`, or
    /// `client_id` alone for a public client. Confidential clients must
    /// prove their secret; public clients must not send one.
    pub async fn authenticate(
        &self,
        params: &HashMap<String, String>,
        basic: Option<(String, String)>,
    ) -> Result<Arc<Client>, OAuthError> {
        let used_basic = basic.is_some();
        let (id, secret) = match (basic, params.get("client_secret")) {
            (Some(_), Some(_)) => {
                return Err(invalid_request(
                    "use one client authentication method, not both Basic and client_secret",
                ));
            }
            (Some((id, secret)), None) => {
                if params
                    .get("client_id")
                    .is_some_and(|body_id| *body_id != id)
                {
                    return Err(invalid_request(
                        "client_id in the body differs from the Basic credentials",
                    ));
                }
                (id, Some(secret))
            }
            (None, secret) => {
                // RFC 6749 §5.2: no client authentication at all is invalid_client.
                let id = params.get("client_id").ok_or_else(|| {
                    OAuthError::new(
                        ErrorCode::InvalidClient,
                        "client authentication is required (HTTP Basic, client_secret_post, or client_id for public clients)",
                    )
                })?;
                (id.clone(), secret.cloned())
            }
        };
        let failed = || OAuthError {
            code: ErrorCode::InvalidClient,
            description: "client authentication failed".into(),
            basic_challenge: used_basic,
            retry_after: None,
        };
        let client = match self.client(&id).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "client lookup failed");
                return Err(OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "try again shortly",
                ));
            }
        };
        let Some(client) = client.filter(|c| !c.disabled) else {
            // Same work as a wrong secret, so unknown ids are not distinguishable by time.
            if let Some(s) = &secret {
                let _ = self.digester.verify(&[0u8; 32], s);
            }
            return Err(failed());
        };
        match (&client.secret_digest, secret) {
            (Some(digest), Some(secret)) if self.digester.verify(digest, &secret) => Ok(client),
            (None, None) => Ok(client),
            _ => Err(failed()),
        }
    }

    /// Whether `client` (authenticated, with HTTP Basic if `used_basic`)
    /// may introspect and read the feed: a confidential client registered
    /// with `--resource-server`. Introspection and the feed reveal more than
    /// other clients may see.
    pub fn require_resource_server(
        &self,
        client: &Client,
        used_basic: bool,
    ) -> Result<(), OAuthError> {
        if !client.confidential {
            return Err(OAuthError {
                code: ErrorCode::InvalidClient,
                description: "this endpoint is for confidential clients (resource servers)".into(),
                basic_challenge: used_basic,
                retry_after: None,
            });
        }
        if !client.resource_server {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                format!(
                    "client {} is not a resource server: register it with --resource-server to introspect tokens and read the revocation feed",
                    client.id
                ),
            ));
        }
        Ok(())
    }
}
