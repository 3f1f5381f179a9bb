//! `/admin/v1/issuers` and `/admin/v1/users/{username}/links`: trusted
//! upstream issuers (RFC 8693 token exchange) and users' links to them.
//!
//! | method, path | what |
//! |---|---|
//! | `GET /issuers` | every registered issuer |
//! | `POST /issuers` | register `{issuer, jwks_uri, audience?, create_users?}` |
//! | `POST /issuers/disable` | `{issuer}`: refuse its tokens, end its sessions |
//! | `POST /issuers/enable` | `{issuer}`: trust it again |
//! | `GET /users/{username}/links` | the user's upstream identities |
//! | `POST /users/{username}/links` | link `{issuer, subject}` to the user |
//! | `POST /users/{username}/links/remove` | remove the link `{issuer, subject}`; end its sessions |

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, web};
use serde::{Deserialize, Serialize};

use super::super::AppState;
use super::{AdminCaller, AdminResult, json, json_body};
use crate::federation::issuers::{IssuerChange, IssuerSpec};
use crate::store::{TrustedIssuer, UserLink};

/// The registered issuers.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct IssuerList {
    issuers: Vec<TrustedIssuer>,
}

/// Names one issuer (an `iss` is a URL, so it travels in the body).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct IssuerName {
    /// The issuer's `iss`, exactly as registered.
    issuer: String,
}

/// A user's identity at an upstream issuer.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LinkBody {
    /// A registered issuer.
    issuer: String,
    /// The user's `sub` there.
    subject: String,
}

/// A user's upstream identities.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct LinkList {
    sub: String,
    links: Vec<UserLink>,
}

#[utoipa::path(get, path = "/admin/v1/issuers", tag = "admin", security(("admin_bearer" = [])),
    responses((status = 200, description = "every registered issuer", body = IssuerList), super::super::errors::AdminCallerErrors))]
pub(crate) async fn list_issuers(_admin: AdminCaller, state: web::Data<AppState>) -> AdminResult {
    let issuers = state.issuers.list().await?;
    Ok(json(StatusCode::OK, &IssuerList { issuers }))
}

#[utoipa::path(post, path = "/admin/v1/issuers", tag = "admin", security(("admin_bearer" = [])), request_body = IssuerSpec,
    responses((status = 201, description = "registered", body = TrustedIssuer), (status = 409, description = "the issuer is registered already", body = super::super::errors::ErrorBody), (status = 400, description = "invalid_request: a URL that is not https (http only on loopback), or a malformed body", body = super::super::errors::ErrorBody), super::super::errors::AdminCallerErrors))]
pub(crate) async fn add_issuer(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> AdminResult {
    let body: IssuerSpec = json_body(&req, payload).await?;
    let issuer = state
        .issuers
        .add(&admin.actor, &body, state.clock.now())
        .await?;
    Ok(json(StatusCode::CREATED, &issuer))
}

#[utoipa::path(post, path = "/admin/v1/issuers/disable", tag = "admin", security(("admin_bearer" = [])), request_body = IssuerName,
    responses((status = 200, description = "disabled: its tokens are refused and every session they opened is revoked", body = IssuerChange), (status = 404, description = "no such issuer", body = super::super::errors::ErrorBody), super::super::errors::AdminCallerErrors))]
pub(crate) async fn disable_issuer(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> AdminResult {
    set_disabled(admin, req, state, payload, true).await
}

#[utoipa::path(post, path = "/admin/v1/issuers/enable", tag = "admin", security(("admin_bearer" = [])), request_body = IssuerName,
    responses((status = 200, description = "enabled again (revoked sessions stay revoked)", body = IssuerChange), (status = 404, description = "no such issuer", body = super::super::errors::ErrorBody), super::super::errors::AdminCallerErrors))]
pub(crate) async fn enable_issuer(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> AdminResult {
    set_disabled(admin, req, state, payload, false).await
}

async fn set_disabled(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
    disabled: bool,
) -> AdminResult {
    let body: IssuerName = json_body(&req, payload).await?;
    let change = state
        .issuers
        .set_disabled(&admin.actor, &body.issuer, disabled, state.clock.now())
        .await?;
    Ok(json(StatusCode::OK, &change))
}

#[utoipa::path(get, path = "/admin/v1/users/{username}/links", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")),
    responses((status = 200, description = "the user's upstream identities", body = LinkList), (status = 404, description = "no such user", body = super::super::errors::ErrorBody), super::super::errors::AdminCallerErrors))]
pub(crate) async fn list_links(
    _admin: AdminCaller,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> AdminResult {
    let (user, links) = state.issuers.links(&path).await?;
    Ok(json(
        StatusCode::OK,
        &LinkList {
            sub: user.id.to_string(),
            links,
        },
    ))
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/links", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")), request_body = LinkBody,
    responses((status = 201, description = "linked: the issuer's tokens for this subject open sessions for the user", body = UserLink), (status = 404, description = "no such user or issuer", body = super::super::errors::ErrorBody), (status = 409, description = "the subject is linked to a user already", body = super::super::errors::ErrorBody), super::super::errors::AdminCallerErrors))]
pub(crate) async fn add_link(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> AdminResult {
    let body: LinkBody = json_body(&req, payload).await?;
    let link = state
        .issuers
        .link(
            &admin.actor,
            &path,
            &body.issuer,
            &body.subject,
            state.clock.now(),
        )
        .await?;
    Ok(json(StatusCode::CREATED, &link))
}

#[utoipa::path(post, path = "/admin/v1/users/{username}/links/remove", tag = "admin", security(("admin_bearer" = [])), params(("username" = String, Path, description = "the user's name")), request_body = LinkBody,
    responses((status = 200, description = "unlinked: the identity's tokens no longer open sessions for the user, and every session they opened is revoked", body = super::Revoked), (status = 404, description = "no such user, or no such link of the user", body = super::super::errors::ErrorBody), super::super::errors::AdminCallerErrors))]
pub(crate) async fn remove_link(
    admin: AdminCaller,
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> AdminResult {
    let body: LinkBody = json_body(&req, payload).await?;
    let revoked = state
        .issuers
        .unlink(
            &admin.actor,
            &path,
            &body.issuer,
            &body.subject,
            state.clock.now(),
        )
        .await?;
    Ok(super::revoked(revoked))
}
