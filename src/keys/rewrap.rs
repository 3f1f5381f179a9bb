//! `tessera keys rewrap`: re-seals every stored secret under the active
//! master key, so that the other configured keys can be removed.
//!
//! It runs online, next to serving instances, in bounded batches. Each value
//! is replaced only if it is still what was read (compare-and-swap), so a
//! concurrent write (a TOTP enrolment, a key rotation) is never overwritten;
//! such a value is read again on the next pass. The master-key check value
//! is re-sealed last, and only when a final pass finds nothing left under
//! another key: until then, start-up keeps requiring the old key, so it
//! cannot be removed while something still needs it.

use crate::keys::master::{MasterKey, OpenError};
use crate::store::{SealedColumn, Store, StoreError};

/// Setting holding a known text sealed under the master key: a start with
/// keys that cannot open it fails at once.
pub const CHECK_SETTING: &str = "master_key_check";
/// Setting holding the sealed derivation root of every MAC key.
pub const ROOT_SETTING: &str = "key_derivation_root";

/// The check value's text while the audit chain key is at version 1.
const CHECK_TEXT: &str = "tessera master key check";
/// What follows it once a rewrap has added chain-key versions: the newest,
/// sealed under the active master key, so deleting that version's setting
/// (to pass off a chain rewritten with a retired key) is detected.
const CHECK_VERSION: &str = "; audit chain key version ";

/// The check value's text recording chain-key `version`.
pub fn check_text(version: i64) -> Vec<u8> {
    match version {
        ..=1 => CHECK_TEXT.as_bytes().to_vec(),
        v => format!("{CHECK_TEXT}{CHECK_VERSION}{v}").into_bytes(),
    }
}

/// The chain-key version a check value's text records; `None` if it is not
/// a check value.
pub fn check_version(text: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(text).ok()?.strip_prefix(CHECK_TEXT)?;
    match text {
        "" => Some(1),
        rest => rest
            .strip_prefix(CHECK_VERSION)?
            .parse()
            .ok()
            .filter(|v| *v >= 2),
    }
}

/// Values read per database round trip.
pub const BATCH: i64 = 500;
/// Passes over values that changed while being re-sealed, before giving up.
const MAX_PASSES: usize = 5;
/// Values named in an error, at most.
const NAMED: usize = 10;

/// How many values of one column there were and how many were re-sealed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Values seen.
    pub total: u64,
    /// Values re-sealed under the active key by this run.
    pub resealed: u64,
}

/// What a rewrap did.
#[derive(Debug, Default)]
pub struct Report {
    /// Signing keys' private keys.
    pub signing_keys: Counts,
    /// Users' TOTP secrets.
    pub totp_secrets: Counts,
    /// Sealed settings (the check value and the derivation root).
    pub settings: Counts,
}

/// Why a rewrap stopped short.
#[derive(Debug, thiserror::Error)]
pub enum RewrapError {
    /// The database could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Some values open under no configured key (or not at all).
    #[error(
        "{} stored secret(s) cannot be opened with the configured master keys: {}; nothing was lost \
         by this run, and the old keys are still required",
        .0.len(),
        .0.iter().take(NAMED).cloned().collect::<Vec<_>>().join("; ")
    )]
    Unopenable(Vec<String>),
    /// Values kept changing under the rewrap (or an instance still seals
    /// under an old key).
    #[error(
        "{0} stored secret(s) are still sealed under an old master key after {MAX_PASSES} passes: \
         is an instance still running without the new key first in its key setting? Restart every \
         instance with the new key first, then run `tessera keys rewrap` again"
    )]
    Unsettled(u64),
}

/// Where a column's values are, what each is bound to, and which to skip.
fn context(column: SealedColumn, id: &str) -> Option<Vec<u8>> {
    match column {
        SealedColumn::SigningKey => Some(crate::keys::keyring::seal_context(id)),
        SealedColumn::TotpSecret => id.parse().ok().map(crate::auth::totp::seal_context),
        // The check value goes last (module docs); other settings are not sealed.
        SealedColumn::Setting => (id == ROOT_SETTING
            || id.starts_with(crate::audit::CHAIN_KEY_SETTING))
        .then(|| id.as_bytes().to_vec()),
    }
}

fn describe(column: SealedColumn, id: &str) -> String {
    match column {
        SealedColumn::SigningKey => format!("signing key {id}"),
        SealedColumn::TotpSecret => format!("the TOTP secret of user {id}"),
        SealedColumn::Setting => format!("setting {id}"),
    }
}

const COLUMNS: [SealedColumn; 3] = [
    SealedColumn::SigningKey,
    SealedColumn::TotpSecret,
    SealedColumn::Setting,
];

/// One pass over `column`: re-seals what is not current. Returns the counts
/// and how many values changed under it.
async fn pass(
    store: &dyn Store,
    master: &MasterKey,
    column: SealedColumn,
    batch: i64,
    unopenable: &mut Vec<String>,
) -> Result<(Counts, u64), StoreError> {
    let mut counts = Counts::default();
    let mut raced = 0;
    let mut after: Option<String> = None;
    loop {
        let page = store.sealed_values(column, after.as_deref(), batch).await?;
        let full = i64::try_from(page.len()).unwrap_or(i64::MAX) >= batch;
        for value in &page {
            let Some(context) = context(column, &value.id) else {
                continue;
            };
            counts.total += 1;
            if master.is_current(&value.value) {
                continue;
            }
            let plain = match master.open(&value.value, &context) {
                Ok(plain) => plain,
                Err(e @ (OpenError::WrongKey { .. } | OpenError::Corrupt)) => {
                    unopenable.push(format!("{} ({e})", describe(column, &value.id)));
                    continue;
                }
            };
            let sealed = master.seal(&plain, &context);
            if store
                .replace_sealed(column, &value.id, &value.value, &sealed)
                .await?
            {
                counts.resealed += 1;
            } else {
                raced += 1;
            }
        }
        after = page.last().map(|v| v.id.clone());
        if !full {
            return Ok((counts, raced));
        }
    }
}

/// Re-seals every stored secret under `master`'s active key, `batch`
/// values per read; see the module documentation for the order. The check
/// value, re-sealed last, records `chain_version`, the newest audit
/// chain-key version (see [`crate::audit::ChainKey::roll`]).
pub async fn rewrap(
    store: &dyn Store,
    master: &MasterKey,
    batch: i64,
    chain_version: i64,
) -> Result<Report, RewrapError> {
    let mut report = Report::default();
    let mut settled = false;
    for _ in 0..MAX_PASSES {
        let mut unopenable = Vec::new();
        let mut raced = 0;
        for column in COLUMNS {
            let (counts, r) = pass(store, master, column, batch, &mut unopenable).await?;
            let slot = match column {
                SealedColumn::SigningKey => &mut report.signing_keys,
                SealedColumn::TotpSecret => &mut report.totp_secrets,
                SealedColumn::Setting => &mut report.settings,
            };
            slot.total = counts.total;
            slot.resealed += counts.resealed;
            raced += r;
        }
        if !unopenable.is_empty() {
            return Err(RewrapError::Unopenable(unopenable));
        }
        // A final read proves that nothing is left under another key
        // (an instance with an old key first may have sealed meanwhile).
        if raced == 0 && remaining(store, master, batch).await? == 0 {
            settled = true;
            break;
        }
    }
    if !settled {
        return Err(RewrapError::Unsettled(
            remaining(store, master, batch).await?,
        ));
    }
    // Last: the check value, so start-up requires only the active key now.
    let check = store.setting(CHECK_SETTING).await?;
    if let Some(check) = check {
        report.settings.total += 1;
        let plain = master
            .open(&check, CHECK_SETTING.as_bytes())
            .map_err(|e| RewrapError::Unopenable(vec![format!("setting {CHECK_SETTING} ({e})")]))?;
        let recorded = check_version(&plain).unwrap_or(1);
        if !master.is_current(&check) || recorded < chain_version {
            let text = check_text(recorded.max(chain_version));
            let sealed = master.seal(&text, CHECK_SETTING.as_bytes());
            if !store
                .replace_sealed(SealedColumn::Setting, CHECK_SETTING, &check, &sealed)
                .await?
            {
                return Err(RewrapError::Unsettled(1));
            }
            report.settings.resealed += 1;
        }
    }
    Ok(report)
}

/// Sealed values (but the check value) not under the active key.
async fn remaining(store: &dyn Store, master: &MasterKey, batch: i64) -> Result<u64, StoreError> {
    let mut left = 0;
    for column in COLUMNS {
        let mut after: Option<String> = None;
        loop {
            let page = store.sealed_values(column, after.as_deref(), batch).await?;
            left += page
                .iter()
                .filter(|v| context(column, &v.id).is_some() && !master.is_current(&v.value))
                .count() as u64;
            if i64::try_from(page.len()).unwrap_or(i64::MAX) < batch {
                break;
            }
            after = page.last().map(|v| v.id.clone());
        }
    }
    Ok(left)
}
