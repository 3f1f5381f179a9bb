//! The master key and AES-256-GCM envelope encryption of secrets at rest.
//!
//! Each secret gets its own random data key (DEK); the DEK is encrypted
//! ("wrapped") under the master key and stored beside the ciphertext. Only
//! the master key ever lives outside the database, and a leaked database
//! dump alone reveals nothing. Every sealed value is bound to a caller-chosen
//! context (for example `signing_key:<kid>`) as AES-GCM associated data, so a
//! ciphertext copied into another row fails to open instead of being used.
//!
//! Sealed layout:
//! `version | key_id[8] | dek_nonce[12] | wrapped_dek[32+16] | nonce[12] | ciphertext+tag`
//!
//! **Rotation.** The setting may hold several keys, the active one first:
//! the first seals, every one of them opens (the `key_id` in a sealed value
//! names the key that sealed it). `tessera keys rewrap` re-seals what is
//! stored under the active key, after which the others can be removed.
//!
//! **Derived keys.** The master key never MACs anything. The MAC keys
//! (client-secret digests, the audit chain, login-form CSRF) are expanded by
//! HKDF from a [`DerivationRoot`] that is itself a sealed secret in the
//! database, so they do not change when the master key does: a rotation
//! re-seals the root and breaks no digest or chain. The root's value is the
//! one the first master key derived before the root was stored, so
//! databases from before rotation existed keep every digest valid.
//!
//! Version 2 wraps data keys under an HKDF-derived KEK; version 1 (written
//! before that separation, where the raw master key was the KEK) is still
//! opened, and re-sealed as version 2 by a rewrap.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

const VERSION: u8 = 2;
/// Sealed under the raw master key (before HKDF separation): opened, never written.
const LEGACY_VERSION: u8 = 1;
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 16;
const KEY_ID_LEN: usize = 8;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN + KEY_LEN + TAG_LEN + NONCE_LEN;
const DEK_AAD: &[u8] = b"tessera/dek/v1";
/// The purpose under which client-secret digests were keyed before the HKDF
/// separation (`HMAC(master, purpose)`); the only legacy MAC key still needed.
const LEGACY_CLIENT_SECRET_PURPOSE: &[u8] = b"tessera/client-secret/v1";
/// At most this many keys in one setting: a rotation needs two.
const MAX_KEYS: usize = 8;

/// One master key: what it wraps data keys with and what it would derive.
struct KeyMaterial {
    /// HKDF-derived key-encryption key (sealed version 2).
    kek: LessSafeKey,
    /// The raw key as KEK: only to open version-1 values.
    legacy_kek: LessSafeKey,
    /// The derivation root this key yields when a database has none stored yet.
    default_root: DerivationRoot,
    id: [u8; KEY_ID_LEN],
}

/// The secret from which every MAC key is expanded, stored sealed in the
/// database (see the module documentation).
#[derive(Clone)]
pub struct DerivationRoot {
    /// HKDF pseudo-random key of current MAC keys.
    mac_root: Zeroizing<[u8; KEY_LEN]>,
    /// The version-1 client-secret MAC key (`HMAC(first master, purpose)`).
    legacy_client_secret: Zeroizing<[u8; KEY_LEN]>,
}

impl fmt::Debug for DerivationRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivationRoot(..)")
    }
}

const ROOT_ENCODING: u8 = 1;

impl DerivationRoot {
    /// The stored (then sealed) form.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(1 + 2 * KEY_LEN));
        out.push(ROOT_ENCODING);
        out.extend_from_slice(self.mac_root.as_ref());
        out.extend_from_slice(self.legacy_client_secret.as_ref());
        out
    }

    /// Parses [`DerivationRoot::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Option<DerivationRoot> {
        match bytes {
            [ROOT_ENCODING, rest @ ..] if rest.len() == 2 * KEY_LEN => {
                let mut mac_root = Zeroizing::new([0u8; KEY_LEN]);
                let mut legacy = Zeroizing::new([0u8; KEY_LEN]);
                mac_root.copy_from_slice(&rest[..KEY_LEN]);
                legacy.copy_from_slice(&rest[KEY_LEN..]);
                Some(DerivationRoot {
                    mac_root,
                    legacy_client_secret: legacy,
                })
            }
            _ => None,
        }
    }

    /// What `raw` derived before roots were stored: HKDF's MAC root under
    /// the same labels, and the version-1 client-secret key.
    fn derived_from(raw: &[u8; KEY_LEN], prk: &ring::hkdf::Prk) -> DerivationRoot {
        let mut mac_root = Zeroizing::new([0u8; KEY_LEN]);
        prk.expand(&[b"tessera/mac-root/v2"], ring::hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(mac_root.as_mut()))
            .expect("HKDF output of one SHA-256 block");
        let legacy = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, raw),
            LEGACY_CLIENT_SECRET_PURPOSE,
        );
        let mut legacy_client_secret = Zeroizing::new([0u8; KEY_LEN]);
        legacy_client_secret.copy_from_slice(legacy.as_ref());
        DerivationRoot {
            mac_root,
            legacy_client_secret,
        }
    }
}

/// The configured master keys, the active (sealing) one first, and the
/// derivation root in use. Cloning shares nothing mutable; `Debug` never
/// prints key material.
#[derive(Clone)]
pub struct MasterKey {
    keys: Arc<[KeyMaterial]>,
    /// HKDF pseudo-random key from which purpose-specific MAC keys are expanded.
    derivation: Arc<ring::hkdf::Prk>,
    /// Version-1 client-secret digests' key.
    legacy_client_secret: ring::hmac::Key,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(ids={})", self.ids_hex().join(","))
    }
}

/// Why a master key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// Some entry is not standard base64 of exactly 32 bytes.
    #[error(
        "{position}not a master key: expected 32 random bytes in standard base64 (generate one with `openssl rand -base64 32`)"
    )]
    Malformed {
        /// "key 2 of 3: " when the setting holds several, else empty.
        position: String,
    },
    /// The setting holds no key at all.
    #[error(
        "holds no master key: expected 32 random bytes in standard base64, one key per line, the active one first"
    )]
    Empty,
    /// The same key is listed twice.
    #[error("lists master key {id} twice")]
    Duplicate {
        /// Its public id.
        id: String,
    },
    /// More keys than a rotation ever needs.
    #[error("holds {0} master keys; at most {MAX_KEYS} (a rotation needs two)")]
    TooMany(usize),
    /// The key file could not be read or written.
    #[error("cannot use key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The value was sealed under a master key that is not configured.
    #[error("sealed under master key {found}, which is not configured (configured: {expected})")]
    WrongKey {
        /// Key id in the sealed value.
        found: String,
        /// Ids of the configured master keys, the active one first.
        expected: String,
    },
    /// Truncated, tampered with, or bound to another context.
    #[error("sealed value is corrupt, was tampered with, or belongs to another record")]
    Corrupt,
}

impl KeyMaterial {
    fn new(bytes: &[u8; KEY_LEN]) -> KeyMaterial {
        let legacy_kek =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"));
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tessera/master/v2").extract(bytes);
        let kek = LessSafeKey::new(UnboundKey::from(
            prk.expand(&[b"tessera/kek/v2"], &AES_256_GCM)
                .expect("HKDF output of one AES key"),
        ));
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"tessera/master-key-id/v1".as_slice(), bytes].concat(),
        );
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        KeyMaterial {
            kek,
            legacy_kek,
            default_root: DerivationRoot::derived_from(bytes, &prk),
            id,
        }
    }

    fn dek_aad(&self) -> [u8; DEK_AAD.len() + KEY_ID_LEN] {
        let mut aad = [0u8; DEK_AAD.len() + KEY_ID_LEN];
        aad[..DEK_AAD.len()].copy_from_slice(DEK_AAD);
        aad[DEK_AAD.len()..].copy_from_slice(&self.id);
        aad
    }
}

impl MasterKey {
    /// A single master key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
        MasterKey::from_materials(vec![KeyMaterial::new(bytes)])
    }

    fn from_materials(keys: Vec<KeyMaterial>) -> MasterKey {
        let root = keys[0].default_root.clone();
        MasterKey::with_parts(keys.into(), &root)
    }

    fn with_parts(keys: Arc<[KeyMaterial]>, root: &DerivationRoot) -> MasterKey {
        MasterKey {
            keys,
            derivation: Arc::new(ring::hkdf::Prk::new_less_safe(
                ring::hkdf::HKDF_SHA256,
                root.mac_root.as_ref(),
            )),
            legacy_client_secret: ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                root.legacy_client_secret.as_ref(),
            ),
        }
    }

    /// The same keys deriving MAC keys from `root` (the database's stored one).
    pub fn with_root(&self, root: &DerivationRoot) -> MasterKey {
        MasterKey::with_parts(self.keys.clone(), root)
    }

    /// The derivation root the key that sealed `sealed` yields, for a
    /// database that has none stored yet (`None` if no configured key did).
    pub fn default_root_of(&self, sealed: &[u8]) -> Option<DerivationRoot> {
        let id = sealed.get(1..=KEY_ID_LEN)?;
        self.keys
            .iter()
            .find(|k| k.id == id)
            .map(|k| k.default_root.clone())
    }

    /// Master keys from standard base64: one per line (or separated by
    /// commas or spaces, for an environment variable), the active one first;
    /// `#` starts a comment.
    pub fn from_base64(text: &str) -> Result<MasterKey, MasterKeyError> {
        let entries: Vec<&str> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|entry| !entry.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(MasterKeyError::Empty);
        }
        if entries.len() > MAX_KEYS {
            return Err(MasterKeyError::TooMany(entries.len()));
        }
        let mut keys: Vec<KeyMaterial> = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let malformed = || MasterKeyError::Malformed {
                position: match entries.len() {
                    1 => String::new(),
                    n => format!("key {} of {n}: ", i + 1),
                },
            };
            let bytes = Zeroizing::new(STANDARD.decode(entry).map_err(|_| malformed())?);
            let bytes: &[u8; KEY_LEN] = bytes.as_slice().try_into().map_err(|_| malformed())?;
            let key = KeyMaterial::new(bytes);
            if keys.iter().any(|k| k.id == key.id) {
                return Err(MasterKeyError::Duplicate { id: hex(&key.id) });
            }
            keys.push(key);
        }
        Ok(MasterKey::from_materials(keys))
    }

    /// Reads a key file holding the base64 key(s).
    pub fn from_file(path: &Path) -> Result<MasterKey, MasterKeyError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| MasterKeyError::Io {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        MasterKey::from_base64(&text)
    }

    /// Loads the development key file, generating it (mode 0600) on first use.
    /// Returns the key and whether it was newly created.
    pub fn load_or_create_dev_file(path: &Path) -> Result<(MasterKey, bool), MasterKeyError> {
        let io = |source| MasterKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        match MasterKey::from_file(path) {
            Ok(key) => {
                // Older builds created it 0644: it is ours, so make it private.
                #[cfg(unix)]
                if let Some(mode) = readable_by_others(path) {
                    use std::os::unix::fs::PermissionsExt as _;
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io)?;
                    tracing::warn!(
                        path = %path.display(),
                        mode = format!("{mode:o}"),
                        "the development master key file was readable by group or others; made it 0600"
                    );
                }
                return Ok((key, false));
            }
            Err(MasterKeyError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).map_err(io)?;
        }
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        SystemRandom::new()
            .fill(bytes.as_mut())
            .expect("the system CSPRNG is available");
        let text = Zeroizing::new(STANDARD.encode(bytes.as_ref()));
        // Write a private temporary file, then link it into place: the key
        // file appears complete or not at all, and a concurrent starter
        // either wins the link or reads the winner's finished file.
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let written = options.open(&tmp).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok((MasterKey::from_bytes(&bytes), true)),
            // Another process created it first: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((MasterKey::from_file(path)?, false))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// An HMAC-SHA256 key for one purpose, expanded by HKDF from the
    /// derivation root (never from a key-encryption key), so no two uses
    /// share key material and a master-key rotation changes none of them.
    pub fn derive_hmac_key(&self, purpose: &[u8]) -> ring::hmac::Key {
        ring::hmac::Key::from(
            self.derivation
                .expand(&[purpose], ring::hmac::HMAC_SHA256)
                .expect("HKDF output of one HMAC key"),
        )
    }

    /// 32 secret bytes for `purpose` from the derivation root (for keys of
    /// other libraries, such as the DPoP nonce key).
    pub fn derive_secret(&self, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        struct Len32;
        impl ring::hkdf::KeyType for Len32 {
            fn len(&self) -> usize {
                32
            }
        }
        let mut out = Zeroizing::new([0u8; 32]);
        self.derivation
            .expand(&[purpose], Len32)
            .and_then(|okm| okm.fill(out.as_mut()))
            .expect("HKDF output of 32 bytes");
        out
    }

    /// The version-1 client-secret MAC key, only to check digests stored
    /// before the HKDF separation.
    pub fn legacy_client_secret_key(&self) -> ring::hmac::Key {
        self.legacy_client_secret.clone()
    }

    /// The active key's public identifier (not secret), for diagnostics.
    pub fn id_hex(&self) -> String {
        hex(&self.keys[0].id)
    }

    /// Every configured key's identifier, the active one first.
    pub fn ids_hex(&self) -> Vec<String> {
        self.keys.iter().map(|k| hex(&k.id)).collect()
    }

    /// The identifier of the key that sealed `sealed`, if it has one.
    pub fn sealed_by(sealed: &[u8]) -> Option<String> {
        sealed.get(1..=KEY_ID_LEN).map(hex)
    }

    /// Whether `sealed` is already in the form [`MasterKey::seal`] writes
    /// now: the current version, under the active key.
    pub fn is_current(&self, sealed: &[u8]) -> bool {
        sealed.first() == Some(&VERSION) && sealed.get(1..=KEY_ID_LEN) == Some(&self.keys[0].id)
    }

    /// Encrypts `plaintext` under a fresh data key, bound to `context`,
    /// with the active master key.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let active = &self.keys[0];
        let rng = SystemRandom::new();
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        let mut dek_nonce = [0u8; NONCE_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(dek.as_mut()).expect("CSPRNG");
        rng.fill(&mut dek_nonce).expect("CSPRNG");
        rng.fill(&mut nonce).expect("CSPRNG");

        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&active.id);
        out.extend_from_slice(&dek_nonce);

        let mut wrapped = dek.to_vec();
        active
            .kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(dek_nonce),
                Aad::from(active.dek_aad()),
                &mut wrapped,
            )
            .expect("sealing a 32-byte key cannot fail");
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);

        let data_key = data_key(&dek);
        let mut body = plaintext.to_vec();
        data_key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context),
                &mut body,
            )
            .expect("AES-GCM sealing only fails on absurd lengths");
        out.extend_from_slice(&body);
        out
    }

    /// Decrypts a value made by [`MasterKey::seal`] with the same `context`,
    /// under whichever configured key sealed it.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::Corrupt);
        }
        let (key_id, rest) = sealed[1..].split_at(KEY_ID_LEN);
        let Some(key) = self.keys.iter().find(|k| k.id == key_id) else {
            return Err(OpenError::WrongKey {
                found: hex(key_id),
                expected: self.ids_hex().join(", "),
            });
        };
        let kek = match sealed[0] {
            VERSION => &key.kek,
            LEGACY_VERSION => &key.legacy_kek,
            _ => return Err(OpenError::Corrupt),
        };
        let (dek_nonce, rest) = rest.split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(KEY_LEN + TAG_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);

        let mut dek = Zeroizing::new(wrapped.to_vec());
        let dek = kek
            .open_in_place(nonce_of(dek_nonce), Aad::from(key.dek_aad()), &mut dek)
            .map_err(|_| OpenError::Corrupt)?;
        let dek: &[u8; KEY_LEN] = (&*dek).try_into().map_err(|_| OpenError::Corrupt)?;

        let mut plain = Zeroizing::new(body.to_vec());
        let len = data_key(dek)
            .open_in_place(nonce_of(nonce), Aad::from(context), &mut plain)
            .map_err(|_| OpenError::Corrupt)?
            .len();
        plain.truncate(len);
        Ok(plain)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `dir` (and its parents) if missing; directories created here are
/// for the owner alone (0700): they hold the database and the development key.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// The permission bits of a key file if group or others may read it.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o044 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

fn data_key(dek: &[u8; KEY_LEN]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, dek).expect("32-byte key"))
}

fn nonce_of(bytes: &[u8]) -> Nonce {
    Nonce::try_assume_unique_for_key(bytes).expect("slice has nonce length")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::from_bytes(&[byte; KEY_LEN])
    }

    #[test]
    fn round_trips_and_hides_the_plaintext() {
        let k = key(7);
        let sealed = k.seal(b"private key bytes", b"signing_key:abc");
        assert!(!sealed.windows(7).any(|w| w == b"private"));
        assert_eq!(
            &*k.open(&sealed, b"signing_key:abc").unwrap(),
            b"private key bytes"
        );
        // Fresh data key and nonces every time.
        assert_ne!(sealed, k.seal(b"private key bytes", b"signing_key:abc"));
    }

    #[test]
    fn refuses_other_contexts_keys_and_tampering() {
        let k = key(7);
        let sealed = k.seal(b"secret", b"ctx-a");
        assert!(matches!(k.open(&sealed, b"ctx-b"), Err(OpenError::Corrupt)));
        assert!(matches!(
            key(8).open(&sealed, b"ctx-a"),
            Err(OpenError::WrongKey { .. })
        ));
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 1;
            assert!(
                k.open(&bad, b"ctx-a").is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        assert!(k.open(&sealed[..sealed.len() - 1], b"ctx-a").is_err());
        assert!(k.open(&[], b"ctx-a").is_err());
    }

    /// A value sealed the version-1 way: the raw master key wraps the data key.
    fn seal_legacy(
        raw: &[u8; KEY_LEN],
        k: &MasterKey,
        plaintext: &[u8],
        context: &[u8],
    ) -> Vec<u8> {
        let legacy = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).unwrap());
        let dek = [9u8; KEY_LEN];
        let (dek_nonce, nonce) = ([1u8; NONCE_LEN], [2u8; NONCE_LEN]);
        let mut out = vec![LEGACY_VERSION];
        out.extend_from_slice(&k.keys[0].id);
        out.extend_from_slice(&dek_nonce);
        let mut wrapped = dek.to_vec();
        legacy
            .seal_in_place_append_tag(
                nonce_of(&dek_nonce),
                Aad::from(k.keys[0].dek_aad()),
                &mut wrapped,
            )
            .unwrap();
        out.extend_from_slice(&wrapped);
        out.extend_from_slice(&nonce);
        let mut body = plaintext.to_vec();
        data_key(&dek)
            .seal_in_place_append_tag(nonce_of(&nonce), Aad::from(context), &mut body)
            .unwrap();
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn the_kek_and_mac_keys_are_separate_derivations() {
        let raw = [7u8; KEY_LEN];
        let k = MasterKey::from_bytes(&raw);
        // New values are sealed under the derived KEK: the raw key cannot open them.
        let sealed = k.seal(b"secret", b"ctx");
        assert_eq!(sealed[0], VERSION);
        let mut as_legacy = sealed.clone();
        as_legacy[0] = LEGACY_VERSION;
        assert!(k.open(&as_legacy, b"ctx").is_err());
        // Values sealed before the separation still open.
        let old = seal_legacy(&raw, &k, b"old secret", b"ctx");
        assert_eq!(&*k.open(&old, b"ctx").unwrap(), b"old secret");
        // MAC keys differ from the legacy HMAC(master, purpose) and per purpose.
        let tag = |key: &ring::hmac::Key| ring::hmac::sign(key, b"m").as_ref().to_vec();
        assert_ne!(
            tag(&k.derive_hmac_key(LEGACY_CLIENT_SECRET_PURPOSE)),
            tag(&k.legacy_client_secret_key())
        );
        assert_ne!(tag(&k.derive_hmac_key(b"a")), tag(&k.derive_hmac_key(b"b")));
        assert_ne!(
            tag(&k.derive_hmac_key(b"a")),
            tag(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw))
        );
    }

    #[test]
    fn parses_base64_of_exactly_32_bytes() {
        assert!(MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n").is_ok());
        assert!(MasterKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==").is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
        assert!(!format!("{:?}", key(1)).contains("0101"));
    }

    #[test]
    fn dev_key_file_is_created_once_with_private_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/master.key");
        let (a, created) = MasterKey::load_or_create_dev_file(&path).unwrap();
        assert!(created);
        let (b, created) = MasterKey::load_or_create_dev_file(&path).unwrap();
        assert!(!created);
        assert_eq!(a.id_hex(), b.id_hex());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "key file readable by others: {mode:o}");
            assert_eq!(readable_by_others(&path), None);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(readable_by_others(&path), Some(0o644));
            // One left readable (by an older build) is made private on load.
            let (c, created) = MasterKey::load_or_create_dev_file(&path).unwrap();
            assert!(!created);
            assert_eq!(c.id_hex(), a.id_hex());
            assert_eq!(readable_by_others(&path), None);
        }
    }

    #[test]
    fn mac_keys_are_what_the_single_key_derived_before_roots_were_stored() {
        let raw = [7u8; KEY_LEN];
        // The derivation as it was written before the root was stored.
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tessera/master/v2").extract(&raw);
        let old_root: ring::hkdf::Prk = prk
            .expand(&[b"tessera/mac-root/v2"], ring::hkdf::HKDF_SHA256)
            .unwrap()
            .into();
        let old = ring::hmac::Key::from(
            old_root
                .expand(&[b"purpose"], ring::hmac::HMAC_SHA256)
                .unwrap(),
        );
        let old_legacy = ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            ring::hmac::sign(
                &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw),
                LEGACY_CLIENT_SECRET_PURPOSE,
            )
            .as_ref(),
        );
        let tag = |key: &ring::hmac::Key| ring::hmac::sign(key, b"m").as_ref().to_vec();
        let k = MasterKey::from_bytes(&raw);
        assert_eq!(tag(&k.derive_hmac_key(b"purpose")), tag(&old));
        assert_eq!(tag(&k.legacy_client_secret_key()), tag(&old_legacy));

        // Another master key given that stored root derives the same keys.
        let sealed = k.seal(&k.keys[0].default_root.encode(), b"root");
        let root = DerivationRoot::decode(&k.open(&sealed, b"root").unwrap()).unwrap();
        let other = MasterKey::from_bytes(&[8u8; KEY_LEN]);
        assert_ne!(tag(&other.derive_hmac_key(b"purpose")), tag(&old));
        let rotated = other.with_root(&root);
        assert_eq!(tag(&rotated.derive_hmac_key(b"purpose")), tag(&old));
        assert_eq!(tag(&rotated.legacy_client_secret_key()), tag(&old_legacy));
        assert!(DerivationRoot::decode(&[1, 2, 3]).is_none());
    }

    #[test]
    fn the_first_key_seals_and_every_key_opens() {
        let a = STANDARD.encode([1u8; KEY_LEN]);
        let b = STANDARD.encode([2u8; KEY_LEN]);
        let only_a = MasterKey::from_base64(&a).unwrap();
        let old = only_a.seal(b"old secret", b"ctx");
        let both = MasterKey::from_base64(&format!(
            "# rotated today\n{b}\n\n{a}  # remove after rewrap\n"
        ))
        .unwrap();
        assert_eq!(both.ids_hex().len(), 2);
        assert_eq!(&*both.open(&old, b"ctx").unwrap(), b"old secret");
        assert!(!both.is_current(&old));
        let new = both.seal(b"new secret", b"ctx");
        assert!(both.is_current(&new));
        assert_eq!(MasterKey::sealed_by(&new).unwrap(), both.id_hex());
        assert_eq!(MasterKey::sealed_by(&old).unwrap(), only_a.id_hex());
        // The old key alone cannot open what the new one sealed, and says which key it needs.
        match only_a.open(&new, b"ctx") {
            Err(OpenError::WrongKey { found, expected }) => {
                assert_eq!(found, both.id_hex());
                assert_eq!(expected, only_a.id_hex());
            }
            other => panic!("expected WrongKey, got {other:?}"),
        }
        // An environment variable may separate keys with commas or spaces.
        let env = MasterKey::from_base64(&format!("{b},{a}")).unwrap();
        assert_eq!(env.ids_hex(), both.ids_hex());
        assert_eq!(
            MasterKey::from_base64(&format!("{b} {a}"))
                .unwrap()
                .ids_hex(),
            both.ids_hex()
        );
    }

    #[test]
    fn a_key_list_names_what_is_wrong_with_it() {
        let a = STANDARD.encode([1u8; KEY_LEN]);
        let msg = |text: &str| MasterKey::from_base64(text).unwrap_err().to_string();
        assert!(msg("\n# nothing\n").contains("holds no master key"));
        assert!(msg(&format!("{a}\n{a}\n")).contains("twice"));
        assert!(msg(&format!("{a}\nAAAA\n")).starts_with("key 2 of 2: not a master key"));
        assert!(msg("AAAA").starts_with("not a master key"));
        assert!(msg(&[a.as_str(); MAX_KEYS + 1].join("\n")).contains("at most"));
    }
}
