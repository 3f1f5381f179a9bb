//! The authorization code flow (RFC 6749 §4.1 with PKCE, OAuth 2.1) up to
//! the code: the authorization request, tessera's own login form with its
//! TOTP step, the browser sign-in that lets a second app skip the form,
//! and the redirect back with `code`, `state` and `iss` (RFC 9207).
//!
//! Free of HTTP types: `src/http/authorize.rs` reads cookies and the form,
//! and renders what [`Outcome`] says. The token endpoint redeems the codes
//! (`tokens::grant::authorization_code`).

pub mod request;
pub mod sealed;

use std::net::IpAddr;
use std::sync::Arc;

use crate::audit::{Action, Auditor, Event, user_actor};
use crate::auth::login::{Credentials, LoginError};
use crate::auth::network;
use crate::oauth::ErrorCode;
use crate::store::{Store, User};
use crate::tokens::ClientAuthenticator;

pub use request::{AuthorizationRequest, ErrorRedirect, Prompt, RawParams, RequestError};
pub use sealed::{CodeGrant, Pending, Sealer, SignIn, pkce_matches};

/// The cookie holding the browser's sign-in at tessera.
pub const SSO_COOKIE: &str = "__Host-tessera-sso";
/// The cookie the login form's anti-CSRF token is bound to.
pub const LOGIN_COOKIE: &str = "__Host-tessera-login";
/// How long the login cookie lives (a form left open longer is reloaded).
pub const LOGIN_COOKIE_TTL: i64 = 3600;

/// What the browser gets.
#[derive(Debug)]
pub enum Outcome {
    /// `303 See Other` to `location` (the client's redirect URI with a code
    /// or an error), setting the sign-in cookie if `sign_in` is given.
    Redirect {
        /// Where to.
        location: String,
        /// A new sign-in cookie value and its lifetime.
        sign_in: Option<(String, i64)>,
    },
    /// A form to show.
    Form(Box<Form>),
    /// An error page, never a redirect (no client/redirect URI to trust).
    Page {
        /// HTTP status.
        status: u16,
        /// What was wrong, for the person at the browser.
        message: String,
    },
}

/// Which step of the login a form is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Username and password.
    Password,
    /// The TOTP code, after a right password; carries the sealed step.
    Otp {
        /// The sealed [`Pending`].
        pending: String,
    },
}

/// A login form to render.
#[derive(Debug)]
pub struct Form {
    /// HTTP status (200, or the error's).
    pub status: u16,
    /// Which step.
    pub step: Step,
    /// The authorization request's fields, carried through the form.
    pub fields: Vec<(&'static str, String)>,
    /// The anti-CSRF token.
    pub csrf: String,
    /// A new login cookie to set (the browser had none, or an unusable one).
    pub set_login_cookie: Option<String>,
    /// What went wrong on the last attempt, for the person.
    pub error: Option<String>,
    /// Seconds to wait before retrying (429/503).
    pub retry_after: Option<i64>,
    /// The username to fill in again.
    pub username: Option<String>,
    /// The client's id, shown on the form.
    pub client_id: String,
    /// The redirect URI (its origin may be the form's redirect target:
    /// the CSP's `form-action` must allow it).
    pub redirect_uri: String,
}

/// The browser's cookies and facts the flow reads.
#[derive(Debug, Default)]
pub struct Browser {
    /// `__Host-tessera-sso`.
    pub sign_in: Option<String>,
    /// `__Host-tessera-login`.
    pub login: Option<String>,
    /// The client address.
    pub ip: Option<IpAddr>,
}

/// What the flow works with.
pub struct Authorizer {
    store: Arc<dyn Store>,
    clients: Arc<ClientAuthenticator>,
    credentials: Arc<Credentials>,
    sealer: Sealer,
    auditor: Auditor,
    issuer: String,
    sign_in_ttl: i64,
}

impl Authorizer {
    /// The flow for `issuer`; sign-ins last `sign_in_ttl` seconds (0: none kept).
    pub fn new(
        store: Arc<dyn Store>,
        clients: Arc<ClientAuthenticator>,
        credentials: Arc<Credentials>,
        sealer: Sealer,
        auditor: Auditor,
        issuer: String,
        sign_in_ttl: i64,
    ) -> Authorizer {
        Authorizer {
            store,
            clients,
            credentials,
            sealer,
            auditor,
            issuer,
            sign_in_ttl,
        }
    }

    async fn request(&self, params: &RawParams) -> Result<AuthorizationRequest, Outcome> {
        let clients = self.clients.clone();
        request::parse(params, |id| async move {
            clients.client(&id).await.map_err(|e| {
                tracing::error!(error = %e, "client lookup failed");
                "the service is unavailable; try again shortly".to_owned()
            })
        })
        .await
        .map_err(|e| match e {
            RequestError::Page(message) => Outcome::Page {
                status: 400,
                message,
            },
            RequestError::Redirect(r) => self.error_redirect(&r),
        })
    }

    /// `GET /oauth/authorize`: a code at once for a browser signed in
    /// (unless `prompt=login`), `login_required` for `prompt=none` without
    /// one, else the login form.
    pub async fn begin(&self, params: &RawParams, browser: &Browser, now: i64) -> Outcome {
        let request = match self.request(params).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        if request.prompt != Prompt::Login
            && let Some(sign_in) = browser.sign_in.as_deref()
        {
            let fresh_enough = |s: &SignIn| {
                request
                    .max_age
                    .is_none_or(|max_age| max_age > 0 && now - s.auth_time <= i64::from(max_age))
            };
            match self.signed_in(sign_in, now).await {
                Ok(Some((user, s))) if fresh_enough(&s) => {
                    self.audit_login(&request, &user, &s.amr, "sign-in", browser.ip)
                        .await;
                    return self.code_redirect(&request, &user, s.auth_time, s.amr, now, None);
                }
                Ok(_) => {}
                Err(outcome) => return self.unavailable(&request, outcome),
            }
        }
        if request.prompt == Prompt::None {
            return self.error_redirect(&ErrorRedirect {
                redirect_uri: request.redirect_uri.clone(),
                state: request.state.clone(),
                error: ErrorCode::LoginRequired,
                description: "the browser is not signed in at tessera".into(),
            });
        }
        let hint = request.login_hint.clone();
        self.form(&request, browser, Step::Password, 200, hint.as_deref())
    }

    /// `POST /oauth/authorize`: a step of the login form.
    pub async fn submit(&self, params: &RawParams, browser: &Browser, now: i64) -> Outcome {
        let request = match self.request(params).await {
            Ok(r) => r,
            Err(outcome) => return outcome,
        };
        let field = |name: &str| {
            params
                .get(name)
                .and_then(|v| (v.len() == 1).then(|| v[0].as_str()))
        };
        // Login CSRF: the token must be the one made for this browser's cookie.
        let Some(login) = browser
            .login
            .as_deref()
            .filter(|b| field("csrf").is_some_and(|t| self.sealer.csrf_ok(b, t)))
        else {
            let mut form = self.form(&request, browser, Step::Password, 403, None);
            if let Outcome::Form(f) = &mut form {
                f.error = Some(
                    "This sign-in form expired or was not sent from this page. Please sign in again."
                        .into(),
                );
            }
            return form;
        };
        let failed = |step: Step, status: u16, e: &LoginError, username: Option<&str>| {
            let mut form = self.form(&request, browser, step, status, username);
            if let Outcome::Form(f) = &mut form {
                f.error = Some(match e {
                    LoginError::BadCredentials => "Wrong username or password.".into(),
                    LoginError::WrongOtp => "Wrong or already used code.".into(),
                    other => format!("{}{}", capitalized(&other.to_string()), "."),
                });
                f.retry_after = match e {
                    LoginError::Throttled { retry_after, .. } => Some(*retry_after),
                    LoginError::Busy | LoginError::NetworkBusy => Some(1),
                    _ => None,
                };
            }
            form
        };
        let status = |e: &LoginError| match e {
            LoginError::BadCredentials | LoginError::WrongOtp => 401,
            LoginError::Throttled { .. } | LoginError::NetworkBusy => 429,
            LoginError::Busy | LoginError::Unavailable(_) => 503,
            LoginError::OtpRequired => 401,
            LoginError::Internal => 500,
        };

        if let Some(pending) = field("pending") {
            // The second step: the TOTP code.
            let Some(p) = self.sealer.open_pending(pending, login, now) else {
                return failed(Step::Password, 400, &LoginError::BadCredentials, None)
                    .with_error("The sign-in took too long. Please enter your password again.");
            };
            let step = Step::Otp {
                pending: pending.to_owned(),
            };
            let Some(code) = field("otp") else {
                return failed(step, 400, &LoginError::WrongOtp, None)
                    .with_error("Enter the code from your authenticator app.");
            };
            let attempt = match self.credentials.attempt(&p.username, browser.ip, now).await {
                Ok(a) => a,
                Err(e) => return failed(step, status(&e), &e, None),
            };
            let user = match self.store.user_by_id(p.user).await {
                Ok(Some(u)) if !u.disabled && u.credential_version == p.credential_version => u,
                Ok(_) => {
                    let _ = self.credentials.not_checked(attempt).await;
                    return failed(Step::Password, 401, &LoginError::BadCredentials, None)
                        .with_error("Your sign-in changed meanwhile. Please sign in again.");
                }
                Err(e) => {
                    let _ = self.credentials.not_checked(attempt).await;
                    let e = LoginError::Unavailable(e);
                    return failed(step, status(&e), &e, None);
                }
            };
            if let Err(e) = self
                .credentials
                .otp(&request.client.id, &user, &attempt, code, browser.ip, now)
                .await
            {
                return failed(step, status(&e), &e, None);
            }
            if let Err(e) = self.credentials.succeeded(attempt).await {
                return failed(step, status(&e), &e, None);
            }
            return self
                .signed_in_now(&request, &user, vec!["pwd", "otp"], browser, now)
                .await;
        }

        // The first step: username and password.
        let (Some(username), Some(password)) = (field("username"), field("password")) else {
            return failed(Step::Password, 400, &LoginError::BadCredentials, None)
                .with_error("Enter your username and password.");
        };
        let typed = Some(username).filter(|u| u.len() <= 256);
        let checked = match self
            .credentials
            .password(&request.client.id, username, password, browser.ip, now)
            .await
        {
            Ok(c) => c,
            Err(e) => return failed(Step::Password, status(&e), &e, typed),
        };
        if checked.user.totp_secret.is_some() {
            // Nothing was guessed yet: the attempt is given back, and the
            // code is counted as an attempt of its own.
            if let Err(e) = self.credentials.not_checked(checked.attempt).await {
                return failed(Step::Password, status(&e), &e, typed);
            }
            let pending = self.sealer.pending(
                &Pending {
                    user: checked.user.id,
                    username: username.to_owned(),
                    credential_version: checked.user.credential_version,
                    expires_at: now + sealed::PENDING_TTL,
                },
                login,
            );
            return self.form(&request, browser, Step::Otp { pending }, 200, None);
        }
        if let Err(e) = self.credentials.succeeded(checked.attempt).await {
            return failed(Step::Password, status(&e), &e, typed);
        }
        self.signed_in_now(&request, &checked.user, vec!["pwd"], browser, now)
            .await
    }

    /// A user who just authenticated: the sign-in cookie and the code.
    async fn signed_in_now(
        &self,
        request: &AuthorizationRequest,
        user: &User,
        amr: Vec<&str>,
        browser: &Browser,
        now: i64,
    ) -> Outcome {
        let amr: Vec<String> = amr.into_iter().map(str::to_owned).collect();
        self.audit_login(request, user, &amr, "login form", browser.ip)
            .await;
        let sign_in = (self.sign_in_ttl > 0).then(|| {
            (
                self.sealer.sign_in(&SignIn {
                    user: user.id,
                    credential_version: user.credential_version,
                    auth_time: now,
                    amr: amr.clone(),
                    expires_at: now + self.sign_in_ttl,
                }),
                self.sign_in_ttl,
            )
        });
        self.code_redirect(request, user, now, amr, now, sign_in)
    }

    /// The sign-in of this cookie, if it is still good: not expired, its
    /// user enabled, under the same credentials, and not signed out
    /// everywhere since.
    async fn signed_in(
        &self,
        cookie: &str,
        now: i64,
    ) -> Result<Option<(User, SignIn)>, crate::store::StoreError> {
        let Some(s) = self.sealer.open_sign_in(cookie, now) else {
            return Ok(None);
        };
        Ok(self.store.user_by_id(s.user).await?.and_then(|u| {
            (!u.disabled
                && u.credential_version == s.credential_version
                && s.auth_time > u.signed_out_at)
                .then_some((u, s))
        }))
    }

    fn code_redirect(
        &self,
        request: &AuthorizationRequest,
        user: &User,
        auth_time: i64,
        amr: Vec<String>,
        now: i64,
        sign_in: Option<(String, i64)>,
    ) -> Outcome {
        let code = self.sealer.code(&CodeGrant {
            sid: uuid::Uuid::new_v4(),
            client_id: request.client.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
            challenge: request.code_challenge.clone(),
            user: user.id,
            credential_version: user.credential_version,
            scope: request.scope.clone(),
            nonce: request.nonce.clone(),
            auth_time,
            amr,
            expires_at: now + sealed::CODE_TTL,
        });
        let mut pairs = vec![("code", code.as_str())];
        if let Some(state) = &request.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", &self.issuer));
        Outcome::Redirect {
            location: with_query(&request.redirect_uri, &pairs),
            sign_in,
        }
    }

    /// RFC 6749 §4.1.2.1 with RFC 9207's `iss`.
    fn error_redirect(&self, r: &ErrorRedirect) -> Outcome {
        let mut pairs = vec![
            ("error", r.error.as_str()),
            ("error_description", r.description.as_str()),
        ];
        if let Some(state) = &r.state {
            pairs.push(("state", state));
        }
        pairs.push(("iss", &self.issuer));
        Outcome::Redirect {
            location: with_query(&r.redirect_uri, &pairs),
            sign_in: None,
        }
    }

    fn unavailable(&self, request: &AuthorizationRequest, e: crate::store::StoreError) -> Outcome {
        tracing::error!(error = %e, "database error at the authorization endpoint");
        self.error_redirect(&ErrorRedirect {
            redirect_uri: request.redirect_uri.clone(),
            state: request.state.clone(),
            error: ErrorCode::TemporarilyUnavailable,
            description: "try again shortly".into(),
        })
    }

    fn form(
        &self,
        request: &AuthorizationRequest,
        browser: &Browser,
        step: Step,
        status: u16,
        username: Option<&str>,
    ) -> Outcome {
        // A cookie of ours is 43 base64url characters; anything else is replaced.
        let existing = browser.login.as_deref().filter(|b| {
            b.len() == 43
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        });
        let (login, set_login_cookie) = match existing {
            Some(b) => (b.to_owned(), None),
            None => {
                let fresh = Sealer::new_browser();
                (fresh.clone(), Some(fresh))
            }
        };
        // A second step bound to a cookie the browser no longer has is void.
        let step = match step {
            Step::Otp { .. } if set_login_cookie.is_some() => Step::Password,
            other => other,
        };
        Outcome::Form(Box::new(Form {
            status,
            step,
            fields: request.form_fields(),
            csrf: self.sealer.csrf_token(&login),
            set_login_cookie,
            error: None,
            retry_after: None,
            username: username.map(str::to_owned),
            client_id: request.client.id.clone(),
            redirect_uri: request.redirect_uri.clone(),
        }))
    }

    async fn audit_login(
        &self,
        request: &AuthorizationRequest,
        user: &User,
        amr: &[String],
        via: &'static str,
        ip: Option<IpAddr>,
    ) {
        self.auditor
            .record(
                Event::new(user_actor(user.id), Action::AuthorizationCodeIssued)
                    .detail("client_id", request.client.id.clone())
                    .detail("via", via)
                    .detail("amr", amr.join(" "))
                    .network(ip.map(network::prefix)),
            )
            .await;
    }
}

impl Outcome {
    /// The same form with `message` as its error.
    fn with_error(mut self, message: &str) -> Outcome {
        if let Outcome::Form(f) = &mut self {
            f.error = Some(message.to_owned());
        }
        self
    }
}

fn capitalized(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `uri` with `pairs` added to its query (it may have one already).
fn with_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let encoded: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    let separator = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{separator}{encoded}")
}
