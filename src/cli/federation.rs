//! `tessera issuer …`: trusted upstream identity providers (RFC 8693 token
//! exchange), through the same rules as the admin API, audited as `cli`.

use std::sync::Arc;

use clap::Subcommand;

use crate::audit::Auditor;
use crate::clock::now;
use crate::config::Config;
use crate::federation::issuers::{IssuerSpec, Issuers};
use crate::startup::{Migrations, load_master_key, open_store};
use crate::store::{Store, TrustedIssuer};

/// The audit actor of CLI actions.
const ACTOR: &str = "cli";

/// `tessera issuer …`
#[derive(Debug, Subcommand)]
pub enum IssuerCommand {
    /// Trust an upstream identity provider: its ID tokens and JWTs, checked
    /// against its JWKS, may be exchanged for tessera sessions.
    Add {
        /// Its `iss`, exactly as its tokens carry it, e.g.
        /// https://keycloak.example/realms/acme.
        issuer: String,
        /// Its JWKS URL (https; http only on localhost), fetched by tessera.
        #[arg(long, value_name = "URL")]
        jwks_uri: String,
        /// What its tokens' `aud` must contain, e.g. the client id tessera's
        /// users sign in with there (default: tessera's issuer URL).
        #[arg(long, value_name = "AUDIENCE")]
        audience: Option<String>,
        /// Create a tessera user on a first exchange by an unknown upstream
        /// user (otherwise link users first: tessera user link).
        #[arg(long)]
        create_users: bool,
    },
    /// List the registered issuers.
    List,
    /// Stop trusting an issuer: its tokens are refused and every session
    /// they opened is revoked.
    Disable {
        /// The issuer's `iss`.
        issuer: String,
    },
    /// Trust a disabled issuer again (revoked sessions stay revoked).
    Enable {
        /// The issuer's `iss`.
        issuer: String,
    },
}

/// Provisioning of issuers and links on the configured database.
pub(super) async fn issuers(config: &Config) -> anyhow::Result<(Issuers, Arc<dyn Store>)> {
    let store = open_store(config, Migrations::Apply).await?;
    let master = load_master_key(config, store.as_ref()).await?;
    let chain = crate::audit::ChainKey::load(store.as_ref(), &master).await?;
    crate::audit::chain_pending(store.as_ref(), &chain).await?;
    let issuers = Issuers::new(
        store.clone(),
        Auditor::direct(store.clone(), chain),
        None,
        config.issuer.clone(),
        config.access_token_ttl.as_secs() as i64,
    );
    Ok((issuers, store))
}

pub(super) async fn issuer(cmd: IssuerCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        IssuerCommand::Add {
            issuer,
            jwks_uri,
            audience,
            create_users,
        } => {
            let spec = IssuerSpec {
                issuer,
                jwks_uri,
                audience,
                create_users,
            };
            // Check the options before touching the database.
            spec.validate(&config.issuer)?;
            let (issuers, store) = issuers(config).await?;
            let added = issuers.add(ACTOR, &spec, now()).await;
            store.close().await;
            print_issuer(&added?);
        }
        IssuerCommand::List => {
            let (issuers, store) = issuers(config).await?;
            let list = issuers.list().await;
            store.close().await;
            for issuer in list? {
                print_issuer(&issuer);
                println!();
            }
        }
        IssuerCommand::Disable { issuer } => set_disabled(config, &issuer, true).await?,
        IssuerCommand::Enable { issuer } => set_disabled(config, &issuer, false).await?,
    }
    Ok(())
}

async fn set_disabled(config: &Config, issuer: &str, disabled: bool) -> anyhow::Result<()> {
    let (issuers, store) = issuers(config).await?;
    let change = issuers.set_disabled(ACTOR, issuer, disabled, now()).await;
    store.close().await;
    let change = change?;
    print_issuer(&change.issuer);
    if disabled {
        println!("sessions_revoked={}", change.sessions_revoked);
    }
    Ok(())
}

/// One `key=value` line per field.
fn print_issuer(i: &TrustedIssuer) {
    println!("issuer={}", i.issuer);
    println!("jwks_uri={}", i.jwks_uri);
    println!("audience={}", i.audience);
    println!("create_users={}", i.create_users);
    println!("disabled={}", i.disabled);
}
