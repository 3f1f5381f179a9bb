//! `grant_type=password` (RFC 6749 §4.3, legacy): the user's password
//! (and TOTP code) through the client opens a session. The checks are the
//! login page's ([`crate::auth::login`]). Legacy because the app sees the
//! password: RFC 9700 forbids this grant for new apps, so clients get it
//! only when registered with `--grant password`.

use std::collections::HashMap;

use super::{TokenEndpoint, TokenResponse, credentials_changed, login_error};
use crate::audit::{Action, Event, user_actor};
use crate::auth::network;
use crate::oauth::{ErrorCode, OAuthError, invalid_request};
use crate::store::Client;
use crate::tokens::policy::{audiences, scopes};

impl TokenEndpoint {
    /// RFC 6749 §4.3: the user's password opens a session.
    pub(super) async fn password(
        &self,
        client: &Client,
        params: &HashMap<String, String>,
        user_agent: Option<String>,
        ip: Option<std::net::IpAddr>,
        jkt: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let username = params
            .get("username")
            .ok_or_else(|| invalid_request("username is required"))?;
        let secret = params
            .get("password")
            .ok_or_else(|| invalid_request("password is required"))?;
        let scope = scopes(client, params, true)?;
        let audiences = audiences(client, params)?;
        let checked = self
            .credentials
            .password(&client.id, username, secret, ip, now)
            .await
            .map_err(login_error)?;
        // The second factor is asked for only once the password is right.
        if checked.user.totp_secret.is_some() {
            let Some(code) = params.get("otp") else {
                // Nothing was guessed yet: the attempt is given back.
                self.credentials
                    .not_checked(checked.attempt)
                    .await
                    .map_err(login_error)?;
                return Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "a one-time password is required for this user: send it in the otp parameter",
                ));
            };
            self.credentials
                .otp(&client.id, &checked.user, &checked.attempt, code, ip, now)
                .await
                .map_err(login_error)?;
        }
        self.credentials
            .succeeded(checked.attempt)
            .await
            .map_err(login_error)?;
        let user = checked.user;
        let network = ip.map(network::prefix);
        let Some(session) = self
            .open_session(
                &user,
                client,
                &scope,
                user_agent,
                network.clone(),
                now,
                uuid::Uuid::new_v4(),
                jkt,
                None,
            )
            .await?
        else {
            self.audit_credentials_changed(client, &user, ip).await;
            return Err(credentials_changed());
        };
        self.auditor
            .record(
                Event::new(user_actor(user.id), Action::Login)
                    .subject(session.id)
                    .detail("client_id", client.id.clone())
                    .detail("totp", user.totp_secret.is_some())
                    .network(network),
            )
            .await;
        self.session_response(client, &user, session, audiences, scope, jkt, now)
            .await
    }
}
