//! `GET /oauth/userinfo` (OpenID Connect Core §5.3): who the bearer of a
//! user's access token is.

use actix_web::http::header::WWW_AUTHENTICATE;
use actix_web::{HttpRequest, HttpResponse, ResponseError, web};
use serde::Serialize;

use super::AppState;
use super::errors::no_store;
use crate::verify::{BearerError, VerifyError};

/// What userinfo answers.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct UserInfo {
    /// The user's id.
    sub: String,
    /// The username (with the `profile` scope).
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<String>,
}

/// `GET /oauth/userinfo`: for a valid, unrevoked access token of ours
/// that carries a user (`sid`) and the `openid` scope, whatever its audience.
#[utoipa::path(get, path = "/oauth/userinfo", tag = "oauth",
    security(("bearer" = [])),
    responses((status = 200, description = "sub, and preferred_username with the profile scope (Cache-Control: no-store)", body = UserInfo),
        (status = 401, description = "no token, or an invalid, expired or revoked one (WWW-Authenticate: Bearer error=\"invalid_token\")"),
        (status = 403, description = "insufficient_scope: the token lacks openid, or carries no user")))]
pub async fn userinfo(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let claims = match crate::verify::authenticate(&req, state.revoker.verifier()).await {
        Ok(c) => c,
        Err(e) => return e.error_response(),
    };
    if claims.sid.is_none() || !claims.has_scope("openid") {
        return no_store(HttpResponse::Forbidden())
            .insert_header((
                WWW_AUTHENTICATE,
                "Bearer error=\"insufficient_scope\", scope=\"openid\"",
            ))
            .json(serde_json::json!({
                "error": "insufficient_scope",
                "error_description": "userinfo needs a user's access token with the openid scope",
            }));
    }
    let user = match uuid::Uuid::parse_str(&claims.sub) {
        Ok(id) => match state.store.user_by_id(id).await {
            Ok(user) => user,
            Err(e) => {
                tracing::error!(error = %e, "database error at userinfo");
                return BearerError::Unavailable.error_response();
            }
        },
        Err(_) => None,
    };
    let Some(user) = user.filter(|u| !u.disabled) else {
        return BearerError::Invalid(VerifyError::Revoked).error_response();
    };
    no_store(HttpResponse::Ok()).json(UserInfo {
        sub: claims.sub.clone(),
        preferred_username: claims.has_scope("profile").then_some(user.username),
    })
}
