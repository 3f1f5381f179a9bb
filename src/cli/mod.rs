//! The `tessera` command line.

mod directory;
mod federation;

pub use directory::{ADMIN_SCOPE, ClientAdd, ClientCommand, UserCommand};

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use anyhow::Context;

use crate::config::Config;
use crate::keys::signing::SigningKeyPair;
use crate::startup::{Application, Migrations, load_master_key, open_key_ring, open_store};
use crate::store::Audience;
use crate::tokens::EncryptionKey;

/// tessera: short-lived access tokens, rotating refresh tokens, revocation.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about, propagate_version = true)]
pub struct Cli {
    /// TOML configuration file; `TESSERA_*` environment variables override it.
    #[arg(long, global = true, env = "TESSERA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    Serve {
        /// Do not apply database migrations at start (refuse to start if any are pending).
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage audiences (resource servers).
    #[command(subcommand)]
    Audience(AudienceCommand),
    /// Manage trusted upstream identity providers (token exchange).
    #[command(subcommand)]
    Issuer(federation::IssuerCommand),
    /// Inspect the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
}

/// `tessera audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the keyed chain of the whole audit log and its newest checkpoint;
    /// names the first broken row or the rows cut from the end, then writes a
    /// new checkpoint.
    Verify,
}

/// `tessera keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// List the published signing keys and their schedule.
    List,
    /// Add a new signing key: published now, signing after one JWKS cache lifetime.
    Rotate,
    /// Add an existing ES256 private key as the next signing key: a PEM file
    /// (PKCS#8 or SEC 1), or with --pkcs11 a key pair in a PKCS#11 token
    /// (the private key never leaves it).
    Import {
        /// The PEM file.
        #[arg(required_unless_present = "pkcs11", conflicts_with = "pkcs11")]
        pem_file: Option<PathBuf>,
        /// The key in a token: `pkcs11:token=LABEL;object=LABEL` (the module
        /// and PIN come from TESSERA_PKCS11_MODULE and TESSERA_PKCS11_PIN_FILE).
        #[arg(long, value_name = "URI")]
        pkcs11: Option<String>,
    },
    /// Retire a compromised signing key at once: unpublished, its tokens
    /// refused everywhere within a second, a new key signing from now.
    Retire {
        /// The key's id (tessera keys list).
        kid: String,
        /// Required: routine retirement happens by itself after a rotation;
        /// this is the emergency one.
        #[arg(long)]
        now: bool,
    },
    /// Re-seal every stored secret under the first (active) master key, so
    /// the others can be removed from the key setting afterwards.
    Rewrap,
}

/// `tessera audience …`
#[derive(Debug, Subcommand)]
pub enum AudienceCommand {
    /// Register an audience; with --encrypt-to its tokens become JWE encrypted to that key.
    Add {
        /// The `aud` value, e.g. https://api.example.com.
        audience: String,
        /// Public JWK (EC P-256 or RSA ≥ 2048 bits) to encrypt this audience's tokens to.
        #[arg(long, value_name = "JWK_FILE")]
        encrypt_to: Option<PathBuf>,
    },
}

/// Runs a parsed command line with a validated configuration.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { no_migrate } => {
            let migrations = if no_migrate {
                Migrations::Skip
            } else {
                Migrations::Apply
            };
            let listen = config.listen;
            let engine = config.engine();
            let app = Application::build(config, migrations).await?;
            tracing::info!(%listen, port = app.port(), ?engine, "tessera is listening");
            app.run_until_stopped().await?;
            Ok(())
        }
        Command::Migrate => {
            let store = open_store(&config, Migrations::Apply).await?;
            store.close().await;
            println!("database schema is up to date");
            Ok(())
        }
        Command::User(cmd) => directory::user(cmd, &config).await,
        Command::Client(cmd) => directory::client(cmd, &config).await,
        Command::Keys(cmd) => keys(cmd, &config).await,
        Command::Issuer(cmd) => federation::issuer(cmd, &config).await,
        Command::Audience(AudienceCommand::Add {
            audience,
            encrypt_to,
        }) => add_audience(&config, audience, encrypt_to).await,
        Command::Audit(AuditCommand::Verify) => {
            let (store, key) = store_and_chain_key(&config).await?;
            let result = crate::audit::verify_chain(store.as_ref(), &key).await;
            let result = match result {
                // What was verified is vouched for from now on.
                Ok(report) => crate::audit::checkpoint(store.as_ref(), &key, None)
                    .await
                    .map(|_| report),
                Err(e) => Err(e),
            };
            store.close().await;
            println!("{}", result?);
            Ok(())
        }
    }
}

async fn keys(cmd: KeysCommand, config: &Config) -> anyhow::Result<()> {
    // Read the key file before touching the database: a typo fails fast.
    let imported = match &cmd {
        KeysCommand::Import {
            pem_file: Some(pem_file),
            ..
        } => {
            let text = zeroize::Zeroizing::new(
                std::fs::read_to_string(pem_file)
                    .with_context(|| format!("cannot read {}", pem_file.display()))?,
            );
            Some(SigningKeyPair::from_pem(&text).with_context(|| pem_file.display().to_string())?)
        }
        _ => None,
    };
    let token_key = match &cmd {
        KeysCommand::Import {
            pkcs11: Some(uri), ..
        } => {
            if config.pkcs11.is_none() {
                anyhow::bail!(
                    "keys import --pkcs11 needs the module: set TESSERA_PKCS11_MODULE and TESSERA_PKCS11_PIN_FILE"
                );
            }
            Some(crate::keys::pkcs11::KeyUri::parse(uri)?)
        }
        _ => None,
    };
    if let KeysCommand::Retire { now: false, .. } = &cmd {
        anyhow::bail!(
            "keys retire needs --now: it is the emergency retirement (routine retirement follows a rotation by itself)"
        );
    }
    let store = open_store(config, Migrations::Apply).await?;
    let master = load_master_key(config, store.as_ref()).await?;
    let key = crate::audit::ChainKey::load(store.as_ref(), &master).await?;
    let master_ids = master.clone();
    let ring = open_key_ring(config, store.clone(), master).await?;
    let now = chrono::Utc::now().timestamp();
    match (cmd, imported) {
        (KeysCommand::List, _) => {
            println!(
                "{:<44} {:<9} {:<20} {:<20} {:<20} HELD IN",
                "KID", "STATE", "PUBLISHED", "SIGNS FROM", "RETIRES"
            );
            for k in ring.status(now) {
                println!(
                    "{:<44} {:<9} {:<20} {:<20} {:<20} {}",
                    k.kid,
                    k.state,
                    time(k.created_at),
                    time(k.activate_at),
                    k.retire_at.map(time).unwrap_or_else(|| "-".into()),
                    k.held_in,
                );
            }
        }
        (KeysCommand::Rotate, _) => {
            let added = ring.rotate(now).await?;
            audit_key(&store, &key, crate::audit::Action::KeyRotated, &added).await;
            report_added(added, now);
        }
        (KeysCommand::Import { .. }, Some(pair)) => {
            let added = ring.add(pair, now).await?;
            audit_key(&store, &key, crate::audit::Action::KeyImported, &added).await;
            report_added(added, now);
        }
        (KeysCommand::Import { .. }, None) => {
            let (Some(uri), Some(hsm)) = (token_key, ring.hsm()) else {
                unreachable!("clap requires a PEM file or --pkcs11, checked above");
            };
            let opened = hsm.key(&uri);
            let pair = match opened {
                Ok(k) => SigningKeyPair::from_hsm(k),
                Err(e) => {
                    store.close().await;
                    return Err(e.into());
                }
            };
            let added = ring.add(pair, now).await?;
            audit_key(&store, &key, crate::audit::Action::KeyImported, &added).await;
            report_added(added, now);
        }
        (KeysCommand::Retire { kid, .. }, _) => {
            let done = ring.retire_now(&kid, now).await;
            let retired = match done {
                Ok(r) => r,
                Err(e) => {
                    store.close().await;
                    return Err(e.into());
                }
            };
            crate::audit::Auditor::direct(store.clone(), key.clone())
                .record_durable(
                    crate::audit::Event::new("cli", crate::audit::Action::KeyRetired)
                        .subject(&retired.kid)
                        .detail("successor", retired.successor.clone().unwrap_or_default()),
                )
                .await;
            println!("retired={}", retired.kid);
            if let Some(successor) = &retired.successor {
                println!("signing={successor}");
            }
            println!("tokens_revoked_until={}", time(retired.revoked_until));
        }
        (KeysCommand::Rewrap, _) => {
            // First a chain key a retired master key cannot open, and the
            // switch to it (idempotent: a rerun finishes an interrupted one).
            let rolled = match roll_chain_key(&store, &key).await {
                Ok(version) => version,
                Err(e) => {
                    store.close().await;
                    return Err(e);
                }
            };
            let done = crate::keys::rewrap::rewrap(
                store.as_ref(),
                &master_ids,
                crate::keys::rewrap::BATCH,
                key.newest(),
            )
            .await;
            let report = match done {
                Ok(report) => report,
                Err(e) => {
                    store.close().await;
                    return Err(e.into());
                }
            };
            let active = master_ids.id_hex();
            crate::audit::Auditor::direct(store.clone(), key.clone())
                .record_durable(
                    crate::audit::Event::new("cli", crate::audit::Action::MasterKeyRewrapped)
                        .subject(&active)
                        .detail("signing_keys", report.signing_keys.resealed)
                        .detail("totp_secrets", report.totp_secrets.resealed)
                        .detail("settings", report.settings.resealed),
                )
                .await;
            println!("active_key={active}");
            for (name, counts) in [
                ("signing_keys", report.signing_keys),
                ("totp_secrets", report.totp_secrets),
                ("settings", report.settings),
            ] {
                println!("{name}={} resealed={}", counts.total, counts.resealed);
            }
            println!(
                "audit_chain_key_version={}{}",
                key.newest(),
                if rolled { " (new)" } else { "" }
            );
            let others = master_ids.ids_hex()[1..].join(",");
            println!("no_longer_needed={others}");
            if !others.is_empty() {
                eprintln!(
                    "every stored secret is sealed under {active}; key(s) {others} can be removed \
                     from the master-key setting (browser sign-ins sealed under them end then)"
                );
            }
        }
    }
    store.close().await;
    Ok(())
}

/// Adds a chain-key version when the newest is sealed under a retired
/// master key, and makes sure the chain has switched to the newest (the
/// switch row is linked under it); true if a version was added.
async fn roll_chain_key(
    store: &std::sync::Arc<dyn crate::store::Store>,
    chain: &crate::audit::ChainKey,
) -> anyhow::Result<bool> {
    let added = chain.roll(store.as_ref()).await?;
    let head = store
        .audit_head()
        .await?
        .map_or(1, |(_, _, version)| version);
    if head < chain.newest() {
        let stored = crate::audit::Auditor::direct(store.clone(), chain.clone())
            .record_durable(
                crate::audit::Event::new("cli", crate::audit::Action::AuditChainKeyRolled)
                    .detail("version", chain.newest()),
            )
            .await;
        if !stored {
            anyhow::bail!(
                "the audit chain could not switch to chain key version {}: see the error above, then run `tessera keys rewrap` again",
                chain.newest()
            );
        }
    }
    Ok(added.is_some())
}

async fn audit_key(
    store: &std::sync::Arc<dyn crate::store::Store>,
    chain: &crate::audit::ChainKey,
    action: crate::audit::Action,
    key: &crate::keys::keyring::KeyStatus,
) {
    crate::audit::Auditor::direct(store.clone(), chain.clone())
        .record_durable(
            crate::audit::Event::new("cli", action)
                .subject(&key.kid)
                .detail("activate_at", key.activate_at),
        )
        .await;
}

/// The store and the audit chain key (from the master key, checked against
/// the database), with any audit events a migration left chained.
async fn store_and_chain_key(
    config: &Config,
) -> anyhow::Result<(
    std::sync::Arc<dyn crate::store::Store>,
    crate::audit::ChainKey,
)> {
    let store = open_store(config, Migrations::Apply).await?;
    let master = load_master_key(config, store.as_ref()).await?;
    let key = crate::audit::ChainKey::load(store.as_ref(), &master).await?;
    crate::audit::chain_pending(store.as_ref(), &key).await?;
    Ok((store, key))
}

fn report_added(k: crate::keys::keyring::KeyStatus, now: i64) {
    if k.activate_at <= now {
        println!("{} active now", k.kid);
    } else {
        println!(
            "{} published now, signs from {}",
            k.kid,
            time(k.activate_at)
        );
    }
}

fn time(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix.to_string())
}

async fn add_audience(
    config: &Config,
    name: String,
    encrypt_to: Option<PathBuf>,
) -> anyhow::Result<()> {
    if name.is_empty()
        || name.len() > 512
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        anyhow::bail!("AUDIENCE must be 1 to 512 characters without spaces or control characters");
    }
    let encrypt_jwk = match &encrypt_to {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let key =
                EncryptionKey::from_jwk_json(&text).with_context(|| path.display().to_string())?;
            // Store the canonical JSON of what was validated.
            let json: serde_json::Value = serde_json::from_str(&text)?;
            Some((serde_json::to_string(&json)?, key.alg))
        }
    };
    let (store, key) = store_and_chain_key(config).await?;
    let audience = Audience {
        name: name.clone(),
        encrypt_jwk: encrypt_jwk.as_ref().map(|(j, _)| j.clone()),
        created_at: chrono::Utc::now().timestamp(),
    };
    store.put_audience(&audience).await?;
    crate::audit::Auditor::direct(store.clone(), key)
        .record_durable(
            crate::audit::Event::new("cli", crate::audit::Action::AudienceAdded)
                .subject(&name)
                .detail("encrypted", encrypt_jwk.is_some()),
        )
        .await;
    store.close().await;
    match encrypt_jwk {
        Some((_, alg)) => println!("audience {name}: tokens are encrypted ({alg}, A256GCM)"),
        None => println!("audience {name}: tokens are signed, not encrypted"),
    }
    Ok(())
}
