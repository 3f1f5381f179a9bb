//! `/admin/v1`: the admin API. Every call needs an access token for this
//! issuer (`aud`) with scope `tessera:admin`, issued to an admin client that
//! is still enabled; every action is audited with that client as actor.
//!
//! | method, path | what |
//! |---|---|
//! | `POST /users` | create a user `{username, password, totp?}` |
//! | `POST /users/{username}/disable` | disable, revoking everything they hold |
//! | `POST /users/{username}/password` | set `{password}`; revokes their sessions |
//! | `POST /users/{username}/totp` | enrol TOTP; revokes their sessions |
//! | `GET /users/{username}/sessions` | live sessions |
//! | `DELETE /users/{username}/sessions` | logout everywhere |
//! | `DELETE /sessions/{sid}` | revoke one session |
//! | `POST /clients` | register a client (secret shown once) |
//! | `POST /clients/{client_id}/disable` | disable, revoking its tokens |
//! | `DELETE /clients/{client_id}/tokens` | revoke every token issued to it |
//! | `DELETE /tokens/{jti}` | revoke one access token |
//! | `GET /keys`, `POST /keys/rotate` | signing keys |
//! | `GET /audit?after=SEQ&limit=N` | the audit log, in order |
//! | `/issuers`, `/users/{username}/links` | trusted upstream issuers ([`federation`]) |

use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

pub(crate) mod federation;

use super::AppState;
use super::errors::AdminError;
use crate::audit::{Action, Event, client_actor};
use crate::auth::accounts::{ADMIN_SCOPE, ClientSpec};
use crate::store::{AuditRecord, Session};
use crate::verify::{BearerError, VerifyError};

/// The admin client behind a request, as an audit actor: an argument of
/// every admin handler, so nothing else runs for a caller that is not one.
pub struct AdminCaller {
    actor: String,
}

impl FromRequest for AdminCaller {
    type Error = AdminError;
    type Future = LocalBoxFuture<'static, Result<AdminCaller, AdminError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .expect("AppState is registered")
                .clone();
            let claims = crate::verify::authenticate(&req, state.revoker.verifier())
                .await
                .map_err(AdminError::Unauthorized)?;
            if !claims.aud.contains(state.revoker.issuer()) {
                return Err(AdminError::Unauthorized(BearerError::Invalid(
                    VerifyError::WrongAudience,
                )));
            }
            // Only a token an admin client obtained for itself
            // (client_credentials): never one that carries a user,
            // whatever scope it lists.
            if !claims.has_scope(ADMIN_SCOPE)
                || claims.sid.is_some()
                || claims.sub != claims.client_id
            {
                return Err(AdminError::Forbidden);
            }
            // The client may have lost its admin right or been disabled since.
            match state.store.client_by_id(&claims.client_id).await? {
                Some(c) if c.admin && !c.disabled => Ok(AdminCaller {
                    actor: client_actor(&c.id),
                }),
                _ => Err(AdminError::Forbidden),
            }
        })
    }
}

/// Reads a JSON body. Handlers call it after the [`AdminCaller`] argument
/// has authorized the caller, so an anonymous request learns nothing about
/// the schema.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<T, AdminError> {
    let mime = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(AdminError::NotJson);
    }
    // Already read whole and bounded by the body limit (see `limits`).
    let body = payload
        .to_bytes()
        .await
        .map_err(|_| AdminError::Invalid("the request body could not be read".into()))?;
    serde_json::from_slice(&body).map_err(|e| AdminError::Invalid(format!("request body: {e}")))
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(body)
}

fn no_content() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish()
}

type AdminResult = Result<HttpResponse, AdminError>;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewUserBody {
    username: String,
    #[schema(value_type = String)]
    password: Zeroizing<String>,
    #[serde(default)]
    totp: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedUser {
    id: String,
    username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp_uri: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Revoked {
    sessions_revoked: u64,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    #[schema(value_type = String)]
    password: Zeroizing<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Enrolled {
    totp_uri: String,
}

#[utoipa::path(post, path = "/admin/v1/users", tag = "admin", security(("admin_bearer" = [])), request_body = NewUserBody,
    responses((status = 201, description = "created", body = CreatedUser), (status = 409, description = "the username is taken", body = super::errors::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn create_user(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> AdminResult {
    let body: NewUserBody = json_body(&req, payload).await?;
    let u = state
        .accounts
        .create_user(
            &admin.actor,
            &body.username,
            body.password,
            body.totp,
            state.clock.now(),
        )
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &CreatedUser {
            id: u.id.to_string(),
            username: body.username,
            totp_uri: u.totp_uri,
        },
    ))
}

fn revoked(sessions_revoked: u64) -> HttpResponse {
    json(StatusCode::OK, &Revoked { sessions_revoked })
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/disable", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "disabled; sessions revoked", body = Revoked), (status = 404, description = "no such user", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn disable_user(
    admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    Ok(revoked(
        state
            .accounts
            .disable_user(&admin.actor, &path, state.clock.now())
            .await?,
    ))
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/password", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")), request_body = PasswordBody,
    responses((status = 200, description = "changed; sessions revoked", body = Revoked), (status = 404, description = "no such user", body = super::errors::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn set_password(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> AdminResult {
    let body: PasswordBody = json_body(&req, payload).await?;
    Ok(revoked(
        state
            .accounts
            .set_password(&admin.actor, &path, body.password, state.clock.now())
            .await?,
    ))
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/totp", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "enrolled; the otpauth:// URI (shown once); sessions revoked", body = Enrolled), (status = 404, description = "no such user", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn enrol_totp(
    admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    let uri = state
        .accounts
        .enrol_totp(&admin.actor, &path, state.clock.now())
        .await?;
    Ok(json(StatusCode::OK, &Enrolled { totp_uri: uri }))
}

/// A session as an administrator sees it: no token, no raw User-Agent.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionView {
    sid: String,
    client_id: String,
    scope: String,
    created_at: i64,
    last_used_at: i64,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    /// Coarse location: the /24 (IPv4) or /48 (IPv6) it was opened from.
    network: Option<String>,
    user_agent: Option<String>,
    /// The upstream account whose token opened it (token exchange), else null.
    upstream: Option<crate::store::UpstreamAccount>,
}

impl From<Session> for SessionView {
    fn from(s: Session) -> SessionView {
        SessionView {
            upstream: s.upstream(),
            sid: s.id.to_string(),
            client_id: s.client_id,
            scope: s.scope,
            created_at: s.created_at,
            last_used_at: s.last_used_at,
            idle_expires_at: s.idle_expires_at,
            absolute_expires_at: s.absolute_expires_at,
            network: s.network_prefix,
            user_agent: s.user_agent_summary,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SessionList {
    sub: String,
    sessions: Vec<SessionView>,
}

#[utoipa::path(get, path = "/admin/v1/users/{username}/sessions", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "the user's live sessions", body = SessionList), (status = 404, description = "no such user", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn list_sessions(
    _admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    let user = state.accounts.user(&path).await?;
    let sessions = state
        .store
        .user_sessions(user.id, state.clock.now())
        .await?;
    Ok(json(
        StatusCode::OK,
        &SessionList {
            sub: user.id.to_string(),
            sessions: sessions.into_iter().map(SessionView::from).collect(),
        },
    ))
}

#[utoipa::path(delete, path = "/admin/v1/users/{username}/sessions", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "every session revoked", body = Revoked), (status = 404, description = "no such user", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn logout_everywhere(
    admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    let user = state.accounts.user(&path).await?;
    Ok(revoked(
        state
            .revoker
            .revoke_user(&admin.actor, user.id, state.clock.now())
            .await?,
    ))
}

#[utoipa::path(delete, path = "/admin/v1/sessions/{sid}", tag = "admin", security(("admin_bearer" = [])), params(("sid" = String, Path, description = "session id (UUID)")),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such session", body = super::errors::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn revoke_session(
    admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    let sid =
        uuid::Uuid::parse_str(&path).map_err(|_| AdminError::NotFound("no such session".into()))?;
    state
        .revoker
        .revoke_session(&admin.actor, sid, state.clock.now())
        .await?;
    Ok(no_content())
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct CreatedClient {
    client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_secret: Option<String>,
    scopes: Vec<String>,
    audiences: Vec<String>,
    grants: Vec<String>,
    resource_server: bool,
}

/// A client as an administrator sees it (never its secret or digest).
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ClientView {
    client_id: String,
    confidential: bool,
    grants: Vec<String>,
    scopes: Vec<String>,
    audiences: Vec<String>,
    origins: Vec<String>,
    redirect_uris: Vec<String>,
    cookie: bool,
    admin: bool,
    resource_server: bool,
    on_binding_change: crate::store::BindingPolicy,
    require_dpop: bool,
    exchange_audiences: Vec<String>,
    disabled: bool,
    created_at: i64,
}

impl From<crate::store::Client> for ClientView {
    fn from(c: crate::store::Client) -> ClientView {
        ClientView {
            client_id: c.id,
            confidential: c.confidential,
            grants: c.grant_types,
            scopes: c.scopes,
            audiences: c.audiences,
            origins: c.origins,
            redirect_uris: c.redirect_uris,
            cookie: c.cookie,
            admin: c.admin,
            resource_server: c.resource_server,
            on_binding_change: c.on_binding_change,
            require_dpop: c.require_dpop,
            exchange_audiences: c.exchange_audiences,
            disabled: c.disabled,
            created_at: c.created_at,
        }
    }
}

/// The fields of a client an administrator may change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClientUpdate {
    /// Grant or withdraw introspection and the revocation feed.
    resource_server: bool,
}

#[utoipa::path(get, path = "/admin/v1/clients/{client_id}", tag = "admin", security(("admin_bearer" = [])), params(("client_id" = String, Path)),
    responses((status = 200, description = "the client (never its secret)", body = ClientView), (status = 404, description = "no such client", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn show_client(
    _admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    let client = state.accounts.client(&path).await?;
    Ok(json(StatusCode::OK, &ClientView::from(client)))
}

#[utoipa::path(patch, path = "/admin/v1/clients/{client_id}", tag = "admin", security(("admin_bearer" = [])), params(("client_id" = String, Path)), request_body = ClientUpdate,
    responses((status = 200, description = "updated; the client as it is now (other instances re-read it within a minute)", body = ClientView), (status = 404, description = "no such client", body = super::errors::ErrorBody), (status = 400, description = "invalid_request: a public client cannot be a resource server, or a malformed body", body = super::errors::ErrorBody), (status = 401, description = "a missing or invalid admin bearer token", body = super::errors::ErrorBody), (status = 403, description = "the token lacks tessera:admin or was not obtained by an enabled admin client for itself", body = super::errors::ErrorBody), (status = 415, description = "the body is not application/json", body = super::errors::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::errors::ErrorBody)))]
pub(crate) async fn update_client(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> AdminResult {
    let body: ClientUpdate = json_body(&req, payload).await?;
    let client = state
        .accounts
        .set_resource_server(&admin.actor, &path, body.resource_server)
        .await?;
    Ok(json(StatusCode::OK, &ClientView::from(client)))
}

#[utoipa::path(post, path = "/admin/v1/clients", tag = "admin", security(("admin_bearer" = [])), request_body = crate::auth::accounts::ClientSpec,
    responses((status = 201, description = "created; a confidential client's secret is shown once", body = CreatedClient), (status = 409, description = "the client id is taken", body = super::errors::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn create_client(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> AdminResult {
    let body: ClientSpec = json_body(&req, payload).await?;
    let (client, secret) = state
        .accounts
        .create_client(&admin.actor, &body, state.clock.now())
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &CreatedClient {
            client_id: client.id,
            client_secret: secret.map(|s| s.to_string()),
            scopes: client.scopes,
            audiences: client.audiences,
            grants: client.grant_types,
            resource_server: client.resource_server,
        },
    ))
}

#[utoipa::path(post, path = "/admin/v1/clients/{client_id}/disable", tag = "admin", security(("admin_bearer" = [])), params(("client_id" = String, Path)),
    responses((status = 200, description = "disabled; its tokens revoked", body = Revoked), (status = 404, description = "no such client", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn disable_client(
    admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    Ok(revoked(
        state
            .accounts
            .disable_client(&admin.actor, &path, state.clock.now())
            .await?,
    ))
}

#[utoipa::path(delete, path = "/admin/v1/clients/{client_id}/tokens", tag = "admin", security(("admin_bearer" = [])), params(("client_id" = String, Path)),
    responses((status = 200, description = "every token of the client revoked", body = Revoked), (status = 404, description = "no such client", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn revoke_client(
    admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    Ok(revoked(
        state
            .revoker
            .revoke_client(&admin.actor, &path, state.clock.now())
            .await?,
    ))
}

#[utoipa::path(delete, path = "/admin/v1/tokens/{jti}", tag = "admin", security(("admin_bearer" = [])), params(("jti" = String, Path, description = "the access token's jti")),
    responses((status = 204, description = "revoked (also when unknown: a jti cannot be checked)"), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn revoke_jti(
    admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    let jti = path.into_inner();
    if jti.is_empty() || jti.len() > 128 || !jti.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AdminError::Invalid(
            "jti must be 1–128 printable ASCII characters".into(),
        ));
    }
    state
        .revoker
        .revoke_jti(&admin.actor, &jti, state.clock.now())
        .await?;
    Ok(no_content())
}

#[utoipa::path(get, path = "/admin/v1/keys", tag = "admin", security(("admin_bearer" = [])),
    responses((status = 200, description = "signing keys with their states and schedule"), super::errors::AdminCallerErrors))]
pub(crate) async fn list_keys(_admin: AdminCaller, state: web::Data<AppState>) -> AdminResult {
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({ "keys": state.keys.status(state.clock.now()) }),
    ))
}

#[utoipa::path(post, path = "/admin/v1/keys/rotate", tag = "admin", security(("admin_bearer" = [])),
    responses((status = 200, description = "a new key is published; it signs after the JWKS cache lifetime"), super::errors::AdminCallerErrors))]
pub(crate) async fn rotate_keys(admin: AdminCaller, state: web::Data<AppState>) -> AdminResult {
    let status = match state.keys.rotate(state.clock.now()).await {
        Ok(status) => status,
        Err(crate::keys::keyring::KeyRingError::Store(e)) => return Err(e.into()),
        Err(e) => {
            tracing::error!(error = %e, "key rotation failed");
            return Err(AdminError::Conflict(
                "the rotation did not happen (another rotation won the race); list the keys and retry"
                    .into(),
            ));
        }
    };
    state
        .auditor
        .record_durable(
            Event::new(admin.actor, Action::KeyRotated)
                .subject(&status.kid)
                .detail("activate_at", status.activate_at),
        )
        .await;
    Ok(json(StatusCode::OK, &status))
}

#[utoipa::path(post, path = "/admin/v1/keys/{kid}/retire", tag = "admin", security(("admin_bearer" = [])),
    params(("kid" = String, Path, description = "the key's id (RFC 7638 thumbprint)")),
    responses((status = 200, description = "retired at once: unpublished, its tokens revoked (the feed's kid entry); `successor` signs from now if it was the signing key"),
        (status = 404, description = "no published key has this kid", body = super::errors::ErrorBody),
        super::errors::AdminCallerErrors))]
pub(crate) async fn retire_key(
    admin: AdminCaller,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> AdminResult {
    let kid = path.into_inner();
    let retired = match state.keys.retire_now(&kid, state.clock.now()).await {
        Ok(r) => r,
        Err(crate::keys::keyring::KeyRingError::Store(e)) => return Err(e.into()),
        Err(crate::keys::keyring::KeyRingError::Unknown(_)) => {
            return Err(AdminError::NotFound(format!("signing key {kid}")));
        }
        Err(e) => {
            tracing::error!(error = %e, "key retirement failed");
            return Err(AdminError::Conflict(
                "the key was not retired; list the keys and retry".into(),
            ));
        }
    };
    // This instance refuses the key's tokens at once; the others within a second.
    state.revoker.refresh_list().await;
    state
        .auditor
        .record_durable(
            Event::new(admin.actor, Action::KeyRetired)
                .subject(&retired.kid)
                .detail("successor", retired.successor.clone().unwrap_or_default()),
        )
        .await;
    Ok(json(StatusCode::OK, &retired))
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditRow {
    seq: i64,
    at: i64,
    actor: String,
    action: String,
    subject: Option<String>,
    #[schema(value_type = Object)]
    detail: serde_json::Value,
    network: Option<String>,
    hash: String,
}

impl From<AuditRecord> for AuditRow {
    fn from(r: AuditRecord) -> AuditRow {
        AuditRow {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            subject: r.subject,
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            network: r.network_prefix,
            hash: r.hash.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct AuditPage {
    entries: Vec<AuditRow>,
    /// Pass as `after` for the next page.
    next: i64,
    has_more: bool,
}

#[utoipa::path(get, path = "/admin/v1/audit", tag = "admin", security(("admin_bearer" = [])), params(("after" = Option<i64>, Query, description = "sequence number to start after"), ("limit" = Option<i64>, Query, description = "rows per page")),
    responses((status = 200, description = "audit rows, oldest first, with their chain hashes", body = AuditPage), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::errors::ErrorBody), super::errors::AdminCallerErrors))]
pub(crate) async fn audit(
    _admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
) -> AdminResult {
    let mut after = 0;
    let mut limit = 100;
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        let parsed = value.parse::<i64>().ok().filter(|v| *v >= 0);
        match (name.as_ref(), parsed) {
            ("after", Some(v)) => after = v,
            ("limit", Some(v)) if (1..=1000).contains(&v) => limit = v,
            _ => {
                return Err(AdminError::Invalid(
                    "query parameters: after (a sequence number) and limit (1–1000)".into(),
                ));
            }
        }
    }
    let rows = state.store.audit_page(after, limit).await?;
    let next = rows.last().map_or(after, |r| r.seq);
    let has_more = rows.len() as i64 == limit;
    Ok(json(
        StatusCode::OK,
        &AuditPage {
            entries: rows.into_iter().map(AuditRow::from).collect(),
            next,
            has_more,
        },
    ))
}
