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
//! The master key itself never encrypts or MACs anything: HKDF-SHA256 derives
//! one key-encryption key and one MAC root from it under distinct labels, so
//! no two uses share key material. Version 2 wraps data keys under the
//! derived KEK; version 1 (written before the separation, where the raw
//! master key was the KEK) is still opened.

use std::fmt;
use std::io::Write;
use std::path::Path;

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

/// The key-encryption key. Cloning shares nothing mutable; `Debug` never
/// prints key material.
#[derive(Clone)]
pub struct MasterKey {
    /// HKDF-derived key-encryption key (sealed version 2).
    kek: std::sync::Arc<LessSafeKey>,
    /// The raw key as KEK: only to open version-1 values.
    legacy_kek: std::sync::Arc<LessSafeKey>,
    /// HKDF pseudo-random key from which purpose-specific MAC keys are expanded.
    derivation: std::sync::Arc<ring::hkdf::Prk>,
    /// `HMAC(master, purpose)` derivation of version-1 MAC keys (client
    /// secret digests stored before the separation).
    legacy_derivation: ring::hmac::Key,
    id: [u8; KEY_ID_LEN],
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(id={})", self.id_hex())
    }
}

/// Why a master key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    /// The text is not standard base64 of exactly 32 bytes.
    #[error(
        "not a master key: expected 32 random bytes in standard base64 (generate one with `openssl rand -base64 32`)"
    )]
    Malformed,
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
    /// The value was sealed under another master key.
    #[error("sealed under a different master key (id {found}, this instance has {expected})")]
    WrongKey {
        /// Key id in the sealed value.
        found: String,
        /// Key id of the configured master key.
        expected: String,
    },
    /// Truncated, tampered with, or bound to another context.
    #[error("sealed value is corrupt, was tampered with, or belongs to another record")]
    Corrupt,
}

impl MasterKey {
    /// A master key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
        let legacy_kek =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte key"));
        let prk =
            ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"tessera/master/v2").extract(bytes);
        let kek = LessSafeKey::new(UnboundKey::from(
            prk.expand(&[b"tessera/kek/v2"], &AES_256_GCM)
                .expect("HKDF output of one AES key"),
        ));
        let mac_root: ring::hkdf::Prk = prk
            .expand(&[b"tessera/mac-root/v2"], ring::hkdf::HKDF_SHA256)
            .expect("HKDF output of one SHA-256 block")
            .into();
        let digest = ring::digest::digest(
            &ring::digest::SHA256,
            &[b"tessera/master-key-id/v1".as_slice(), bytes].concat(),
        );
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        MasterKey {
            kek: std::sync::Arc::new(kek),
            legacy_kek: std::sync::Arc::new(legacy_kek),
            derivation: std::sync::Arc::new(mac_root),
            legacy_derivation: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
            id,
        }
    }

    /// A master key from standard base64 (surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<MasterKey, MasterKeyError> {
        let bytes = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| MasterKeyError::Malformed)?,
        );
        let bytes: &[u8; KEY_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| MasterKeyError::Malformed)?;
        Ok(MasterKey::from_bytes(bytes))
    }

    /// Reads a key file holding the base64 key.
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
    /// master key's MAC root (never the key-encryption key), so no two uses
    /// share key material.
    pub fn derive_hmac_key(&self, purpose: &[u8]) -> ring::hmac::Key {
        ring::hmac::Key::from(
            self.derivation
                .expand(&[purpose], ring::hmac::HMAC_SHA256)
                .expect("HKDF output of one HMAC key"),
        )
    }

    /// The MAC key version 1 derived for `purpose` (HMAC(master, purpose)),
    /// only to check values stored before the HKDF separation.
    pub fn derive_legacy_hmac_key(&self, purpose: &[u8]) -> ring::hmac::Key {
        let tag = ring::hmac::sign(&self.legacy_derivation, purpose);
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, tag.as_ref())
    }

    /// A short public identifier of this key (not secret), for diagnostics.
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Encrypts `plaintext` under a fresh data key, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        let mut dek_nonce = [0u8; NONCE_LEN];
        let mut nonce = [0u8; NONCE_LEN];
        rng.fill(dek.as_mut()).expect("CSPRNG");
        rng.fill(&mut dek_nonce).expect("CSPRNG");
        rng.fill(&mut nonce).expect("CSPRNG");

        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&dek_nonce);

        let mut wrapped = dek.to_vec();
        self.kek
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(dek_nonce),
                Aad::from(self.dek_aad()),
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

    /// Decrypts a value made by [`MasterKey::seal`] with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        if sealed.len() < HEADER_LEN + TAG_LEN {
            return Err(OpenError::Corrupt);
        }
        let kek = match sealed[0] {
            VERSION => &self.kek,
            LEGACY_VERSION => &self.legacy_kek,
            _ => return Err(OpenError::Corrupt),
        };
        let (key_id, rest) = sealed[1..].split_at(KEY_ID_LEN);
        if key_id != self.id {
            return Err(OpenError::WrongKey {
                found: key_id.iter().map(|b| format!("{b:02x}")).collect(),
                expected: self.id_hex(),
            });
        }
        let (dek_nonce, rest) = rest.split_at(NONCE_LEN);
        let (wrapped, rest) = rest.split_at(KEY_LEN + TAG_LEN);
        let (nonce, body) = rest.split_at(NONCE_LEN);

        let mut dek = Zeroizing::new(wrapped.to_vec());
        let dek = kek
            .open_in_place(nonce_of(dek_nonce), Aad::from(self.dek_aad()), &mut dek)
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

    fn dek_aad(&self) -> [u8; DEK_AAD.len() + KEY_ID_LEN] {
        let mut aad = [0u8; DEK_AAD.len() + KEY_ID_LEN];
        aad[..DEK_AAD.len()].copy_from_slice(DEK_AAD);
        aad[DEK_AAD.len()..].copy_from_slice(&self.id);
        aad
    }
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
        out.extend_from_slice(&k.id);
        out.extend_from_slice(&dek_nonce);
        let mut wrapped = dek.to_vec();
        legacy
            .seal_in_place_append_tag(nonce_of(&dek_nonce), Aad::from(k.dek_aad()), &mut wrapped)
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
            tag(&k.derive_hmac_key(b"a")),
            tag(&k.derive_legacy_hmac_key(b"a"))
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
}
