//! The key ring: which key signs now, which keys the JWKS publishes, and
//! rotation that never breaks a verifier caching the JWKS.
//!
//! Life of a key: it is *published* (in the JWKS) from `created_at`, *signs*
//! from `activate_at` (at least one JWKS cache lifetime later, so every
//! verifier has seen it before the first token it signs), stops signing when
//! its successor activates, and is *retired* from the JWKS only after the last
//! token it signed has expired. The very first key signs at once: no verifier
//! can have cached an older JWKS.
//!
//! Every instance re-reads the keys from the database every second, so a
//! rotation made by one instance (or by `tessera keys rotate`) reaches all of
//! them within a second, and a scheduled activation happens on time.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use serde::Serialize;

use super::master::{MasterKey, OpenError};
use super::signing::{PublicJwk, SigningKeyPair};
use crate::store::{NewSigningKey, SigningKey, Store, StoreError};

/// Timing rules for publication, activation and retirement.
#[derive(Clone, Copy, Debug)]
pub struct RotationPolicy {
    /// `Cache-Control: max-age` of the JWKS; a new key waits this long (plus
    /// a margin) between publication and first signature.
    pub jwks_max_age: Duration,
    /// Lifetime of the access tokens the keys sign.
    pub access_token_ttl: Duration,
    /// Automatic rotation period; `None` disables it.
    pub rotation_period: Option<Duration>,
}

/// Slack added to every schedule for clock skew between instances and verifiers.
const MARGIN: i64 = 60;

impl RotationPolicy {
    /// When a key added at `now` may start signing (first key: at once).
    fn activation(&self, now: i64, first: bool) -> i64 {
        if first {
            now
        } else {
            now + secs(self.jwks_max_age) + MARGIN
        }
    }

    /// When a key that stops signing at `deactivated_at` may leave the JWKS.
    fn retirement(&self, deactivated_at: i64) -> i64 {
        deactivated_at + secs(self.access_token_ttl) + MARGIN
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

/// Key-ring failures.
#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored private key could not be decrypted (wrong master key or tampering).
    #[error("signing key {kid}: {source}")]
    Sealed {
        /// The key.
        kid: String,
        /// Why it did not open.
        source: OpenError,
    },
    /// A stored private key decrypted but is not a valid ES256 key.
    #[error("signing key {kid} is not a valid ES256 key: {message}")]
    Invalid {
        /// The key.
        kid: String,
        /// Details.
        message: String,
    },
    /// A key with this kid already exists.
    #[error("key {0} is already in the key ring")]
    Duplicate(String),
    /// No published key has this kid.
    #[error("no published signing key has kid {0} (tessera keys list shows them)")]
    Unknown(String),
}

/// What an emergency retirement did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Retired {
    /// The key retired.
    pub kid: String,
    /// The key that signs from now on, if the retired one was signing.
    pub successor: Option<String>,
    /// Until when the retired key's tokens are listed as revoked (after
    /// that none of them can still be valid).
    pub revoked_until: i64,
}

/// One key's state, for `tessera keys list` and the admin API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyStatus {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// `next` (published, not yet signing), `active`, or `retiring`.
    pub state: &'static str,
    /// Unix seconds: published from.
    pub created_at: i64,
    /// Unix seconds: signs from.
    pub activate_at: i64,
    /// Unix seconds: stopped (or stops) signing.
    pub deactivated_at: Option<i64>,
    /// Unix seconds: leaves the JWKS.
    pub retire_at: Option<i64>,
    /// Where the private key is: `database` (sealed under the master key)
    /// or `pkcs11` (in a token; the database holds only its URI).
    pub held_in: &'static str,
}

fn held_in(pair: Option<&SigningKeyPair>) -> &'static str {
    match pair.is_some_and(SigningKeyPair::in_token) {
        true => "pkcs11",
        false => "database",
    }
}

/// An immutable snapshot: swapped whole on every change.
struct Snapshot {
    pairs: HashMap<String, Arc<SigningKeyPair>>,
    rows: Vec<SigningKey>,
    jwks: Arc<[u8]>,
    /// The published keys as verification keys, for introspection.
    verifying: HashMap<String, Arc<crate::verify::VerifyingKey>>,
}

/// The signing keys of this issuer.
pub struct KeyRing {
    store: Arc<dyn Store>,
    master: MasterKey,
    policy: RotationPolicy,
    current: ArcSwap<Snapshot>,
    /// The signer last reported in the log, to announce changes once.
    announced: std::sync::Mutex<Option<String>>,
    /// One refresh at a time: a refresh that read the rows before a change
    /// committed must not store its snapshot after one that read them
    /// after (an emergency retirement would come undone for a second).
    refreshing: tokio::sync::Mutex<()>,
    /// The PKCS#11 module of keys held in a token, if one is configured.
    hsm: Option<Arc<super::pkcs11::Hsm>>,
}

#[derive(Serialize)]
struct Jwks<'a> {
    keys: Vec<&'a PublicJwk>,
}

/// What a signing key's sealed private key is bound to.
pub fn seal_context(kid: &str) -> Vec<u8> {
    format!("signing_key:{kid}").into_bytes()
}

impl crate::verify::KeyProvider for KeyRing {
    fn verifying_key(&self, kid: &str) -> Option<Arc<crate::verify::VerifyingKey>> {
        self.snapshot().verifying.get(kid).cloned()
    }
}

impl KeyRing {
    /// Loads the keys, creating the first one if the database has none.
    pub async fn open(
        store: Arc<dyn Store>,
        master: MasterKey,
        policy: RotationPolicy,
        now: i64,
    ) -> Result<KeyRing, KeyRingError> {
        KeyRing::open_with_hsm(store, master, policy, now, None).await
    }

    /// [`KeyRing::open`] with the PKCS#11 module that holds some of the keys.
    pub async fn open_with_hsm(
        store: Arc<dyn Store>,
        master: MasterKey,
        policy: RotationPolicy,
        now: i64,
        hsm: Option<Arc<super::pkcs11::Hsm>>,
    ) -> Result<KeyRing, KeyRingError> {
        let ring = KeyRing {
            hsm,
            store,
            master,
            policy,
            announced: std::sync::Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            current: ArcSwap::from_pointee(Snapshot {
                pairs: HashMap::new(),
                rows: Vec::new(),
                jwks: Arc::from(&b"{\"keys\":[]}"[..]),
                verifying: HashMap::new(),
            }),
        };
        // Record this instance's schedule so rotations made elsewhere (the
        // CLI, an instance with other settings) never undercut it.
        ring.effective_policy().await?;
        ring.refresh(now).await?;
        if ring.snapshot().rows.is_empty() {
            match ring.add(SigningKeyPair::generate(), now).await {
                Ok(_) | Err(KeyRingError::Store(StoreError::Conflict(_))) => {}
                Err(e) => return Err(e),
            }
            ring.refresh(now).await?;
        }
        Ok(ring)
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// The key that signs at `now`: of the keys whose time has come and that
    /// have not been stopped, the one that activated last. Chosen per call,
    /// so a scheduled change takes effect on time even if refreshes fail.
    pub fn signer_at(&self, now: i64) -> Option<Arc<SigningKeyPair>> {
        let snap = self.snapshot();
        snap.rows
            .iter()
            .filter(|k| k.activate_at <= now && k.deactivated_at.is_none_or(|d| d > now))
            .max_by(|a, b| (a.activate_at, &a.kid).cmp(&(b.activate_at, &b.kid)))
            .and_then(|k| snap.pairs.get(&k.kid).cloned())
    }

    /// The key that signs now, if any.
    pub fn signer(&self) -> Option<Arc<SigningKeyPair>> {
        self.signer_at(chrono::Utc::now().timestamp())
    }

    /// The JWKS document (public keys only), serialized.
    pub fn jwks(&self) -> Arc<[u8]> {
        self.snapshot().jwks.clone()
    }

    /// The PKCS#11 module of keys held in a token, if one is configured.
    pub fn hsm(&self) -> Option<&Arc<super::pkcs11::Hsm>> {
        self.hsm.as_ref()
    }

    /// The policy in force.
    pub fn policy(&self) -> RotationPolicy {
        self.policy
    }

    /// Every key not yet retired, newest first, with its state at `now`.
    pub fn status(&self, now: i64) -> Vec<KeyStatus> {
        let signer = self.signer_at(now).map(|s| s.kid().to_owned());
        let snapshot = self.snapshot();
        snapshot
            .rows
            .iter()
            .map(|k| KeyStatus {
                kid: k.kid.clone(),
                state: if Some(&k.kid) == signer.as_ref() {
                    "active"
                } else if k.activate_at > now {
                    "next"
                } else {
                    "retiring"
                },
                created_at: k.created_at,
                activate_at: k.activate_at,
                deactivated_at: k.deactivated_at,
                retire_at: k.retire_at,
                held_in: held_in(snapshot.pairs.get(&k.kid).map(Arc::as_ref)),
            })
            .collect()
    }

    /// The schedule to rotate with: for the JWKS lifetime and the token
    /// lifetime, the largest value any instance has run with on this
    /// database (stored in `settings`), so that whichever process rotates,
    /// no verifier or token outlives the key schedule.
    async fn effective_policy(&self) -> Result<RotationPolicy, KeyRingError> {
        let max_age = self
            .store
            .raise_setting(
                "key_schedule.jwks_max_age",
                self.policy.jwks_max_age.as_secs(),
            )
            .await?;
        let ttl = self
            .store
            .raise_setting(
                "key_schedule.access_token_ttl",
                self.policy.access_token_ttl.as_secs(),
            )
            .await?;
        Ok(RotationPolicy {
            jwks_max_age: Duration::from_secs(max_age),
            access_token_ttl: Duration::from_secs(ttl),
            rotation_period: self.policy.rotation_period,
        })
    }

    /// Re-reads the keys; cheap when nothing changed (no decryption).
    pub async fn refresh(&self, now: i64) -> Result<(), KeyRingError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let rows = self.store.signing_keys(now).await?;
        let old = self.snapshot();
        if old.rows != rows {
            let mut pairs = HashMap::with_capacity(rows.len());
            for row in &rows {
                let pair = match old.pairs.get(&row.kid) {
                    Some(pair) => pair.clone(),
                    None => Arc::new(self.unseal(row)?),
                };
                pairs.insert(row.kid.clone(), pair);
            }
            let jwks = Jwks {
                keys: rows
                    .iter()
                    .filter_map(|k| pairs.get(&k.kid))
                    .map(|p| p.public_jwk())
                    .collect(),
            };
            let jwks: Arc<[u8]> = serde_json::to_vec(&jwks).expect("JWKS serializes").into();
            // Verify exactly what verifiers elsewhere see: the published set.
            let verifying = crate::verify::parse_jwks(&jwks).expect("our JWKS parses");
            self.current.store(Arc::new(Snapshot {
                pairs,
                rows,
                jwks,
                verifying,
            }));
        }
        if let Some(signer) = self.signer_at(now) {
            let mut announced = self.announced.lock().expect("announce lock");
            if announced.as_deref() != Some(signer.kid()) {
                tracing::info!(kid = signer.kid(), "signing key now active");
                *announced = Some(signer.kid().to_owned());
            }
        }
        Ok(())
    }

    fn unseal(&self, row: &SigningKey) -> Result<SigningKeyPair, KeyRingError> {
        let der = self
            .master
            .open(&row.private_key, &seal_context(&row.kid))
            .map_err(|source| KeyRingError::Sealed {
                kid: row.kid.clone(),
                source,
            })?;
        let pair = SigningKeyPair::from_stored(&der, self.hsm.as_ref(), &row.kid).map_err(|e| {
            KeyRingError::Invalid {
                kid: row.kid.clone(),
                message: e.to_string(),
            }
        })?;
        if pair.kid() != row.kid {
            return Err(KeyRingError::Invalid {
                kid: row.kid.clone(),
                message: "stored kid does not match the key's thumbprint".into(),
            });
        }
        Ok(pair)
    }

    /// Adds `pair` as the next key: published now, signing after one JWKS
    /// cache lifetime (at once if it is the first key). Returns its status.
    pub async fn add(&self, pair: SigningKeyPair, now: i64) -> Result<KeyStatus, KeyRingError> {
        // Decide from the database, not from this instance's possibly stale copy.
        let rows = self.store.signing_keys(now).await?;
        self.add_after(pair, now, &rows).await
    }

    /// Adds `pair` as the successor of the newest of `rows`; a `Conflict`
    /// if another key was added after that one meanwhile.
    async fn add_after(
        &self,
        pair: SigningKeyPair,
        now: i64,
        rows: &[SigningKey],
    ) -> Result<KeyStatus, KeyRingError> {
        if rows.iter().any(|r| r.kid == pair.kid()) {
            return Err(KeyRingError::Duplicate(pair.kid().to_owned()));
        }
        let policy = self.effective_policy().await?;
        let newest = rows.first().map(|r| r.generation);
        let activate_at = policy.activation(now, newest.is_none());
        let key = NewSigningKey {
            kid: pair.kid().to_owned(),
            public_jwk: serde_json::to_string(pair.public_jwk()).expect("JWK serializes"),
            private_key: self
                .master
                .seal(&pair.stored_form(), &seal_context(pair.kid())),
            created_at: now,
            activate_at,
        };
        self.store
            .add_signing_key(&key, newest, policy.retirement(activate_at))
            .await?;
        tracing::info!(kid = pair.kid(), activate_at, "signing key added");
        self.refresh(now).await?;
        Ok(KeyStatus {
            kid: key.kid,
            state: if activate_at <= now { "active" } else { "next" },
            created_at: now,
            activate_at,
            deactivated_at: None,
            retire_at: None,
            held_in: held_in(Some(&pair)),
        })
    }

    /// Emergency retirement (a compromised key): `kid` leaves the JWKS and
    /// stops signing now, its tokens are listed as revoked (the feed's `kid`
    /// entry) until the last of them would have expired, and if it was the
    /// signing key a fresh one is published and signs at once. Verifiers
    /// meet the new `kid` in tokens and re-read the JWKS.
    pub async fn retire_now(&self, kid: &str, now: i64) -> Result<Retired, KeyRingError> {
        let rows = self.store.signing_keys(now).await?;
        if !rows.iter().any(|r| r.kid == kid) {
            return Err(KeyRingError::Unknown(kid.to_owned()));
        }
        let signing = rows
            .iter()
            .filter(|k| k.activate_at <= now && k.deactivated_at.is_none_or(|d| d > now))
            .max_by(|a, b| (a.activate_at, &a.kid).cmp(&(b.activate_at, &b.kid)));
        let successor = signing.is_none_or(|k| k.kid == kid).then(|| {
            let pair = SigningKeyPair::generate();
            NewSigningKey {
                kid: pair.kid().to_owned(),
                public_jwk: serde_json::to_string(pair.public_jwk()).expect("JWK serializes"),
                private_key: self
                    .master
                    .seal(&pair.stored_form(), &seal_context(pair.kid())),
                created_at: now,
                activate_at: now,
            }
        });
        let policy = self.effective_policy().await?;
        let until = crate::revocation::relevant_until(now, secs(policy.access_token_ttl));
        if !self
            .store
            .retire_signing_key_now(kid, successor.as_ref(), now, until)
            .await?
        {
            return Err(KeyRingError::Unknown(kid.to_owned()));
        }
        tracing::warn!(
            kid,
            successor = successor.as_ref().map(|k| k.kid.as_str()),
            "signing key retired at once"
        );
        self.refresh(now).await?;
        Ok(Retired {
            kid: kid.to_owned(),
            successor: successor.map(|k| k.kid),
            revoked_until: until,
        })
    }

    /// Rotates now with a freshly generated key.
    pub async fn rotate(&self, now: i64) -> Result<KeyStatus, KeyRingError> {
        self.add(SigningKeyPair::generate(), now).await
    }

    /// Rotates if automatic rotation is on and the newest key is older than
    /// the period. Several instances may try at once; one wins, the others
    /// see a conflict and do nothing.
    pub async fn rotate_if_due(&self, now: i64) -> Result<Option<KeyStatus>, KeyRingError> {
        let Some(period) = self.policy.rotation_period else {
            return Ok(None);
        };
        // Decide and rotate from the same reading of the database: an
        // instance that reads after another's rotation sees a fresh key and
        // does nothing; two that read the same state race for one slot.
        let rows = self.store.signing_keys(now).await?;
        match rows.first().map(|r| r.created_at) {
            Some(created) if created + secs(period) > now => Ok(None),
            _ => match self.add_after(SigningKeyPair::generate(), now, &rows).await {
                Ok(status) => Ok(Some(status)),
                Err(KeyRingError::Store(StoreError::Conflict(_))) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}
