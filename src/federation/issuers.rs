//! Provisioning trusted upstream issuers and users' links to them: the
//! rules shared by `tessera issuer …`/`tessera user link…` and the admin
//! API. Every change is audited with its actor; disabling an issuer ends
//! every session its tokens opened, removing a link every session the
//! linked identity opened.

use std::sync::Arc;

use serde::Deserialize;

use crate::audit::{Action, Auditor, Event};
use crate::auth::accounts::AccountError;
use crate::revocation::{RevocationCache, relevant_until};
use crate::store::{NewIssuer, Store, StoreError, TrustedIssuer, User, UserLink};

/// An issuer to register: the options of `tessera issuer add`, or the JSON
/// body of `POST /admin/v1/issuers`.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerSpec {
    /// Its `iss` value, exactly as its tokens carry it (an https URL).
    pub issuer: String,
    /// Where tessera fetches its keys (https; http only on loopback).
    pub jwks_uri: String,
    /// What its tokens' `aud` must contain (e.g. the client id tessera's
    /// users have there); default: tessera's issuer URL.
    #[serde(default)]
    pub audience: Option<String>,
    /// Whether an unknown upstream user becomes a new tessera user on
    /// first exchange (otherwise they must be linked first).
    #[serde(default)]
    pub create_users: bool,
}

/// What disabling or enabling an issuer did.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct IssuerChange {
    /// The issuer as it is now.
    pub issuer: TrustedIssuer,
    /// Sessions its tokens had opened that were revoked.
    pub sessions_revoked: u64,
}

/// Trusted issuers and user links.
pub struct Issuers {
    store: Arc<dyn Store>,
    auditor: Auditor,
    cache: Option<Arc<RevocationCache>>,
    own_issuer: String,
    access_ttl: i64,
}

impl Issuers {
    /// Provisioning on `store`; `cache` (a running server's) is refreshed
    /// after a revocation, `own_issuer` is tessera's issuer URL.
    pub fn new(
        store: Arc<dyn Store>,
        auditor: Auditor,
        cache: Option<Arc<RevocationCache>>,
        own_issuer: String,
        access_ttl: i64,
    ) -> Issuers {
        Issuers {
            store,
            auditor,
            cache,
            own_issuer,
            access_ttl,
        }
    }

    /// Registers an issuer after checking its URLs.
    pub async fn add(
        &self,
        actor: &str,
        spec: &IssuerSpec,
        now: i64,
    ) -> Result<TrustedIssuer, AccountError> {
        let new = spec.validate(&self.own_issuer)?;
        let added = self
            .store
            .add_issuer(&new, now)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => {
                    AccountError::Conflict(format!("issuer {} is registered already", new.issuer))
                }
                other => other.into(),
            })?;
        self.auditor
            .record_durable(
                Event::new(actor, Action::IssuerAdded)
                    .subject(&added.issuer)
                    .detail("jwks_uri", added.jwks_uri.clone())
                    .detail("audience", added.audience.clone())
                    .detail("create_users", added.create_users),
            )
            .await;
        Ok(added)
    }

    /// Every registered issuer.
    pub async fn list(&self) -> Result<Vec<TrustedIssuer>, AccountError> {
        Ok(self.store.issuers().await?)
    }

    /// Disables an issuer (its tokens are refused and every session they
    /// opened is revoked at once) or enables it again.
    pub async fn set_disabled(
        &self,
        actor: &str,
        issuer: &str,
        disabled: bool,
        now: i64,
    ) -> Result<IssuerChange, AccountError> {
        plain_text("issuer", issuer)?;
        let revoked = self
            .store
            .set_issuer_disabled(
                issuer,
                disabled,
                now,
                "upstream issuer disabled",
                relevant_until(now, self.access_ttl),
            )
            .await?
            .ok_or_else(|| not_found(issuer))?;
        self.revoked(revoked).await;
        self.auditor
            .record_durable(
                Event::new(actor, Action::IssuerChanged)
                    .subject(issuer)
                    .detail("disabled", disabled)
                    .detail("sessions_revoked", revoked),
            )
            .await;
        let issuer = self
            .store
            .issuer(issuer)
            .await?
            .ok_or_else(|| not_found(issuer))?;
        Ok(IssuerChange {
            issuer,
            sessions_revoked: revoked,
        })
    }

    /// A user and their upstream identities.
    pub async fn links(&self, username: &str) -> Result<(User, Vec<UserLink>), AccountError> {
        let user = self.user(username).await?;
        let links = self.store.user_links(user.id).await?;
        Ok((user, links))
    }

    /// Links a user to their identity (`subject`) at a registered issuer,
    /// so that issuer's tokens for `subject` open sessions for them.
    pub async fn link(
        &self,
        actor: &str,
        username: &str,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<UserLink, AccountError> {
        check_account(issuer, subject)?;
        let user = self.user(username).await?;
        self.store
            .issuer(issuer)
            .await?
            .ok_or_else(|| not_found(issuer))?;
        let link = self
            .store
            .link_user(issuer, subject, user.id, now)
            .await
            .map_err(|e| match e {
                StoreError::Conflict(_) => AccountError::Conflict(format!(
                    "subject {subject:?} of {issuer} is linked to a user already"
                )),
                other => other.into(),
            })?;
        self.auditor
            .record_durable(
                Event::new(actor, Action::UserLinked)
                    .subject(user.id)
                    .detail("issuer", issuer.to_owned())
                    .detail("upstream_sub", subject.to_owned()),
            )
            .await;
        Ok(link)
    }

    /// Removes a user's link to `subject` at `issuer`: that identity's
    /// tokens no longer open sessions for the user, and every session it
    /// opened is revoked at once. The number revoked. (With `create_users`,
    /// its next exchange creates an `ext-` user for it, unless it was
    /// unlinked from that very user: its generated name is taken, so the
    /// exchange is refused until an operator links it again.)
    pub async fn unlink(
        &self,
        actor: &str,
        username: &str,
        issuer: &str,
        subject: &str,
        now: i64,
    ) -> Result<u64, AccountError> {
        check_account(issuer, subject)?;
        let user = self.user(username).await?;
        let revoked = self
            .store
            .unlink_user(
                issuer,
                subject,
                user.id,
                now,
                relevant_until(now, self.access_ttl),
            )
            .await?
            .ok_or_else(|| {
                AccountError::NotFound(format!(
                    "{username} is not linked to {subject:?} at {issuer} (tessera user links {username})"
                ))
            })?;
        self.revoked(revoked).await;
        self.auditor
            .record_durable(
                Event::new(actor, Action::UserUnlinked)
                    .subject(user.id)
                    .detail("issuer", issuer.to_owned())
                    .detail("upstream_sub", subject.to_owned())
                    .detail("sessions_revoked", revoked),
            )
            .await;
        Ok(revoked)
    }

    /// After `count` sessions were revoked: this instance's revocation
    /// list takes them in now, not at its next poll.
    async fn revoked(&self, count: u64) {
        if count > 0
            && let Some(cache) = &self.cache
        {
            cache.refresh_now().await;
        }
    }

    async fn user(&self, username: &str) -> Result<User, AccountError> {
        crate::auth::accounts::user_named(self.store.as_ref(), username).await
    }
}

/// An identifier from the caller: at most 512 characters, no control
/// characters (which no registered issuer has, and PostgreSQL refuses).
fn plain_text(what: &str, value: &str) -> Result<(), AccountError> {
    if value.len() > 512 || value.chars().any(char::is_control) {
        return Err(AccountError::Invalid(format!(
            "{what}: at most 512 characters without control characters"
        )));
    }
    Ok(())
}

/// An upstream account from the caller: a plain issuer and a `sub` its
/// tokens could carry.
fn check_account(issuer: &str, subject: &str) -> Result<(), AccountError> {
    plain_text("issuer", issuer)?;
    match super::upstream::subject_fault(subject) {
        Some(fault) => Err(AccountError::Invalid(format!(
            "subject: the user's `sub` at the issuer, 1–255 bytes ({fault})"
        ))),
        None => Ok(()),
    }
}

fn not_found(issuer: &str) -> AccountError {
    AccountError::NotFound(format!(
        "no issuer {issuer} is registered (tessera issuer list)"
    ))
}

impl IssuerSpec {
    /// Checks the specification and builds the record.
    pub fn validate(&self, own_issuer: &str) -> Result<NewIssuer, AccountError> {
        let issuer = url_setting("issuer", &self.issuer)?;
        if self.issuer.trim_end_matches('/') == own_issuer.trim_end_matches('/') {
            return Err(AccountError::Invalid(
                "issuer: tessera cannot trust itself as an upstream issuer".into(),
            ));
        }
        let jwks_uri = url_setting("jwks_uri", &self.jwks_uri)?;
        let audience = match &self.audience {
            Some(a) if a.is_empty() || a.len() > 512 || a.chars().any(char::is_control) => {
                return Err(AccountError::Invalid(
                    "audience: 1–512 characters without control characters".into(),
                ));
            }
            Some(a) => a.clone(),
            None => own_issuer.to_owned(),
        };
        Ok(NewIssuer {
            issuer,
            jwks_uri,
            audience,
            create_users: self.create_users,
        })
    }
}

/// An issuer or JWKS URL: https (http only on a loopback host), no user
/// info or fragment, at most 512 characters; kept exactly as given (an
/// `iss` is compared as a string).
fn url_setting(what: &str, value: &str) -> Result<String, AccountError> {
    let invalid = |why: &str| AccountError::Invalid(format!("{what} {value:?}: {why}"));
    if value.len() > 512 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("at most 512 characters, without spaces"));
    }
    let url = url::Url::parse(value).map_err(|_| invalid("not an absolute URL"))?;
    let allowed = match url.scheme() {
        "https" => url.host_str().is_some(),
        "http" => crate::auth::accounts::is_local(&url),
        _ => false,
    };
    if !allowed {
        return Err(invalid("must be https://… (http only on localhost)"));
    }
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(invalid("no user, password or fragment"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(issuer: &str, jwks: &str) -> IssuerSpec {
        IssuerSpec {
            issuer: issuer.into(),
            jwks_uri: jwks.into(),
            audience: None,
            create_users: false,
        }
    }

    #[test]
    fn urls_must_be_https_except_on_loopback() {
        let own = "https://tessera.example";
        let ok = spec("https://idp.example/realms/a", "https://idp.example/certs");
        assert_eq!(ok.validate(own).unwrap().audience, own);
        assert!(
            spec("http://127.0.0.1:9000", "http://localhost:9000/jwks")
                .validate(own)
                .is_ok()
        );
        for (iss, jwks) in [
            ("http://idp.example", "https://idp.example/certs"),
            ("https://idp.example", "http://idp.example/certs"),
            ("https://idp.example", "file:///etc/passwd"),
            ("https://u:p@idp.example", "https://idp.example/certs"),
            ("https://idp.example", "https://idp.example/certs#x"),
            ("not a url", "https://idp.example/certs"),
            (own, "https://tessera.example/jwks"),
        ] {
            assert!(spec(iss, jwks).validate(own).is_err(), "{iss} {jwks}");
        }
    }
}
