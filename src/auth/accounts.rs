//! Provisioning users and clients: the rules shared by the CLI and the
//! admin API. Every change is audited with its actor; a privilege change
//! (password, TOTP enrolment, disabling) revokes the user's sessions.

use std::sync::Arc;

use serde::Deserialize;
use zeroize::Zeroizing;

use super::client::SecretDigester;
use super::names::{ClientId, Username};
use super::password;
use crate::audit::{Action, Auditor, Event};
use crate::keys::master::MasterKey;
use crate::revocation::{RevocationCache, relevant_until};
use crate::store::{
    BindingPolicy, Client, CredentialChange, Cutoff, NewClient, NewUser, Store, StoreError, User,
};

/// The scope that grants the admin API.
pub const ADMIN_SCOPE: &str = "tessera:admin";

/// Why a provisioning request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The request is invalid; the message says which field and why.
    #[error("{0}")]
    Invalid(String),
    /// No such user or client.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client to register: the options of `tessera client add`, or the JSON
/// body of `POST /admin/v1/clients`.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientSpec {
    /// The client_id.
    pub client_id: String,
    /// Confidential (gets a secret) or public.
    pub confidential: bool,
    /// Scopes it may request.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Audiences it may obtain tokens for (and, for a resource server,
    /// whose tokens it may introspect). Required, except for admin clients,
    /// whose default is the issuer (the admin API's audience).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Grants (default: client_credentials if confidential, else
    /// authorization_code and refresh_token). Admin clients:
    /// client_credentials only. `password` is legacy: RFC 9700 forbids it
    /// for new apps, so it is granted only when asked for.
    #[serde(default)]
    pub grants: Vec<String>,
    /// Redirect URIs for the authorization code flow, matched as exact
    /// strings (required with the authorization_code grant).
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// SPA cookie mode.
    #[serde(default)]
    pub cookie: bool,
    /// Allowed browser origins.
    #[serde(default)]
    pub origins: Vec<String>,
    /// May obtain `tessera:admin` (confidential, client_credentials only).
    #[serde(default)]
    pub admin: bool,
    /// May introspect tokens of its audiences and read the revocation feed
    /// (confidential only).
    #[serde(default)]
    pub resource_server: bool,
    /// What a change of User-Agent or network on refresh does: `audit`
    /// (default) or `revoke`.
    #[serde(default)]
    pub on_binding_change: Option<BindingPolicy>,
    /// Gets no token without a DPoP proof (RFC 9449).
    #[serde(default)]
    pub require_dpop: bool,
    /// Audiences it may exchange a user's access token for (RFC 8693,
    /// grant `token-exchange`; confidential clients only).
    #[serde(default)]
    pub exchange_audiences: Vec<String>,
}

/// RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

fn origin(value: &str) -> Result<String, AccountError> {
    let invalid = |why: &str| AccountError::Invalid(format!("origin {value}: {why}"));
    let url = url::Url::parse(value).map_err(|_| invalid("not a URL"))?;
    let allowed = match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => is_local(&url),
        _ => false,
    };
    if !allowed {
        return Err(invalid(
            "must be https://host[:port] (http only for localhost development)",
        ));
    }
    if url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return Err(invalid(
            "an origin has no path, query, fragment or user (e.g. https://app.example)",
        ));
    }
    Ok(url.origin().ascii_serialization())
}

/// The grants a client may be registered for.
pub const GRANTS: [&str; 5] = [
    "authorization_code",
    "refresh_token",
    "client_credentials",
    "password",
    TOKEN_EXCHANGE,
];

/// The registered name of the RFC 8693 grant
/// (`urn:ietf:params:oauth:grant-type:token-exchange` on the wire).
pub const TOKEN_EXCHANGE: &str = "token-exchange";

/// A redirect URI as registered: absolute, https (http only on loopback
/// hosts, RFC 8252 §7.3), no fragment (RFC 6749 §3.1.2) and no user info.
/// It is kept exactly as given, since requests must match it exactly.
fn redirect_uri(value: &str) -> Result<String, AccountError> {
    let invalid = |why: &str| AccountError::Invalid(format!("redirect URI {value}: {why}"));
    if value.len() > 512 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("at most 512 characters, without spaces"));
    }
    let url = url::Url::parse(value).map_err(|_| invalid("not an absolute URL"))?;
    let allowed = match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => is_local(&url),
        _ => false,
    };
    if !allowed {
        return Err(invalid(
            "must be https://… (http only for localhost development)",
        ));
    }
    if url.fragment().is_some() || value.contains('#') {
        return Err(invalid("a redirect URI has no fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("a redirect URI has no user or password"));
    }
    Ok(value.to_owned())
}

/// Plain http is allowed only where no network is crossed (client URIs,
/// upstream issuers and their JWKS URLs).
pub(crate) fn is_local(url: &url::Url) -> bool {
    matches!(url.host(), Some(url::Host::Domain("localhost")))
        || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
}

impl ClientSpec {
    /// Checks the specification and builds the record (without a secret).
    pub fn validate(&self, issuer: &str) -> Result<NewClient, AccountError> {
        let invalid = |m: String| AccountError::Invalid(m);
        let id =
            ClientId::parse(&self.client_id).map_err(|e| invalid(format!("client_id: {e}")))?;
        let mut scopes: Vec<String> = Vec::new();
        for s in &self.scopes {
            if !valid_scope(s) {
                return Err(invalid(format!(
                    "scope {s:?}: a scope is 1–128 printable ASCII characters without spaces, quotes or backslashes"
                )));
            }
            if s == ADMIN_SCOPE && !self.admin {
                return Err(invalid(format!(
                    "scope {ADMIN_SCOPE} is reserved for admin clients"
                )));
            }
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
        if self.admin && !scopes.iter().any(|s| s == ADMIN_SCOPE) {
            scopes.push(ADMIN_SCOPE.to_owned());
        }
        let mut audiences = audience_list(&self.audiences, "audience")?;
        let exchange_audiences = audience_list(&self.exchange_audiences, "exchange audience")?;
        let mut grants: Vec<String> = Vec::new();
        for g in &self.grants {
            // The admin API may name the grant as it is sent on the wire.
            let g = &if g == crate::tokens::grant::GrantType::TokenExchange.as_str() {
                TOKEN_EXCHANGE.to_owned()
            } else {
                g.clone()
            };
            if !GRANTS.contains(&g.as_str()) {
                return Err(invalid(format!(
                    "grant {g:?}: one of {}",
                    GRANTS.join(", ")
                )));
            }
            if !grants.contains(g) {
                grants.push(g.clone());
            }
        }
        if grants.is_empty() {
            grants = if self.confidential {
                vec!["client_credentials".into()]
            } else {
                vec!["authorization_code".into(), "refresh_token".into()]
            };
        }
        if !self.confidential && grants.iter().any(|g| g == "client_credentials") {
            return Err(invalid(
                "grant client_credentials needs a confidential client (a public client cannot keep a secret)".into(),
            ));
        }
        // tessera:admin only ever reaches a token a confidential client
        // obtained for itself: never one that carries a user.
        if self.admin && (!self.confidential || grants.iter().any(|g| g != "client_credentials")) {
            return Err(invalid(
                "an admin client (--admin) must be confidential with client_credentials as its only grant"
                    .into(),
            ));
        }
        let exchanges = grants.iter().any(|g| g == TOKEN_EXCHANGE);
        if exchange_audiences.iter().any(|a| a == issuer) {
            return Err(invalid(format!(
                "exchange audience {issuer}: tessera's own audience (the admin API) is never a target of exchange"
            )));
        }
        if !exchange_audiences.is_empty() && !exchanges {
            return Err(invalid(
                "exchange audiences (--exchange-audience) are for the token-exchange grant: add --grant token-exchange".into(),
            ));
        }
        // The exchanged token names the caller as its actor (`act`): only
        // an authenticated client can be one.
        if !exchange_audiences.is_empty() && !self.confidential {
            return Err(invalid(
                "exchanging a user's token for another audience (--exchange-audience) needs a confidential client: the new token names it as the actor".into(),
            ));
        }
        if self.resource_server && !self.confidential {
            return Err(invalid(
                "a resource server (--resource-server) must be confidential: introspection and the feed need a client secret"
                    .into(),
            ));
        }
        let origins = self
            .origins
            .iter()
            .map(|o| origin(o))
            .collect::<Result<Vec<_>, _>>()?;
        if self.cookie && (self.confidential || origins.is_empty()) {
            return Err(invalid(
                "cookie mode is for public browser clients and needs at least one origin".into(),
            ));
        }
        let mut redirect_uris: Vec<String> = Vec::new();
        for uri in &self.redirect_uris {
            let uri = redirect_uri(uri)?;
            if !redirect_uris.contains(&uri) {
                redirect_uris.push(uri);
            }
        }
        let code_flow = grants.iter().any(|g| g == "authorization_code");
        if code_flow && redirect_uris.is_empty() {
            return Err(invalid(format!(
                "the authorization_code grant needs at least one --redirect-uri URL (where the login sends the browser back){}",
                if self.grants.is_empty() {
                    "; it is the default for public clients (for the legacy password grant pass --grant password --grant refresh_token)"
                } else {
                    ""
                }
            )));
        }
        if !code_flow && !redirect_uris.is_empty() {
            return Err(invalid(
                "redirect URIs are for the authorization_code grant: add --grant authorization_code".into(),
            ));
        }
        let on_binding_change = self.on_binding_change.unwrap_or(BindingPolicy::Audit);
        if audiences.is_empty() {
            if !self.admin {
                return Err(invalid(format!(
                    "client {id} needs at least one audience (--audience): the API its tokens are for{}",
                    if self.resource_server {
                        ", and whose tokens it may introspect"
                    } else {
                        ""
                    }
                )));
            }
            // The admin API is the issuer's own: its tokens are for the issuer.
            audiences.push(issuer.to_owned());
        }
        Ok(NewClient {
            id: id.as_str().to_owned(),
            secret_digest: None,
            grant_types: grants,
            scopes,
            audiences,
            origins,
            redirect_uris,
            cookie: self.cookie,
            admin: self.admin,
            resource_server: self.resource_server,
            on_binding_change,
            require_dpop: self.require_dpop,
            exchange_audiences,
        })
    }
}

/// Audiences as registered: 1–512 characters without spaces or control
/// characters, duplicates dropped; `what` names the option in errors.
fn audience_list(list: &[String], what: &str) -> Result<Vec<String>, AccountError> {
    let mut audiences: Vec<String> = Vec::new();
    for a in list {
        if a.is_empty() || a.len() > 512 || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(AccountError::Invalid(format!(
                "{what} {a:?}: 1–512 characters without spaces or control characters"
            )));
        }
        if !audiences.contains(a) {
            audiences.push(a.clone());
        }
    }
    Ok(audiences)
}

/// A user by login name: `Invalid` for a name no user can have,
/// `NotFound` if there is none.
pub async fn user_named(store: &dyn Store, username: &str) -> Result<User, AccountError> {
    let name =
        Username::parse(username).map_err(|e| AccountError::Invalid(format!("username: {e}")))?;
    store
        .user_by_username(name.as_str())
        .await?
        .ok_or_else(|| AccountError::NotFound(format!("no user named {name}")))
}

/// A user just created.
#[derive(Debug)]
pub struct CreatedUser {
    /// The user's id (`sub`).
    pub id: uuid::Uuid,
    /// The `otpauth://` URI, if TOTP was enrolled.
    pub totp_uri: Option<String>,
}

/// Users and clients.
pub struct Accounts {
    store: Arc<dyn Store>,
    master: MasterKey,
    digester: SecretDigester,
    auditor: Auditor,
    /// Woken after revocations (absent in the CLI: instances poll).
    cache: Option<Arc<RevocationCache>>,
    /// This instance's cached client records (absent in the CLI).
    clients: Option<Arc<crate::tokens::ClientAuthenticator>>,
    issuer: String,
    access_ttl: i64,
}

impl Accounts {
    /// Provisioning over `store`.
    pub fn new(
        store: Arc<dyn Store>,
        master: MasterKey,
        auditor: Auditor,
        cache: Option<Arc<RevocationCache>>,
        clients: Option<Arc<crate::tokens::ClientAuthenticator>>,
        issuer: String,
        access_ttl: i64,
    ) -> Accounts {
        Accounts {
            digester: SecretDigester::new(&master),
            store,
            master,
            auditor,
            cache,
            clients,
            issuer,
            access_ttl,
        }
    }

    /// A user by login name.
    pub async fn user(&self, username: &str) -> Result<User, AccountError> {
        user_named(self.store.as_ref(), username).await
    }

    /// Creates a user, optionally enrolling TOTP.
    pub async fn create_user(
        &self,
        actor: &str,
        username: &str,
        password: Zeroizing<String>,
        totp: bool,
        now: i64,
    ) -> Result<CreatedUser, AccountError> {
        let name = Username::parse(username)
            .map_err(|e| AccountError::Invalid(format!("username: {e}")))?;
        let password_hash = hash_password(password).await?;
        let id = uuid::Uuid::new_v4();
        let secret = totp.then(crate::auth::totp::new_secret);
        let user = NewUser {
            id,
            username: name.as_str().to_owned(),
            password_hash,
            totp_secret: secret
                .as_ref()
                .map(|s| self.master.seal(s, &crate::auth::totp::seal_context(id))),
        };
        match self.store.create_user(&user, now).await {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(AccountError::Conflict(format!(
                    "user {name} already exists"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        self.auditor
            .record_durable(
                Event::new(actor, Action::UserCreated)
                    .subject(id)
                    .detail("totp", totp),
            )
            .await;
        Ok(CreatedUser {
            id,
            totp_uri: secret.map(|s| crate::auth::totp::uri(&s, name.as_str(), &self.issuer)),
        })
    }

    /// Disables a user and revokes every session and token they hold.
    pub async fn disable_user(
        &self,
        actor: &str,
        username: &str,
        now: i64,
    ) -> Result<u64, AccountError> {
        let user = self.user(username).await?;
        self.store
            .set_user_disabled(&user.username, true, now)
            .await?;
        let revoked = self.revoke_disabled_user(user.id, now).await?;
        self.auditor
            .record_durable(
                Event::new(actor, Action::UserDisabled)
                    .subject(user.id)
                    .detail("sessions_revoked", revoked),
            )
            .await;
        Ok(revoked)
    }

    /// Sets a new password; the user's sessions are revoked (a privilege
    /// change: whoever held a session may have known the old password).
    pub async fn set_password(
        &self,
        actor: &str,
        username: &str,
        password: Zeroizing<String>,
        now: i64,
    ) -> Result<u64, AccountError> {
        let user = self.user(username).await?;
        let hash = hash_password(password).await?;
        let revoked = self
            .change_credentials(
                &user,
                CredentialChange::Password(hash),
                "password changed",
                now,
            )
            .await?;
        self.auditor
            .record_durable(
                Event::new(actor, Action::UserPasswordChanged)
                    .subject(user.id)
                    .detail("sessions_revoked", revoked),
            )
            .await;
        Ok(revoked)
    }

    /// Enrols (or re-enrols) TOTP; returns the `otpauth://` URI. The user's
    /// sessions are revoked: each must log in again with the second factor.
    pub async fn enrol_totp(
        &self,
        actor: &str,
        username: &str,
        now: i64,
    ) -> Result<String, AccountError> {
        let user = self.user(username).await?;
        let secret = crate::auth::totp::new_secret();
        let sealed = self
            .master
            .seal(&secret, &crate::auth::totp::seal_context(user.id));
        let revoked = self
            .change_credentials(&user, CredentialChange::Totp(sealed), "TOTP enrolled", now)
            .await?;
        self.auditor
            .record_durable(
                Event::new(actor, Action::UserTotpEnrolled)
                    .subject(user.id)
                    .detail("sessions_revoked", revoked),
            )
            .await;
        Ok(crate::auth::totp::uri(
            &secret,
            &user.username,
            &self.issuer,
        ))
    }

    /// Changes credentials and revokes the user's sessions in one
    /// transaction (logins still in flight with the old credentials are
    /// refused when they try to open their session).
    async fn change_credentials(
        &self,
        user: &User,
        change: CredentialChange,
        reason: &str,
        now: i64,
    ) -> Result<u64, AccountError> {
        let revoked = self
            .store
            .change_credentials(
                user.id,
                &change,
                now,
                reason,
                relevant_until(now, self.access_ttl),
            )
            .await?
            .ok_or_else(|| AccountError::NotFound(format!("no user named {}", user.username)))?;
        self.refresh_revocations().await;
        Ok(revoked)
    }

    /// Every session and token of a disabled user, whenever it was minted.
    async fn revoke_disabled_user(&self, user: uuid::Uuid, now: i64) -> Result<u64, AccountError> {
        let revoked = self
            .store
            .revoke_user_sessions(
                user,
                Some(Cutoff::Always),
                now,
                "user disabled",
                relevant_until(now, self.access_ttl),
            )
            .await?;
        self.refresh_revocations().await;
        Ok(revoked)
    }

    async fn refresh_revocations(&self) {
        if let Some(cache) = &self.cache {
            cache.refresh_now().await;
        }
    }

    /// Shows one client.
    pub async fn client(&self, client_id: &str) -> Result<Client, AccountError> {
        self.store
            .client_by_id(client_id)
            .await?
            .ok_or_else(|| AccountError::NotFound(format!("no client {client_id:?}")))
    }

    /// Grants or withdraws introspection and the revocation feed.
    pub async fn set_resource_server(
        &self,
        actor: &str,
        client_id: &str,
        resource_server: bool,
    ) -> Result<Client, AccountError> {
        let client = self.client(client_id).await?;
        if resource_server && !client.confidential {
            return Err(AccountError::Invalid(format!(
                "client {client_id} is public: a resource server must be confidential"
            )));
        }
        if !self
            .store
            .set_client_resource_server(client_id, resource_server)
            .await?
        {
            return Err(AccountError::NotFound(format!("no client {client_id:?}")));
        }
        if let Some(clients) = &self.clients {
            clients.forget(client_id);
        }
        self.auditor
            .record_durable(
                Event::new(actor, Action::ClientUpdated)
                    .subject(client_id)
                    .detail("resource_server", resource_server),
            )
            .await;
        self.client(client_id).await
    }

    /// Registers a client; returns it and, if confidential, its secret
    /// (shown once, stored only as a keyed digest).
    pub async fn create_client(
        &self,
        actor: &str,
        spec: &ClientSpec,
        now: i64,
    ) -> Result<(Client, Option<Zeroizing<String>>), AccountError> {
        let mut record = spec.validate(&self.issuer)?;
        let secret = spec.confidential.then(|| {
            let (secret, digest) = self.digester.generate();
            record.secret_digest = Some(digest);
            secret
        });
        let client = match self.store.create_client(&record, now).await {
            Ok(c) => c,
            Err(StoreError::Conflict(_)) => {
                return Err(AccountError::Conflict(format!(
                    "client {} already exists",
                    record.id
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.auditor
            .record_durable(
                Event::new(actor, Action::ClientCreated)
                    .subject(&client.id)
                    .detail("confidential", client.confidential)
                    .detail("admin", client.admin)
                    .detail("resource_server", client.resource_server)
                    .detail("scopes", client.scopes.join(" ")),
            )
            .await;
        Ok((client, secret))
    }

    /// Disables a client and revokes every token issued to it.
    pub async fn disable_client(
        &self,
        actor: &str,
        client_id: &str,
        now: i64,
    ) -> Result<u64, AccountError> {
        if !self.store.set_client_disabled(client_id, true).await? {
            return Err(AccountError::NotFound(format!("no client {client_id:?}")));
        }
        let revoked = self
            .store
            .revoke_client_tokens(
                client_id,
                Cutoff::Always,
                now,
                "client disabled",
                relevant_until(now, self.access_ttl),
            )
            .await?;
        self.refresh_revocations().await;
        self.auditor
            .record_durable(
                Event::new(actor, Action::ClientDisabled)
                    .subject(client_id)
                    .detail("sessions_revoked", revoked),
            )
            .await;
        Ok(revoked)
    }
}

/// Argon2 off the async threads.
async fn hash_password(password: Zeroizing<String>) -> Result<String, AccountError> {
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|_| AccountError::Invalid("the password could not be hashed".into()))?
        .map_err(|e| AccountError::Invalid(e.to_string()))
}
