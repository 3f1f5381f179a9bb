//! `tessera user …` and `tessera client …`: provisioning from the command line.

use std::io::{IsTerminal, Read};

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use zeroize::Zeroizing;

use crate::auth::client::SecretDigester;
use crate::auth::names::{ClientId, Username};
use crate::auth::password;
use crate::config::Config;
use crate::startup::{Migrations, load_master_key, open_store};
use crate::store::{NewClient, NewUser, StoreError};

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
    /// Disable a user: no more logins or refreshes.
    Disable {
        /// Login name.
        username: String,
    },
}

/// `tessera client …`
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Register a client; a confidential client's secret is printed once.
    Add(ClientAdd),
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
    /// An audience the client may obtain tokens for (repeatable; default: the issuer).
    #[arg(long = "audience", value_name = "AUDIENCE")]
    pub audiences: Vec<String>,
    /// An allowed grant (repeatable; default: client_credentials for confidential
    /// clients, password and refresh_token for public ones).
    #[arg(long = "grant", value_name = "GRANT", value_parser = ["password", "refresh_token", "client_credentials"])]
    pub grants: Vec<String>,
    /// SPA cookie mode: the refresh token travels only in a hardened cookie.
    #[arg(long)]
    pub cookie: bool,
    /// A browser origin allowed to use the client (repeatable), e.g. https://app.example.
    #[arg(long = "origin", value_name = "URL")]
    pub origins: Vec<String>,
    /// May obtain the tessera:admin scope (the admin API).
    #[arg(long)]
    pub admin: bool,
    /// What a change of User-Agent or network on refresh does: audit, or revoke the session.
    #[arg(long, default_value = "audit", value_parser = ["audit", "revoke"])]
    pub on_binding_change: String,
}

/// The scope that grants the admin API.
pub const ADMIN_SCOPE: &str = "tessera:admin";

pub(super) async fn user(cmd: UserCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        UserCommand::Add {
            username,
            password_stdin,
            totp,
        } => {
            let username = Username::parse(&username).context("USERNAME")?;
            let password = read_password(password_stdin)?;
            let password_hash = password::hash(&password)?;
            let store = open_store(config, Migrations::Apply).await?;
            let id = uuid::Uuid::new_v4();
            let totp_secret = if totp {
                let master = load_master_key(config, store.as_ref()).await?;
                let secret = crate::auth::totp::new_secret();
                let sealed = master.seal(&secret, &crate::auth::totp::seal_context(id));
                Some((sealed, secret))
            } else {
                None
            };
            let user = NewUser {
                id,
                username: username.as_str().to_owned(),
                password_hash,
                totp_secret: totp_secret.as_ref().map(|(sealed, _)| sealed.clone()),
            };
            let created = store
                .create_user(&user, chrono::Utc::now().timestamp())
                .await;
            store.close().await;
            match created {
                Ok(u) => println!("{}", u.id),
                Err(StoreError::Conflict(_)) => bail!("user {username} already exists"),
                Err(e) => return Err(e.into()),
            }
            if let Some((_, secret)) = totp_secret {
                println!(
                    "{}",
                    crate::auth::totp::uri(&secret, username.as_str(), &config.issuer)
                );
            }
        }
        UserCommand::Disable { username } => {
            let username = Username::parse(&username).context("USERNAME")?;
            let store = open_store(config, Migrations::Apply).await?;
            let done = store
                .set_user_disabled(username.as_str(), true, chrono::Utc::now().timestamp())
                .await;
            store.close().await;
            if !done? {
                bail!("no user named {username}");
            }
            println!("user {username} disabled");
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

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn origin(value: &str) -> anyhow::Result<String> {
    let url = url::Url::parse(value).with_context(|| format!("--origin {value}: not a URL"))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        bail!(
            "--origin {value}: must be https://host[:port] (http only for localhost development)"
        );
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        bail!(
            "--origin {value}: an origin has no path, query, fragment or user (e.g. https://app.example)"
        );
    }
    Ok(url.origin().ascii_serialization())
}

/// Checks the options and builds the client record (without its secret).
pub fn new_client(add: &ClientAdd, issuer: &str) -> anyhow::Result<NewClient> {
    let id = ClientId::parse(&add.client_id).context("CLIENT_ID")?;
    let mut scopes = Vec::new();
    for s in &add.scopes {
        if !valid_scope(s) {
            bail!(
                "--scope {s:?}: a scope is 1–128 printable ASCII characters without spaces, quotes or backslashes"
            );
        }
        if s == ADMIN_SCOPE && !add.admin {
            bail!("--scope {ADMIN_SCOPE} is reserved for clients created with --admin");
        }
        if !scopes.contains(s) {
            scopes.push(s.clone());
        }
    }
    if add.admin && !scopes.iter().any(|s| s == ADMIN_SCOPE) {
        scopes.push(ADMIN_SCOPE.to_owned());
    }
    let mut audiences = Vec::new();
    for a in &add.audiences {
        if a.is_empty() || a.len() > 512 || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            bail!("--audience {a:?}: 1–512 characters without spaces or control characters");
        }
        if !audiences.contains(a) {
            audiences.push(a.clone());
        }
    }
    if audiences.is_empty() {
        audiences.push(issuer.to_owned());
    }
    let mut grants: Vec<String> = add.grants.clone();
    grants.dedup();
    if grants.is_empty() {
        grants = if add.confidential {
            vec!["client_credentials".into()]
        } else {
            vec!["password".into(), "refresh_token".into()]
        };
    }
    if add.public && grants.iter().any(|g| g == "client_credentials") {
        bail!(
            "--grant client_credentials needs a --confidential client (a public client cannot keep a secret)"
        );
    }
    let origins = add
        .origins
        .iter()
        .map(|o| origin(o))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if add.cookie && (!add.public || origins.is_empty()) {
        bail!("--cookie is for --public browser clients and needs at least one --origin");
    }
    Ok(NewClient {
        id: id.as_str().to_owned(),
        secret_digest: None,
        grant_types: grants,
        scopes,
        audiences,
        origins,
        cookie: add.cookie,
        admin: add.admin,
        on_binding_change: add.on_binding_change.clone(),
    })
}

pub(super) async fn client(cmd: ClientCommand, config: &Config) -> anyhow::Result<()> {
    let ClientCommand::Add(add) = cmd;
    let mut client = new_client(&add, &config.issuer)?;
    let store = open_store(config, Migrations::Apply).await?;
    let master = load_master_key(config, store.as_ref()).await?;
    let secret = if add.confidential {
        let (secret, digest) = SecretDigester::new(&master).generate();
        client.secret_digest = Some(digest);
        Some(secret)
    } else {
        None
    };
    let created = store
        .create_client(&client, chrono::Utc::now().timestamp())
        .await;
    store.close().await;
    match created {
        Ok(_) => {}
        Err(StoreError::Conflict(_)) => bail!("client {} already exists", client.id),
        Err(e) => return Err(e.into()),
    }
    println!("client_id={}", client.id);
    if let Some(secret) = secret {
        println!("client_secret={}", &*secret);
        eprintln!(
            "Store the client secret now: it is not stored in readable form and cannot be shown again."
        );
    }
    Ok(())
}
