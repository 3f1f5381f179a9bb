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

use actix_web::ResponseError;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, WWW_AUTHENTICATE};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{AppState, error_response};
use crate::audit::{Event, client_actor};
use crate::auth::accounts::{ADMIN_SCOPE, AccountError, ClientSpec};
use crate::revocation::RevokeError;
use crate::store::{AuditRecord, Session};
use crate::verify::{BearerError, VerifyError, bearer};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/admin/v1")
            .service(resource("/users", "POST").route(web::post().to(create_user)))
            .service(
                resource("/users/{username}/disable", "POST").route(web::post().to(disable_user)),
            )
            .service(
                resource("/users/{username}/password", "POST").route(web::post().to(set_password)),
            )
            .service(resource("/users/{username}/totp", "POST").route(web::post().to(enrol_totp)))
            .service(
                resource("/users/{username}/sessions", "GET, DELETE")
                    .route(web::get().to(list_sessions))
                    .route(web::delete().to(logout_everywhere)),
            )
            .service(resource("/sessions/{sid}", "DELETE").route(web::delete().to(revoke_session)))
            .service(resource("/clients", "POST").route(web::post().to(create_client)))
            .service(
                resource("/clients/{client_id}", "GET, PATCH")
                    .route(web::get().to(show_client))
                    .route(web::patch().to(update_client)),
            )
            .service(
                resource("/clients/{client_id}/disable", "POST")
                    .route(web::post().to(disable_client)),
            )
            .service(
                resource("/clients/{client_id}/tokens", "DELETE")
                    .route(web::delete().to(revoke_client)),
            )
            .service(resource("/tokens/{jti}", "DELETE").route(web::delete().to(revoke_jti)))
            .service(resource("/keys", "GET").route(web::get().to(list_keys)))
            .service(resource("/keys/rotate", "POST").route(web::post().to(rotate_keys)))
            .service(resource("/audit", "GET").route(web::get().to(audit)))
            .default_service(web::to(super::not_found)),
    );
}

/// A resource answering 405 with `Allow` to methods it does not serve.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    super::record(allow, &format!("/admin/v1{path}"));
    web::resource(path).default_service(web::to(move |req: actix_web::HttpRequest| async move {
        super::method_not_allowed(req, allow)
    }))
}

/// The admin client behind a request, as an audit actor.
struct Admin {
    actor: String,
}

fn forbidden() -> HttpResponse {
    let mut res = error_response(
        StatusCode::FORBIDDEN,
        "insufficient_scope",
        "this API needs an access token with scope tessera:admin that an admin client obtained for itself (client_credentials)",
    );
    res.headers_mut().insert(
        WWW_AUTHENTICATE,
        "Bearer error=\"insufficient_scope\", scope=\"tessera:admin\""
            .parse()
            .expect("static header"),
    );
    res
}

async fn authorize(req: &HttpRequest, state: &AppState) -> Result<Admin, HttpResponse> {
    // 401s exactly as resource servers answer them (RFC 6750).
    let refuse = |e: BearerError| e.error_response();
    let token = bearer(req).ok_or_else(|| refuse(BearerError::Missing))?;
    let claims = match state.revoker.verify_access_token(&token).await {
        Ok(c) => c,
        Err(VerifyError::KeysUnavailable) => return Err(refuse(BearerError::Unavailable)),
        Err(e) => return Err(refuse(BearerError::Invalid(e))),
    };
    if !claims.aud.contains(state.revoker.issuer()) {
        return Err(refuse(BearerError::Invalid(VerifyError::WrongAudience)));
    }
    // Only a token an admin client obtained for itself (client_credentials):
    // never one that carries a user, whatever scope it lists.
    if !claims.has_scope(ADMIN_SCOPE) || claims.sid.is_some() || claims.sub != claims.client_id {
        return Err(forbidden());
    }
    // The client may have lost its admin right or been disabled since.
    match state.store.client_by_id(&claims.client_id).await {
        Ok(Some(c)) if c.admin && !c.disabled => Ok(Admin {
            actor: client_actor(&c.id),
        }),
        Ok(_) => Err(forbidden()),
        Err(e) => Err(super::token::unavailable(&e)),
    }
}

/// Reads a JSON body, after the caller is authorized: an anonymous request
/// learns nothing about the schema.
async fn json_body<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    mut payload: web::Payload,
) -> Result<T, HttpResponse> {
    let mime = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or("");
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "request body: Content-Type must be application/json",
        ));
    }
    // Already read whole and bounded by the body limit (see `limits`).
    let mut body = web::BytesMut::new();
    while let Some(chunk) = futures_util::StreamExt::next(&mut payload).await {
        let chunk = chunk.map_err(|_| {
            error_response(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "the request body could not be read",
            )
        })?;
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            &format!("request body: {e}"),
        )
    })
}

macro_rules! body {
    ($req:expr, $payload:expr) => {
        match json_body(&$req, $payload).await {
            Ok(body) => body,
            Err(response) => return response,
        }
    };
}

fn json<T: Serialize>(status: StatusCode, body: &T) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((CACHE_CONTROL, "no-store"))
        .json(body)
}

fn account_error(e: AccountError) -> HttpResponse {
    match e {
        AccountError::Invalid(m) => error_response(StatusCode::BAD_REQUEST, "invalid_request", &m),
        AccountError::NotFound(m) => error_response(StatusCode::NOT_FOUND, "not_found", &m),
        AccountError::Conflict(m) => error_response(StatusCode::CONFLICT, "conflict", &m),
        AccountError::Store(e) => super::token::unavailable(&e),
    }
}

fn revoke_error(e: RevokeError) -> HttpResponse {
    match e {
        RevokeError::NotFound(what) => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no such {what}"),
        ),
        RevokeError::NotYourToken => error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "the token was not issued to this client",
        ),
        RevokeError::Store(e) => super::token::unavailable(&e),
    }
}

macro_rules! admin {
    ($req:expr, $state:expr) => {
        match authorize(&$req, &$state).await {
            Ok(admin) => admin,
            Err(response) => return response,
        }
    };
}

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
struct CreatedUser {
    id: String,
    username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    totp_uri: Option<String>,
}

#[utoipa::path(post, path = "/admin/v1/users", tag = "admin", security(("admin_bearer" = [])), request_body = NewUserBody,
    responses((status = 201, description = "created", body = CreatedUser), (status = 409, description = "the username is taken", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn create_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let admin = admin!(req, state);
    let body: NewUserBody = body!(req, payload);
    match state
        .accounts
        .create_user(
            &admin.actor,
            &body.username,
            body.password,
            body.totp,
            now(),
        )
        .await
    {
        Ok(u) => json(
            StatusCode::CREATED,
            &CreatedUser {
                id: u.id.to_string(),
                username: body.username,
                totp_uri: u.totp_uri,
            },
        ),
        Err(e) => account_error(e),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Revoked {
    sessions_revoked: u64,
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/disable", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "disabled; sessions revoked", body = Revoked), (status = 404, description = "no such user", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn disable_user(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let admin = admin!(req, state);
    match state
        .accounts
        .disable_user(&admin.actor, &path, now())
        .await
    {
        Ok(n) => json(
            StatusCode::OK,
            &Revoked {
                sessions_revoked: n,
            },
        ),
        Err(e) => account_error(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PasswordBody {
    #[schema(value_type = String)]
    password: Zeroizing<String>,
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/password", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")), request_body = PasswordBody,
    responses((status = 200, description = "changed; sessions revoked", body = Revoked), (status = 404, description = "no such user", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn set_password(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let admin = admin!(req, state);
    let body: PasswordBody = body!(req, payload);
    match state
        .accounts
        .set_password(&admin.actor, &path, body.password, now())
        .await
    {
        Ok(n) => json(
            StatusCode::OK,
            &Revoked {
                sessions_revoked: n,
            },
        ),
        Err(e) => account_error(e),
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct Enrolled {
    totp_uri: String,
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/totp", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "enrolled; the otpauth:// URI (shown once); sessions revoked", body = Enrolled), (status = 404, description = "no such user", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn enrol_totp(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let admin = admin!(req, state);
    match state.accounts.enrol_totp(&admin.actor, &path, now()).await {
        Ok(uri) => json(StatusCode::OK, &Enrolled { totp_uri: uri }),
        Err(e) => account_error(e),
    }
}

/// A session as an administrator sees it: no token, no raw User-Agent.
#[derive(Serialize, utoipa::ToSchema)]
struct SessionView {
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
}

impl From<Session> for SessionView {
    fn from(s: Session) -> SessionView {
        SessionView {
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
struct SessionList {
    sub: String,
    sessions: Vec<SessionView>,
}

#[utoipa::path(get, path = "/admin/v1/users/{username}/sessions", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "the user's live sessions", body = SessionList), (status = 404, description = "no such user", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn list_sessions(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let _admin = admin!(req, state);
    let user = match state.accounts.user(&path).await {
        Ok(u) => u,
        Err(e) => return account_error(e),
    };
    match state.store.user_sessions(user.id, now()).await {
        Ok(sessions) => json(
            StatusCode::OK,
            &SessionList {
                sub: user.id.to_string(),
                sessions: sessions.into_iter().map(SessionView::from).collect(),
            },
        ),
        Err(e) => super::token::unavailable(&e),
    }
}

#[utoipa::path(delete, path = "/admin/v1/users/{username}/sessions", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "every session revoked", body = Revoked), (status = 404, description = "no such user", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn logout_everywhere(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let admin = admin!(req, state);
    let user = match state.accounts.user(&path).await {
        Ok(u) => u,
        Err(e) => return account_error(e),
    };
    match state
        .revoker
        .revoke_user(&admin.actor, user.id, now())
        .await
    {
        Ok(n) => json(
            StatusCode::OK,
            &Revoked {
                sessions_revoked: n,
            },
        ),
        Err(e) => revoke_error(e),
    }
}

#[utoipa::path(delete, path = "/admin/v1/sessions/{sid}", tag = "admin", security(("admin_bearer" = [])), params(("sid" = String, Path, description = "session id (UUID)")),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such session", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn revoke_session(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let admin = admin!(req, state);
    let Ok(sid) = uuid::Uuid::parse_str(&path) else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "no such session");
    };
    match state.revoker.revoke_session(&admin.actor, sid, now()).await {
        Ok(()) => no_content(),
        Err(e) => revoke_error(e),
    }
}

fn no_content() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header((CACHE_CONTROL, "no-store"))
        .finish()
}

#[derive(Serialize, utoipa::ToSchema)]
struct CreatedClient {
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
    cookie: bool,
    admin: bool,
    resource_server: bool,
    on_binding_change: String,
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
            cookie: c.cookie,
            admin: c.admin,
            resource_server: c.resource_server,
            on_binding_change: c.on_binding_change,
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
    responses((status = 200, description = "the client (never its secret)", body = ClientView), (status = 404, description = "no such client", body = super::openapi::ErrorBody), (status = 401, description = "a missing or invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or was not obtained by an enabled admin client for itself", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn show_client(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let _admin = admin!(req, state);
    match state.accounts.client(&path).await {
        Ok(c) => json(StatusCode::OK, &ClientView::from(c)),
        Err(e) => account_error(e),
    }
}

#[utoipa::path(patch, path = "/admin/v1/clients/{client_id}", tag = "admin", security(("admin_bearer" = [])), params(("client_id" = String, Path)), request_body = ClientUpdate,
    responses((status = 200, description = "updated; the client as it is now (other instances re-read it within a minute)", body = ClientView), (status = 404, description = "no such client", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request: a public client cannot be a resource server, or a malformed body", body = super::openapi::ErrorBody), (status = 401, description = "a missing or invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or was not obtained by an enabled admin client for itself", body = super::openapi::ErrorBody), (status = 415, description = "the body is not application/json", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn update_client(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let admin = admin!(req, state);
    let body: ClientUpdate = body!(req, payload);
    match state
        .accounts
        .set_resource_server(&admin.actor, &path, body.resource_server)
        .await
    {
        Ok(c) => json(StatusCode::OK, &ClientView::from(c)),
        Err(e) => account_error(e),
    }
}

#[utoipa::path(post, path = "/admin/v1/clients", tag = "admin", security(("admin_bearer" = [])), request_body = crate::auth::accounts::ClientSpec,
    responses((status = 201, description = "created; a confidential client's secret is shown once", body = CreatedClient), (status = 409, description = "the client id is taken", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn create_client(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let admin = admin!(req, state);
    let body: ClientSpec = body!(req, payload);
    match state
        .accounts
        .create_client(&admin.actor, &body, now())
        .await
    {
        Ok((client, secret)) => json(
            StatusCode::CREATED,
            &CreatedClient {
                client_id: client.id,
                client_secret: secret.map(|s| s.to_string()),
                scopes: client.scopes,
                audiences: client.audiences,
                grants: client.grant_types,
                resource_server: client.resource_server,
            },
        ),
        Err(e) => account_error(e),
    }
}

#[utoipa::path(post, path = "/admin/v1/clients/{client_id}/disable", tag = "admin", security(("admin_bearer" = [])), params(("client_id" = String, Path)),
    responses((status = 200, description = "disabled; its tokens revoked"), (status = 404, description = "no such client", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn disable_client(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let admin = admin!(req, state);
    match state
        .accounts
        .disable_client(&admin.actor, &path, now())
        .await
    {
        Ok(n) => json(
            StatusCode::OK,
            &Revoked {
                sessions_revoked: n,
            },
        ),
        Err(e) => account_error(e),
    }
}

#[utoipa::path(delete, path = "/admin/v1/clients/{client_id}/tokens", tag = "admin", security(("admin_bearer" = [])), params(("client_id" = String, Path)),
    responses((status = 200, description = "every token of the client revoked"), (status = 404, description = "no such client", body = super::openapi::ErrorBody), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn revoke_client(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let admin = admin!(req, state);
    match state
        .revoker
        .revoke_client(&admin.actor, &path, now())
        .await
    {
        Ok(n) => json(
            StatusCode::OK,
            &Revoked {
                sessions_revoked: n,
            },
        ),
        Err(e) => revoke_error(e),
    }
}

#[utoipa::path(delete, path = "/admin/v1/tokens/{jti}", tag = "admin", security(("admin_bearer" = [])), params(("jti" = String, Path, description = "the access token's jti")),
    responses((status = 204, description = "revoked (also when unknown: a jti cannot be checked)"), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn revoke_jti(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let admin = admin!(req, state);
    let jti = path.into_inner();
    if jti.is_empty() || jti.len() > 128 || !jti.bytes().all(|b| b.is_ascii_graphic()) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "jti must be 1–128 printable ASCII characters",
        );
    }
    match state.revoker.revoke_jti(&admin.actor, &jti, now()).await {
        Ok(()) => no_content(),
        Err(e) => revoke_error(e),
    }
}

#[utoipa::path(get, path = "/admin/v1/keys", tag = "admin", security(("admin_bearer" = [])),
    responses((status = 200, description = "signing keys with their states and schedule"), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn list_keys(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let _admin = admin!(req, state);
    json(
        StatusCode::OK,
        &serde_json::json!({ "keys": state.keys.status(now()) }),
    )
}

#[utoipa::path(post, path = "/admin/v1/keys/rotate", tag = "admin", security(("admin_bearer" = [])),
    responses((status = 200, description = "a new key is published; it signs after the JWKS cache lifetime"), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn rotate_keys(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let admin = admin!(req, state);
    match state.keys.rotate(now()).await {
        Ok(status) => {
            state
                .auditor
                .record_durable(
                    Event::new(admin.actor, "key_rotated")
                        .subject(&status.kid)
                        .detail("activate_at", status.activate_at),
                )
                .await;
            json(StatusCode::OK, &status)
        }
        Err(crate::keys::keyring::KeyRingError::Store(e)) => super::token::unavailable(&e),
        Err(e) => {
            tracing::error!(error = %e, "key rotation failed");
            error_response(
                StatusCode::CONFLICT,
                "conflict",
                "the rotation did not happen (another rotation won the race); list the keys and retry",
            )
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
struct AuditRow {
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
struct AuditPage {
    entries: Vec<AuditRow>,
    /// Pass as `after` for the next page.
    next: i64,
    has_more: bool,
}

#[utoipa::path(get, path = "/admin/v1/audit", tag = "admin", security(("admin_bearer" = [])), params(("after" = Option<i64>, Query, description = "sequence number to start after"), ("limit" = Option<i64>, Query, description = "rows per page")),
    responses((status = 200, description = "audit rows, oldest first, with their chain hashes", body = AuditPage), (status = 400, description = "invalid_request and other RFC 6749 errors", body = super::openapi::ErrorBody), (status = 401, description = "invalid_client (with a Basic challenge) or a missing/invalid admin bearer token", body = super::openapi::ErrorBody), (status = 403, description = "the token lacks tessera:admin or its client is not an enabled admin", body = super::openapi::ErrorBody), (status = 503, description = "temporarily_unavailable: the database is down; with Retry-After", body = super::openapi::ErrorBody)))]
pub(crate) async fn audit(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let _admin = admin!(req, state);
    let mut after = 0;
    let mut limit = 100;
    for (name, value) in url::form_urlencoded::parse(req.query_string().as_bytes()) {
        let parsed = value.parse::<i64>().ok().filter(|v| *v >= 0);
        match (name.as_ref(), parsed) {
            ("after", Some(v)) => after = v,
            ("limit", Some(v)) if (1..=1000).contains(&v) => limit = v,
            _ => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "query parameters: after (a sequence number) and limit (1–1000)",
                );
            }
        }
    }
    match state.store.audit_page(after, limit).await {
        Ok(rows) => {
            let next = rows.last().map_or(after, |r| r.seq);
            let has_more = rows.len() as i64 == limit;
            json(
                StatusCode::OK,
                &AuditPage {
                    entries: rows.into_iter().map(AuditRow::from).collect(),
                    next,
                    has_more,
                },
            )
        }
        Err(e) => super::token::unavailable(&e),
    }
}
