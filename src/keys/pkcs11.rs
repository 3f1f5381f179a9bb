//! Signing keys held in a PKCS#11 token (an HSM, a cloud HSM, SoftHSM).
//!
//! The private key never leaves the token: tessera keeps a reference to it
//! (a `pkcs11:` URI, RFC 7512, sealed under the master key like any private
//! key so that nobody who can only write the database can point a `kid` at
//! another object) and asks the token to sign each token's SHA-256 digest
//! with `CKM_ECDSA`, which returns the `r || s` form JWS uses.
//!
//! A PKCS#11 session serves one operation at a time, so signers take
//! sessions from a small pool. A session that fails is dropped, not
//! returned, and the module is re-initialised (at most once a second, with
//! no operation in flight): many modules, SoftHSM among them, only see a
//! token that was removed and comes back after `C_Initialize`. So a token
//! that returns is used again without a restart. While it is gone, minting
//! fails with a clear error (HTTP 503) and `/readyz` reports the signer as
//! not ready.
//!
//! A module is loaded once per process and shared by every [`Hsm`] of its
//! path (`C_Initialize` and `C_Finalize` are process-wide). At shutdown
//! [`Hsm::close`] closes the handle; the last one closes the sessions and
//! calls `C_Finalize` with no operation in flight. The module is never
//! unloaded: a module's own exit handlers (SoftHSM's C++ destructors)
//! racing a thread that is still closing sessions or unloading the library
//! corrupt the heap as the process exits.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// DER of the P-256 curve OID (1.2.840.10045.3.1.7), the `CKA_EC_PARAMS` of
/// an ES256 key.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// Idle sessions kept per key (operations beyond these open more, briefly).
const POOL: usize = 4;

/// Why a PKCS#11 operation failed. Messages never contain the PIN.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The module could not be loaded or initialised.
    #[error("cannot load PKCS#11 module {module}: {message}")]
    Module {
        /// The module's path.
        module: String,
        /// What went wrong.
        message: String,
    },
    /// The URI is not one tessera can use.
    #[error("not a usable PKCS#11 URI ({0}); expected pkcs11:token=LABEL;object=LABEL (RFC 7512)")]
    Uri(String),
    /// No token with that label is present.
    #[error("no PKCS#11 token labelled {0:?} is present")]
    NoToken(String),
    /// The key is not there, or not an ES256 key pair.
    #[error("{0}")]
    Key(String),
    /// No module is configured but a key needs one.
    #[error(
        "signing key {0} is held in a PKCS#11 token, but no module is configured: set TESSERA_PKCS11_MODULE and TESSERA_PKCS11_PIN_FILE"
    )]
    NotConfigured(String),
    /// The module was finalised at shutdown.
    #[error("the PKCS#11 module was closed at shutdown")]
    Closed,
    /// The token refused or failed an operation.
    #[error("PKCS#11 token {token:?}: {message}")]
    Token {
        /// The token's label.
        token: String,
        /// What went wrong.
        message: String,
    },
}

/// The parts of a `pkcs11:` URI tessera uses: the token and the key's label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUri {
    /// `token=` (the token label).
    pub token: String,
    /// `object=` (`CKA_LABEL` of the private and public key objects).
    pub object: String,
}

impl KeyUri {
    /// Parses `pkcs11:token=…;object=…` (percent-encoded values; `type`,
    /// if present, must be `private`). A `pin-value` is refused: the PIN
    /// belongs in the configuration, never in a stored URI.
    pub fn parse(text: &str) -> Result<KeyUri, HsmError> {
        let path = text
            .strip_prefix("pkcs11:")
            .ok_or_else(|| HsmError::Uri("it does not start with pkcs11:".into()))?;
        // Query attributes (after `?`) are module hints we do not need.
        let path = path.split('?').next().unwrap_or_default();
        let (mut token, mut object) = (None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| HsmError::Uri(format!("attribute {attr:?} has no value")))?;
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| HsmError::Uri(format!("{name} is not UTF-8")))?
                .into_owned();
            match name {
                "token" => token = Some(value),
                "object" => object = Some(value),
                "type" if value == "private" => {}
                "type" => return Err(HsmError::Uri("type must be private".into())),
                "pin-value" | "pin-source" => {
                    return Err(HsmError::Uri(
                        "a PIN does not belong in the URI; set TESSERA_PKCS11_PIN_FILE".into(),
                    ));
                }
                // Narrowing attributes we do not need to find the key.
                "manufacturer"
                | "model"
                | "serial"
                | "library-description"
                | "library-manufacturer"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id"
                | "id" => {}
                other => return Err(HsmError::Uri(format!("unknown attribute {other}"))),
            }
        }
        match (token, object) {
            (Some(token), Some(object)) if !token.is_empty() && !object.is_empty() => {
                Ok(KeyUri { token, object })
            }
            _ => Err(HsmError::Uri("token= and object= are required".into())),
        }
    }

    /// The canonical form stored (sealed) in the database.
    pub fn to_uri(&self) -> String {
        const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        format!(
            "pkcs11:token={};object={};type=private",
            percent_encoding::utf8_percent_encode(&self.token, SET),
            percent_encoding::utf8_percent_encode(&self.object, SET)
        )
    }
}

/// A loaded PKCS#11 module, shared by every [`Hsm`] of its path in this
/// process: `C_Initialize` and `C_Finalize` act on the whole process, so
/// the lock that keeps operations out of a re-initialisation or the final
/// `C_Finalize` is the module's, not one handle's.
struct Module {
    ctx: Pkcs11,
    name: String,
    /// Operations hold it shared; re-initialisation and finalisation hold
    /// it exclusively, so no session is in use when the module is finalised.
    epoch: RwLock<()>,
    /// Idle logged-in sessions per key URI, with the key's handle.
    pools: Mutex<HashMap<String, Vec<(Session, ObjectHandle)>>>,
    /// Unix seconds of the last re-initialisation.
    last_reinit: AtomicI64,
    /// Open [`Hsm`] handles (changed under the exclusive epoch); 0 means
    /// finalised.
    users: AtomicUsize,
}

/// The modules this process loaded, by path. Never removed: a module is
/// never unloaded (see the module docs).
static MODULES: Mutex<Vec<Arc<Module>>> = Mutex::new(Vec::new());

/// A handle on a loaded PKCS#11 module and the PIN to log in with.
pub struct Hsm {
    m: Arc<Module>,
    pin: AuthPin,
    /// Set by [`Hsm::close`].
    closed: AtomicBool,
}

impl Drop for Hsm {
    fn drop(&mut self) {
        self.close();
    }
}

impl std::fmt::Debug for Hsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hsm({})", self.m.name)
    }
}

impl Hsm {
    /// Loads and initialises `module` (or shares this process's copy).
    pub fn load(module: &Path, pin: &str) -> Result<Arc<Hsm>, HsmError> {
        let name = module.display().to_string();
        let err = |e: CkError| HsmError::Module {
            module: name.clone(),
            message: e.to_string(),
        };
        let m = {
            let mut modules = MODULES.lock().unwrap_or_else(|e| e.into_inner());
            match modules.iter().find(|m| m.name == name) {
                Some(m) => m.clone(),
                None => {
                    let ctx = Pkcs11::new(module).map_err(err)?;
                    // Never unloaded (see the module docs): this copy keeps it mapped.
                    std::mem::forget(ctx.clone());
                    let m = Arc::new(Module {
                        ctx,
                        name: name.clone(),
                        epoch: RwLock::new(()),
                        pools: Mutex::new(HashMap::new()),
                        last_reinit: AtomicI64::new(0),
                        users: AtomicUsize::new(0),
                    });
                    modules.push(m.clone());
                    m
                }
            }
        };
        {
            let _exclusive = m.epoch.write().unwrap_or_else(|e| e.into_inner());
            if m.users.load(Ordering::Relaxed) == 0 {
                match m
                    .ctx
                    .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
                {
                    Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                    Err(e) => return Err(err(e)),
                }
            }
            m.users.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Arc::new(Hsm {
            m,
            pin: AuthPin::from(pin.to_owned()),
            closed: AtomicBool::new(false),
        }))
    }

    /// Closes this handle: later operations through it fail with
    /// [`HsmError::Closed`]. The last open handle of a module waits for
    /// operations in flight, closes every session and finalises it. Called
    /// when the server has stopped, before the process exits.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let m = &self.m;
        let _exclusive = m.epoch.write().unwrap_or_else(|e| e.into_inner());
        if m.users.fetch_sub(1, Ordering::Relaxed) != 1 {
            return;
        }
        m.pools.lock().expect("session pools").clear();
        if let Err(e) = m.ctx.clone().finalize() {
            tracing::warn!(module = %m.name, error = %e, "C_Finalize failed at shutdown");
        }
    }

    /// Shared access for one operation, unless this handle (or the module)
    /// was closed.
    fn operation(&self) -> Result<std::sync::RwLockReadGuard<'_, ()>, HsmError> {
        let guard = self.m.epoch.read().unwrap_or_else(|e| e.into_inner());
        match self.closed.load(Ordering::Relaxed) || self.m.users.load(Ordering::Relaxed) == 0 {
            true => Err(HsmError::Closed),
            false => Ok(guard),
        }
    }

    /// Runs `op` on a pooled (or new) session of `uri`'s key. A failure
    /// drops the session and re-initialises the module (see the module docs).
    fn with_session<T>(
        &self,
        uri: &KeyUri,
        op: impl FnOnce(&Session, ObjectHandle) -> Result<T, CkError>,
    ) -> Result<T, HsmError> {
        let result = {
            let _epoch = self.operation()?;
            let key = uri.to_uri();
            let pooled = self
                .m
                .pools
                .lock()
                .expect("session pools")
                .get_mut(&key)
                .and_then(Vec::pop);
            match pooled.map_or_else(|| self.session(uri), Ok) {
                Err(e) => Err(e),
                Ok((session, handle)) => match op(&session, handle) {
                    Ok(value) => {
                        let mut pools = self.m.pools.lock().expect("session pools");
                        let pool = pools.entry(key).or_default();
                        if pool.len() < POOL {
                            pool.push((session, handle));
                        }
                        Ok(value)
                    }
                    Err(e) => Err(HsmError::Token {
                        token: uri.token.clone(),
                        message: e.to_string(),
                    }),
                },
            }
        };
        if let Err(e) = &result {
            self.reinitialize(e);
        }
        result
    }

    /// Closes every idle session and runs `C_Finalize`/`C_Initialize`, at
    /// most once a second.
    fn reinitialize(&self, cause: &HsmError) {
        let now = crate::clock::now();
        let m = &self.m;
        if m.last_reinit.swap(now, Ordering::Relaxed) == now {
            return;
        }
        let _exclusive = m.epoch.write().unwrap_or_else(|e| e.into_inner());
        if m.users.load(Ordering::Relaxed) == 0 {
            return;
        }
        m.pools.lock().expect("session pools").clear();
        let finalized = m.ctx.clone().finalize();
        let initialized = m
            .ctx
            .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK));
        tracing::warn!(
            module = %m.name,
            finalized = finalized.is_ok(),
            initialized = initialized.is_ok(),
            error = %cause,
            "PKCS#11 module re-initialised after a failure"
        );
    }

    fn slot(&self, token: &str) -> Result<Slot, HsmError> {
        let failed = |e: CkError| HsmError::Token {
            token: token.to_owned(),
            message: e.to_string(),
        };
        for slot in self.m.ctx.get_slots_with_token().map_err(failed)? {
            let info = self.m.ctx.get_token_info(slot).map_err(failed)?;
            if info.label().trim_end() == token {
                return Ok(slot);
            }
        }
        Err(HsmError::NoToken(token.to_owned()))
    }

    /// A logged-in session on `token` and the handle of `object`'s private key.
    fn session(&self, uri: &KeyUri) -> Result<(Session, ObjectHandle), HsmError> {
        let failed = |e: CkError| HsmError::Token {
            token: uri.token.clone(),
            message: e.to_string(),
        };
        let slot = self.slot(&uri.token)?;
        let session = self.m.ctx.open_ro_session(slot).map_err(failed)?;
        match session.login(UserType::User, Some(&self.pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => return Err(failed(e)),
        }
        let found = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Label(uri.object.as_bytes().to_vec()),
            ])
            .map_err(failed)?;
        match found.as_slice() {
            [key] => Ok((session, *key)),
            [] => Err(HsmError::Key(format!(
                "token {:?} has no private key labelled {:?}",
                uri.token, uri.object
            ))),
            _ => Err(HsmError::Key(format!(
                "token {:?} has several private keys labelled {:?}; labels must be unique",
                uri.token, uri.object
            ))),
        }
    }

    /// Opens the key `uri` names: checks that it is a P-256 pair that can
    /// sign, reads its public point, and proves with one signature that
    /// the private key matches it.
    pub fn key(self: &Arc<Hsm>, uri: &KeyUri) -> Result<HsmKey, HsmError> {
        let point = {
            let _epoch = self.operation()?;
            self.public_point(uri)?
        };
        let key = HsmKey {
            hsm: self.clone(),
            uri: uri.clone(),
            point,
            healthy: AtomicBool::new(true),
            last_probe: AtomicI64::new(0),
        };
        // The public object could belong to another key: prove the pair.
        let probe = b"tessera pkcs11 key check";
        let sig = key.sign(probe)?;
        let public = aws_lc_rs::signature::UnparsedPublicKey::new(
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            &key.point,
        );
        public.verify(probe, &sig).map_err(|_| {
            HsmError::Key(format!(
                "the public key labelled {:?} does not belong to the private key with that label",
                uri.object
            ))
        })?;
        Ok(key)
    }

    /// Checks that `uri`'s private key is an EC key that may sign, and
    /// reads the P-256 point of the public key object with its label.
    fn public_point(&self, uri: &KeyUri) -> Result<[u8; 65], HsmError> {
        let (session, private) = self.session(uri)?;
        let failed = |e: CkError| HsmError::Token {
            token: uri.token.clone(),
            message: e.to_string(),
        };
        let attrs = session
            .get_attributes(private, &[AttributeType::KeyType, AttributeType::Sign])
            .map_err(failed)?;
        for attr in &attrs {
            match attr {
                Attribute::KeyType(t) if *t != KeyType::EC => {
                    return Err(HsmError::Key(format!(
                        "{:?} is not an EC key (ES256 needs P-256)",
                        uri.object
                    )));
                }
                Attribute::Sign(false) => {
                    return Err(HsmError::Key(format!(
                        "{:?} may not sign (CKA_SIGN is false)",
                        uri.object
                    )));
                }
                _ => {}
            }
        }
        let public = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::Label(uri.object.as_bytes().to_vec()),
            ])
            .map_err(failed)?;
        let [public] = public.as_slice() else {
            return Err(HsmError::Key(format!(
                "token {:?} needs exactly one public key object labelled {:?} beside the private key",
                uri.token, uri.object
            )));
        };
        let attrs = session
            .get_attributes(*public, &[AttributeType::EcParams, AttributeType::EcPoint])
            .map_err(failed)?;
        let (mut params, mut point) = (None, None);
        for attr in attrs {
            match attr {
                Attribute::EcParams(p) => params = Some(p),
                Attribute::EcPoint(p) => point = Some(p),
                _ => {}
            }
        }
        if params.as_deref() != Some(P256_PARAMS) {
            return Err(HsmError::Key(format!(
                "{:?} is not on the P-256 curve (ES256)",
                uri.object
            )));
        }
        point
            .as_deref()
            .and_then(uncompressed_point)
            .ok_or_else(|| HsmError::Key(format!("{:?} has no usable EC point", uri.object)))
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around `04 || x || y` (some modules
/// return the bare point).
fn uncompressed_point(der: &[u8]) -> Option<[u8; 65]> {
    let bare = match der {
        [0x04, 65, rest @ ..] if rest.len() == 65 => rest,
        bare if bare.len() == 65 => bare,
        _ => return None,
    };
    (bare[0] == 0x04).then(|| bare.try_into().ok()).flatten()
}

/// A private key in a token, ready to sign.
pub struct HsmKey {
    hsm: Arc<Hsm>,
    uri: KeyUri,
    point: [u8; 65],
    healthy: AtomicBool,
    /// Unix seconds of the last readiness probe of an unhealthy key.
    last_probe: AtomicI64,
}

impl std::fmt::Debug for HsmKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HsmKey({})", self.uri.to_uri())
    }
}

impl HsmKey {
    /// The uncompressed public point `04 || x || y`.
    pub fn public_point(&self) -> &[u8; 65] {
        &self.point
    }

    /// Where the key is.
    pub fn uri(&self) -> &KeyUri {
        &self.uri
    }

    /// Signs `input` with ES256 in the token: 64 bytes `r || s`.
    pub fn sign(&self, input: &[u8]) -> Result<Vec<u8>, HsmError> {
        let digest = ring::digest::digest(&ring::digest::SHA256, input);
        let signed = self.hsm.with_session(&self.uri, |session, key| {
            session.sign(&Mechanism::Ecdsa, key, digest.as_ref())
        });
        let result = match signed {
            Ok(sig) if sig.len() == 64 => Ok(sig),
            Ok(sig) => Err(HsmError::Token {
                token: self.uri.token.clone(),
                message: format!("returned a {}-byte ECDSA signature, not 64", sig.len()),
            }),
            Err(e) => Err(e),
        };
        self.healthy.store(result.is_ok(), Ordering::Relaxed);
        result
    }

    /// Whether the key signed at its last attempt. An unhealthy key is
    /// probed again (at most once a second) so that readiness recovers when
    /// the token comes back, even with no traffic.
    pub fn ready(&self) -> bool {
        if self.healthy.load(Ordering::Relaxed) {
            return true;
        }
        // The wall clock: probes are paced in real time whatever the caller's clock.
        let now = crate::clock::now();
        if self.last_probe.swap(now, Ordering::Relaxed) != now {
            let _ = self.sign(b"tessera pkcs11 readiness probe");
        }
        self.healthy.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_name_a_token_and_an_object_and_never_a_pin() {
        let uri =
            KeyUri::parse("pkcs11:token=tessera%20prod;object=sig-2026;type=private").unwrap();
        assert_eq!(uri.token, "tessera prod");
        assert_eq!(uri.object, "sig-2026");
        assert_eq!(KeyUri::parse(&uri.to_uri()).unwrap(), uri);
        assert!(KeyUri::parse("pkcs11:token=t;object=o;id=%01?module-path=/x").is_ok());
        for bad in [
            "token=t;object=o",
            "pkcs11:token=t",
            "pkcs11:object=o",
            "pkcs11:token=t;object=o;pin-value=1234",
            "pkcs11:token=t;object=o;type=public",
            "pkcs11:token=t;object=o;color=red",
            "pkcs11:token=;object=o",
        ] {
            let e = KeyUri::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("1234"), "{e}");
        }
    }

    #[test]
    fn ec_points_are_read_wrapped_or_bare() {
        let mut bare = [7u8; 65];
        bare[0] = 4;
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&bare);
        assert_eq!(uncompressed_point(&wrapped), Some(bare));
        assert_eq!(uncompressed_point(&bare), Some(bare));
        assert_eq!(uncompressed_point(&wrapped[..60]), None);
        let mut compressed = bare;
        compressed[0] = 2;
        assert_eq!(uncompressed_point(&compressed), None);
    }
}
