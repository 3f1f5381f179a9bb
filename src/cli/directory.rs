//! `tessera user …` and `tessera client …`: provisioning from the command line.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use zeroize::Zeroizing;

use std::sync::Arc;

use crate::audit::Auditor;
use crate::auth::accounts::{Accounts, ClientSpec};
use crate::auth::names::Username;
use crate::auth::password;
use crate::clock::now;
use crate::config::Config;
use crate::startup::{Migrations, load_master_key, open_store};
use crate::store::Store;

/// `tessera user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; prints the user's id (the `sub` of their tokens).
    Add {
        /// Login name: 1–64 of A-Z a-z 0-9 . _ @ + -
        username: String,
        /// Read the password from standard input (first line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Enrol a TOTP second factor; prints an otpauth:// URI for an authenticator app.
        #[arg(long)]
        totp: bool,
    },
    /// Disable a user: no more logins or refreshes; every session and token they hold is revoked.
    Disable {
        /// Login name.
        username: String,
    },
    /// Set a new password; the user's sessions are revoked.
    Password {
        /// Login name.
        username: String,
        /// Read the password from standard input (first line) instead of prompting.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Enrol (or re-enrol) TOTP; prints the otpauth:// URI. The user's sessions are revoked.
    Totp {
        /// Login name.
        username: String,
    },
    /// Link the user to their account at a trusted upstream issuer: that
    /// issuer's tokens for SUBJECT then open sessions for this user.
    Link {
        /// Login name.
        username: String,
        /// The issuer's `iss` (tessera issuer list).
        #[arg(long)]
        issuer: String,
        /// The user's `sub` at the issuer.
        #[arg(long)]
        subject: String,
    },
    /// Remove the user's link to SUBJECT at a trusted upstream issuer:
    /// every session that identity opened is revoked.
    Unlink {
        /// Login name.
        username: String,
        /// The issuer's `iss` (tessera user links USERNAME).
        #[arg(long)]
        issuer: String,
        /// The user's `sub` at the issuer.
        #[arg(long)]
        subject: String,
    },
    /// Show the user's accounts at upstream issuers.
    Links {
        /// Login name.
        username: String,
    },
}

/// `tessera client …`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; a confidential client's secret is printed once.
    Add(ClientAdd),
    /// Show a client's registration (never its secret).
    Show {
        /// The client_id.
        client_id: String,
    },
    /// Change a client's registration.
    Update {
        /// The client_id.
        client_id: String,
        /// Grant (true) or withdraw (false) introspection and the revocation feed.
        #[arg(long, value_name = "BOOL", required = true, action = clap::ArgAction::Set)]
        resource_server: bool,
    },
}

/// Options of `tessera client add`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("kind").required(true).args(["public", "confidential"])))]
pub struct ClientAdd {
    /// The client_id: 1–64 of A-Z a-z 0-9 . _ : -
    pub client_id: String,
    /// A public client (browser or mobile app): no secret.
    #[arg(long)]
    pub public: bool,
    /// A confidential client (backend service): gets a secret.
    #[arg(long)]
    pub confidential: bool,
    /// A scope the client may request (repeatable).
    #[arg(long = "scope", value_name = "SCOPE")]
    pub scopes: Vec<String>,
    /// An audience the client may obtain tokens for, and as a resource server
    /// introspect tokens of (repeatable; required except with --admin, whose
    /// default is the issuer).
    #[arg(long = "audience", value_name = "AUDIENCE")]
    pub audiences: Vec<String>,
    /// An allowed grant (repeatable; default: client_credentials for confidential
    /// clients, authorization_code and refresh_token for public ones; password is
    /// legacy, granted only when asked for).
    #[arg(long = "grant", value_name = "GRANT", value_parser = crate::auth::accounts::GRANTS)]
    pub grants: Vec<String>,
    /// A redirect URI for the authorization code flow (repeatable; matched exactly).
    #[arg(long = "redirect-uri", value_name = "URL")]
    pub redirect_uris: Vec<String>,
    /// SPA cookie mode: the refresh token travels only in a hardened cookie.
    #[arg(long)]
    pub cookie: bool,
    /// A browser origin allowed to use the client (repeatable), e.g. https://app.example.
    #[arg(long = "origin", value_name = "URL")]
    pub origins: Vec<String>,
    /// May obtain the tessera:admin scope (the admin API): confidential, client_credentials only.
    #[arg(long)]
    pub admin: bool,
    /// A resource server: may introspect tokens of its audiences and read the revocation feed.
    #[arg(long)]
    pub resource_server: bool,
    /// What a change of User-Agent or network on refresh does: audit, or revoke the session.
    #[arg(long, default_value = "audit", value_parser = ["audit", "revoke"])]
    pub on_binding_change: String,
    /// No token without a DPoP proof (RFC 9449): tokens bound to a key the client holds.
    #[arg(long)]
    pub require_dpop: bool,
    /// An audience the client may exchange a user's access token for
    /// (repeatable; RFC 8693, with --grant token-exchange; confidential only).
    #[arg(long = "exchange-audience", value_name = "AUDIENCE")]
    pub exchange_audiences: Vec<String>,
}

pub use crate::auth::accounts::ADMIN_SCOPE;

/// The audit actor of CLI actions.
const ACTOR: &str = "cli";

/// Provisioning through the same rules as the admin API, audited as `cli`.
async fn accounts(config: &Config) -> anyhow::Result<(Accounts, Arc<dyn Store>)> {
    let store = open_store(config, Migrations::Apply).await?;
    let master = load_master_key(config, store.as_ref()).await?;
    let chain = crate::audit::ChainKey::load(store.as_ref(), &master).await?;
    crate::audit::chain_pending(store.as_ref(), &chain).await?;
    let accounts = Accounts::new(
        store.clone(),
        master.clone(),
        Auditor::direct(store.clone(), chain),
        None,
        None,
        config.issuer.clone(),
        config.access_token_ttl.as_secs() as i64,
    );
    Ok((accounts, store))
}

pub(super) async fn user(cmd: UserCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            username,
            password_stdin,
            totp,
        } => {
            // Check the name before asking for a password.
            let username = Username::parse(&username).context("USERNAME")?;
            let password = read_password(password_stdin)?;
            password::check_new(&password)?;
            let (accounts, store) = accounts(config).await?;
            let created = accounts
                .create_user(ACTOR, username.as_str(), password, totp, now())
                .await;
            store.close().await;
            let created = created?;
            println!("{}", created.id);
            if let Some(uri) = created.totp_uri {
                println!("{uri}");
            }
        }
        UserCommand::Disable { username } => {
            let (accounts, store) = accounts(config).await?;
            let done = accounts.disable_user(ACTOR, &username, now()).await;
            store.close().await;
            let revoked = done?;
            println!("user {username} disabled; {revoked} session(s) revoked");
        }
        UserCommand::Password {
            username,
            password_stdin,
        } => {
            Username::parse(&username).context("USERNAME")?;
            let password = read_password(password_stdin)?;
            password::check_new(&password)?;
            let (accounts, store) = accounts(config).await?;
            let done = accounts
                .set_password(ACTOR, &username, password, now())
                .await;
            store.close().await;
            let revoked = done?;
            println!("password of {username} changed; {revoked} session(s) revoked");
        }
        UserCommand::Totp { username } => {
            let (accounts, store) = accounts(config).await?;
            let done = accounts.enrol_totp(ACTOR, &username, now()).await;
            store.close().await;
            println!("{}", done?);
        }
        UserCommand::Link {
            username,
            issuer,
            subject,
        } => {
            let (issuers, store) = super::federation::issuers(config).await?;
            let done = issuers
                .link(ACTOR, &username, &issuer, &subject, now())
                .await;
            store.close().await;
            let link = done?;
            println!(
                "user {username} linked to {} at {}",
                link.subject, link.issuer
            );
        }
        UserCommand::Unlink {
            username,
            issuer,
            subject,
        } => {
            let (issuers, store) = super::federation::issuers(config).await?;
            let done = issuers
                .unlink(ACTOR, &username, &issuer, &subject, now())
                .await;
            store.close().await;
            let revoked = done?;
            println!(
                "user {username} unlinked from {subject} at {issuer}; {revoked} session(s) revoked"
            );
        }
        UserCommand::Links { username } => {
            let (issuers, store) = super::federation::issuers(config).await?;
            let links = issuers.links(&username).await;
            store.close().await;
            for link in links?.1 {
                println!("{} {}", link.issuer, link.subject);
            }
        }
    }
    Ok(())
}

fn read_password(from_stdin: bool) -> anyhow::Result<Zeroizing<String>> {
    if from_stdin {
        let mut text = Zeroizing::new(String::new());
        std::io::stdin()
            .take(password::MAX_PASSWORD_BYTES as u64 + 2)
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        let line = text.lines().next().unwrap_or_default();
        return Ok(Zeroizing::new(line.to_owned()));
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: pass --password-stdin, or run in a terminal to be prompted");
    }
    let first = Zeroizing::new(rpassword::prompt_password("Password: ")?);
    let second = Zeroizing::new(rpassword::prompt_password("Repeat password: ")?);
    if first != second {
        bail!("the passwords do not match");
    }
    Ok(first)
}

impl ClientAdd {
    /// The options as a client specification.
    pub fn spec(&self) -> ClientSpec {
        ClientSpec {
            client_id: self.client_id.clone(),
            confidential: self.confidential,
            scopes: self.scopes.clone(),
            audiences: self.audiences.clone(),
            grants: self.grants.clone(),
            redirect_uris: self.redirect_uris.clone(),
            cookie: self.cookie,
            origins: self.origins.clone(),
            admin: self.admin,
            resource_server: self.resource_server,
            on_binding_change: crate::store::BindingPolicy::parse(&self.on_binding_change),
            require_dpop: self.require_dpop,
            exchange_audiences: self.exchange_audiences.clone(),
        }
    }
}

pub(super) async fn client(cmd: ClientCommand, config: &Config) -> anyhow::Result<()> {
    let add = match cmd {
        ClientCommand::Add(add) => add,
        ClientCommand::Show { client_id } => {
            let (accounts, store) = accounts(config).await?;
            let client = accounts.client(&client_id).await;
            store.close().await;
            print_client(&client?);
            return Ok(());
        }
        ClientCommand::Update {
            client_id,
            resource_server,
        } => {
            let (accounts, store) = accounts(config).await?;
            let client = accounts
                .set_resource_server(ACTOR, &client_id, resource_server)
                .await;
            store.close().await;
            print_client(&client?);
            eprintln!(
                "Running instances re-read the client within a minute (disable it to cut it off at once)."
            );
            return Ok(());
        }
    };
    let spec = add.spec();
    // Check the options before touching the database.
    spec.validate(&config.issuer)?;
    let (accounts, store) = accounts(config).await?;
    let created = accounts.create_client(ACTOR, &spec, now()).await;
    store.close().await;
    let (client, secret) = created?;
    println!("client_id={}", client.id);
    if let Some(secret) = secret {
        println!("client_secret={}", &*secret);
        eprintln!(
            "Store the client secret now: it is not stored in readable form and cannot be shown again."
        );
    }
    Ok(())
}

/// One `key=value` line per field, lists space-separated.
fn print_client(c: &crate::store::Client) {
    println!("client_id={}", c.id);
    println!("confidential={}", c.confidential);
    println!("grants={}", c.grant_types.join(" "));
    println!("scopes={}", c.scopes.join(" "));
    println!("audiences={}", c.audiences.join(" "));
    println!("origins={}", c.origins.join(" "));
    println!("redirect_uris={}", c.redirect_uris.join(" "));
    println!("cookie={}", c.cookie);
    println!("admin={}", c.admin);
    println!("resource_server={}", c.resource_server);
    println!("on_binding_change={}", c.on_binding_change.as_str());
    println!("require_dpop={}", c.require_dpop);
    println!("exchange_audiences={}", c.exchange_audiences.join(" "));
    println!("disabled={}", c.disabled);
}
