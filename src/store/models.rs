//! Records as stored. Field types are chosen to decode identically from
//! PostgreSQL and SQLite (`i64`, `String`, `Vec<u8>`, `bool`, `Uuid`).

use uuid::Uuid;

/// A person who logs in with a password (and optionally TOTP).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    /// Stable opaque id; the `sub` of the user's tokens.
    pub id: Uuid,
    /// Unique login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// TOTP secret sealed under the master key, if enrolled.
    pub totp_secret: Option<Vec<u8>>,
    /// The last TOTP step accepted (a code is accepted once).
    pub totp_last_step: Option<i64>,
    /// A disabled user can neither log in nor refresh.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
    /// Moves with every password change and TOTP enrolment; a login opens a
    /// session only if the version it checked is still current.
    pub credential_version: i64,
    /// Unix seconds of the last sign-out everywhere: browser sign-ins
    /// (`__Host-tessera-sso`) from before it are void.
    pub signed_out_at: i64,
}

/// A change of a user's credentials ([`super::Sessions::change_credentials`]).
#[derive(Clone, Debug)]
pub enum CredentialChange {
    /// A new Argon2id PHC string.
    Password(String),
    /// A new sealed TOTP secret (the last used step is forgotten).
    Totp(Vec<u8>),
}

/// Input for [`super::Directory::create_user`].
#[derive(Clone, Debug)]
pub struct NewUser {
    /// The id to assign (a UUID v4 chosen by the caller).
    pub id: Uuid,
    /// Unique login name.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Sealed TOTP secret.
    pub totp_secret: Option<Vec<u8>>,
}

/// What a change of User-Agent or network on refresh does to a session.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BindingPolicy {
    /// Write an audit event and carry on (the default).
    Audit,
    /// Revoke the session.
    Revoke,
}

impl BindingPolicy {
    /// As stored and shown: `audit` or `revoke`.
    pub fn as_str(self) -> &'static str {
        match self {
            BindingPolicy::Audit => "audit",
            BindingPolicy::Revoke => "revoke",
        }
    }

    /// From its name.
    pub fn parse(value: &str) -> Option<BindingPolicy> {
        match value {
            "audit" => Some(BindingPolicy::Audit),
            "revoke" => Some(BindingPolicy::Revoke),
            _ => None,
        }
    }
}

/// A stored refresh token's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenState {
    /// The session's current token: it rotates.
    Active,
    /// Rotated already: presenting it again is a replay (or a grace reuse).
    Consumed,
    /// Its session was revoked.
    Revoked,
}

impl TokenState {
    /// From the stored text; `None` for anything else (a corrupt row).
    pub fn parse(value: &str) -> Option<TokenState> {
        match value {
            "active" => Some(TokenState::Active),
            "consumed" => Some(TokenState::Consumed),
            "revoked" => Some(TokenState::Revoked),
            _ => None,
        }
    }
}

/// An OAuth client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// The `client_id`.
    pub id: String,
    /// Confidential clients authenticate with a secret; public ones cannot.
    pub confidential: bool,
    /// Keyed digest of the secret (confidential clients only).
    pub secret_digest: Option<Vec<u8>>,
    /// Allowed grant types.
    pub grant_types: Vec<String>,
    /// Scopes the client may request.
    pub scopes: Vec<String>,
    /// Audiences the client may request tokens for.
    pub audiences: Vec<String>,
    /// Browser origins allowed for cookie mode and CORS.
    pub origins: Vec<String>,
    /// Redirect URIs for the authorization code flow (exact strings).
    pub redirect_uris: Vec<String>,
    /// SPA cookie mode: the refresh token travels only in a cookie.
    pub cookie: bool,
    /// May obtain the `tessera:admin` scope (confidential, client_credentials only).
    pub admin: bool,
    /// May introspect tokens of its audiences and read the revocation feed.
    pub resource_server: bool,
    /// What a User-Agent/network change on refresh does.
    pub on_binding_change: BindingPolicy,
    /// Gets no token without a DPoP proof (RFC 9449).
    pub require_dpop: bool,
    /// Audiences it may exchange a user's token for (RFC 8693).
    pub exchange_audiences: Vec<String>,
    /// A disabled client can obtain no tokens.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
}

/// Input for [`super::Directory::create_client`].
#[derive(Clone, Debug)]
pub struct NewClient {
    /// The `client_id`.
    pub id: String,
    /// Keyed digest of the secret; `Some` exactly for confidential clients.
    pub secret_digest: Option<Vec<u8>>,
    /// Allowed grant types.
    pub grant_types: Vec<String>,
    /// Scopes the client may request.
    pub scopes: Vec<String>,
    /// Audiences the client may request tokens for.
    pub audiences: Vec<String>,
    /// Allowed browser origins.
    pub origins: Vec<String>,
    /// Redirect URIs for the authorization code flow (exact strings).
    pub redirect_uris: Vec<String>,
    /// SPA cookie mode.
    pub cookie: bool,
    /// Admin client.
    pub admin: bool,
    /// Resource server: may introspect and read the feed.
    pub resource_server: bool,
    /// What a User-Agent/network change on refresh does.
    pub on_binding_change: BindingPolicy,
    /// Gets no token without a DPoP proof.
    pub require_dpop: bool,
    /// Audiences it may exchange a user's token for (RFC 8693).
    pub exchange_audiences: Vec<String>,
}

/// Row shape of `clients`; lists are stored space-separated (none of their
/// items may contain a space: scopes by RFC 6749, the others are URIs/names).
#[derive(sqlx::FromRow)]
pub(crate) struct ClientRow {
    pub id: String,
    pub confidential: bool,
    pub secret_digest: Option<Vec<u8>>,
    pub grant_types: String,
    pub scopes: String,
    pub audiences: String,
    pub origins: String,
    pub redirect_uris: String,
    pub cookie: bool,
    pub admin: bool,
    pub resource_server: bool,
    pub on_binding_change: String,
    pub disabled: bool,
    pub created_at: i64,
    pub require_dpop: bool,
    pub exchange_audiences: String,
}

fn split(list: &str) -> Vec<String> {
    list.split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl From<ClientRow> for Client {
    fn from(r: ClientRow) -> Client {
        Client {
            id: r.id,
            confidential: r.confidential,
            secret_digest: r.secret_digest,
            grant_types: split(&r.grant_types),
            scopes: split(&r.scopes),
            audiences: split(&r.audiences),
            origins: split(&r.origins),
            redirect_uris: split(&r.redirect_uris),
            cookie: r.cookie,
            admin: r.admin,
            resource_server: r.resource_server,
            // The column's CHECK admits only these two.
            on_binding_change: BindingPolicy::parse(&r.on_binding_change)
                .unwrap_or(BindingPolicy::Audit),
            require_dpop: r.require_dpop,
            exchange_audiences: split(&r.exchange_audiences),
            disabled: r.disabled,
            created_at: r.created_at,
        }
    }
}

/// A resource-server audience, optionally with a key its tokens are encrypted to.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Audience {
    /// The `aud` value.
    pub name: String,
    /// Public JWK (JSON) that tokens for this audience are encrypted to.
    pub encrypt_jwk: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
}

/// Input for [`super::Directory::add_signing_key`].
#[derive(Clone, Debug)]
pub struct NewSigningKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Public JWK (JSON).
    pub public_jwk: String,
    /// PKCS#8 private key sealed under the master key.
    pub private_key: Vec<u8>,
    /// Unix seconds; published in the JWKS from now on.
    pub created_at: i64,
    /// Unix seconds from which it may sign.
    pub activate_at: i64,
}

/// A stored signing key and its life cycle.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SigningKey {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// Public JWK (JSON).
    pub public_jwk: String,
    /// Sealed PKCS#8 private key.
    pub private_key: Vec<u8>,
    /// Unix seconds; published from then.
    pub created_at: i64,
    /// Unix seconds from which it may sign.
    pub activate_at: i64,
    /// Unix seconds at which it stopped signing, if it has.
    pub deactivated_at: Option<i64>,
    /// Unix seconds after which it leaves the JWKS.
    pub retire_at: Option<i64>,
    /// Position in the rotation chain: 0 for the first key.
    pub generation: i64,
}

/// Input for [`super::Sessions::create_session`].
#[derive(Clone, Debug)]
pub struct NewSession {
    /// The session id (`sid`).
    pub id: Uuid,
    /// The user who logged in.
    pub user_id: Uuid,
    /// The client they logged in through.
    pub client_id: String,
    /// Scopes granted at login (refreshes can only narrow).
    pub scope: String,
    /// Unix seconds of the login.
    pub created_at: i64,
    /// Sliding expiry: renewed by each refresh.
    pub idle_expires_at: i64,
    /// Fixed expiry from login.
    pub absolute_expires_at: i64,
    /// SHA-256 of the User-Agent at login.
    pub user_agent_hash: Option<Vec<u8>>,
    /// Coarse network prefix at login (e.g. `203.0.113.0/24`).
    pub network_prefix: Option<String>,
    /// Browser and platform ("Firefox on Linux"), for people reading sessions.
    pub user_agent_summary: Option<String>,
    /// The user's credential version the login checked.
    pub credential_version: i64,
    /// The upstream token that opened the session (token exchange).
    pub upstream: Option<UpstreamOrigin>,
}

/// The upstream token a session is opened from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamOrigin {
    /// Whose token it is: disabling its issuer, or removing its link to
    /// the user, ends the session.
    pub account: UpstreamAccount,
    /// SHA-256 of the token's signed part: a token opens one session.
    pub token_digest: [u8; 32],
    /// Until when the token is accepted (its `exp` plus the leeway): how
    /// long its use is remembered.
    pub token_expires_at: i64,
}

/// A user's identity at a trusted upstream issuer: its `iss` and `sub`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UpstreamAccount {
    /// The issuer, as registered.
    pub issuer: String,
    /// The user's `sub` there.
    pub subject: String,
}

/// A session (refresh-token family) as stored.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// The session id (`sid`).
    pub id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// The client.
    pub client_id: String,
    /// Scopes granted at login.
    pub scope: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last refresh.
    pub last_used_at: i64,
    /// Sliding expiry.
    pub idle_expires_at: i64,
    /// Fixed expiry.
    pub absolute_expires_at: i64,
    /// SHA-256 of the User-Agent at login.
    pub user_agent_hash: Option<Vec<u8>>,
    /// Coarse network prefix at login.
    pub network_prefix: Option<String>,
    /// Unix seconds of revocation, if revoked.
    pub revoked_at: Option<i64>,
    /// Why it was revoked.
    pub revoke_reason: Option<String>,
    /// Browser and platform at login ("Firefox on Linux").
    pub user_agent_summary: Option<String>,
    /// The generation of the session's current refresh token (0 at login,
    /// one more per rotation).
    pub refresh_generation: i64,
    /// Unix seconds the current refresh token was issued (`None` until the
    /// first rotation of a session opened before this column existed).
    pub refresh_rotated_at: Option<i64>,
    /// The upstream issuer whose token opened the session (token exchange).
    pub upstream_issuer: Option<String>,
    /// The user's `sub` at that issuer.
    pub upstream_subject: Option<String>,
}

impl Session {
    /// The upstream identity whose token opened the session, if one did.
    pub fn upstream(&self) -> Option<UpstreamAccount> {
        Some(UpstreamAccount {
            issuer: self.upstream_issuer.clone()?,
            subject: self.upstream_subject.clone()?,
        })
    }

    /// Whether the session can still be refreshed at `now` (its user's
    /// state aside).
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.idle_expires_at > now && self.absolute_expires_at > now
    }
}

/// A presented refresh token whose MAC checked out, as the store looks it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PresentedRefresh {
    /// `sid.generation.secret‖tag`.
    Current {
        /// The session.
        sid: Uuid,
        /// The generation the token claims.
        generation: i64,
        /// SHA-256 of its secret.
        secret_digest: [u8; 32],
    },
    /// A token of the format before sessions held their generation: the
    /// SHA-256 stored in `refresh_tokens`.
    Legacy([u8; 32]),
}

/// Input for [`super::Sessions::rotate_refresh_token`].
#[derive(Clone, Debug)]
pub struct RotationRequest {
    /// The presented token.
    pub presented: PresentedRefresh,
    /// SHA-256 of a new session secret: installed only when a legacy token
    /// moves its session to the current format.
    pub fresh_secret: [u8; 32],
    /// The authenticated client; a session answers only its own client.
    pub client_id: String,
    /// Unix seconds.
    pub now: i64,
    /// Sliding idle lifetime, seconds (capped by the absolute expiry).
    pub idle_ttl: i64,
    /// Reuse grace window, seconds (0: none).
    pub grace: i64,
    /// Until when a revocation caused by this call must be listed.
    pub revocation_relevant_until: i64,
}

/// The outcome of presenting a refresh token.
// One per refresh request, moved once: boxing the session would only add
// an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// The token was consumed and the next one stored.
    Rotated {
        /// The session, with its renewed idle expiry.
        session: Session,
        /// The token had already been consumed and was accepted once more
        /// inside the reuse grace window.
        grace_reuse: bool,
    },
    /// The token had already been consumed (outside the grace window, or an
    /// older token than the immediately previous one): its whole session is
    /// now revoked.
    Replayed {
        /// The revoked session.
        session_id: Uuid,
        /// Its user.
        user_id: Uuid,
    },
    /// Unknown, expired, revoked, another client's, a disabled user's, or a
    /// consumed token inside the grace window whose one reuse is spent.
    Invalid,
}

/// What a stored refresh token belongs to, for revocation and introspection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshTokenInfo {
    /// Its session.
    pub session: Session,
    /// Its state.
    pub state: TokenState,
    /// Unix seconds it was issued, where known (the current generation's).
    pub created_at: Option<i64>,
    /// Whether the session's user is disabled.
    pub user_disabled: bool,
}

pub use crate::verify::revocations::RevocationKind;

/// One row of the revocation feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevocationEntry {
    /// Position in the feed (strictly increasing in commit order).
    pub id: i64,
    /// What is revoked.
    pub kind: RevocationKind,
    /// The jti, sid, sub or client id.
    pub value: String,
    /// Unix seconds.
    pub revoked_at: i64,
    /// No access token it affects outlives this (Unix seconds).
    pub relevant_until: i64,
}

/// An audit event before it is chained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Who: `cli`, `client:ID`, `user:SUB`, `system`.
    pub actor: String,
    /// What, e.g. `login`, `refresh_reuse_detected`, `session_revoked`.
    pub action: String,
    /// What it was done to (an opaque sub, sid, client id, kid…).
    pub subject: Option<String>,
    /// A JSON object with further facts (never secrets).
    pub detail: String,
    /// Coarse network of the request, if any.
    pub network_prefix: Option<String>,
}

/// A stored, chained audit row.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRecord {
    /// 1, 2, 3… without gaps.
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub subject: Option<String>,
    /// JSON object.
    pub detail: String,
    /// Coarse network.
    pub network_prefix: Option<String>,
    /// Hash of the previous row (zeros for the first).
    pub prev_hash: Vec<u8>,
    /// The link: HMAC under the chain key over this row and `prev_hash`
    /// (unkeyed SHA-256 for rows older than the keyed chain).
    pub hash: Vec<u8>,
    /// The chain-key version `hash` is computed under (1: derived from the
    /// stored root; later versions are added by `tessera keys rewrap`).
    pub key_version: i64,
}

/// A checkpoint of the audit chain's head, kept outside `audit_log`.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditCheckpoint {
    /// Rows the checkpoint vouches for (the head's sequence; 0 for none).
    pub seq: i64,
    /// The head row's link (zeros for none).
    pub head: Vec<u8>,
    /// Rows up to this one predate the keyed chain.
    pub legacy_end: i64,
    /// Unix seconds.
    pub at: i64,
    /// MAC under the chain key; `None` only for the record the migration
    /// that introduced checkpoints wrote.
    pub mac: Option<Vec<u8>>,
    /// The chain-key version `mac` is computed under (the head row's).
    pub key_version: i64,
}

/// Failed logins counted against one account name or network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct LoginFailures {
    /// Failures in the current window.
    pub failures: i64,
    /// Unix seconds the window began.
    pub window_start: i64,
    /// Unix seconds of the latest failure.
    pub last_at: i64,
}

/// A trusted upstream identity provider (`tessera issuer add`).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct TrustedIssuer {
    /// Its `iss` value, exactly.
    pub issuer: String,
    /// Where tessera fetches its keys (never from a URL inside a token).
    pub jwks_uri: String,
    /// What its tokens' `aud` must contain.
    pub audience: String,
    /// Whether an unknown (`iss`, `sub`) becomes a new tessera user.
    pub create_users: bool,
    /// A disabled issuer's tokens are refused and its sessions ended.
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change.
    pub updated_at: i64,
}

/// Input for [`super::Federation::add_issuer`].
#[derive(Clone, Debug)]
pub struct NewIssuer {
    /// Its `iss` value.
    pub issuer: String,
    /// Its JWKS URL.
    pub jwks_uri: String,
    /// What its tokens' `aud` must contain.
    pub audience: String,
    /// Whether unknown users are created.
    pub create_users: bool,
}

/// A tessera user's identity at an upstream issuer.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct UserLink {
    /// The upstream issuer.
    pub issuer: String,
    /// The user's `sub` there.
    pub subject: String,
    /// The tessera user.
    #[schema(value_type = String)]
    pub user_id: Uuid,
    /// Unix seconds of the first exchange.
    pub created_at: i64,
}
