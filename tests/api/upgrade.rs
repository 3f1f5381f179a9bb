//! Upgrading a database written by the previous version (schema before
//! 20261202000001): the migration repairs admin clients that a user could
//! reach, keeps existing confidential clients' introspection and feed (and
//! says so in the audit log), and everything stored before keeps working:
//! client secrets digested under the old key derivation, the unkeyed audit
//! rows, sessions.

use std::borrow::Cow;

use base64::Engine as _;
use reqwest::Method;
use serde_json::Value;
use sqlx::migrate::Migrator;
use tessera::keys::master::MasterKey;

use crate::helpers::{
    AUD, Engine, ISSUER, Login, PASSWORD, TestDb, on_both_engines, random_master_key,
    spawn_app_on_with,
};

/// The first migration of this version: everything before it is the previous schema.
const FIRST_NEW: i64 = 20261202000001;

async fn previous_schema(db: &TestDb) {
    schema_before(db, FIRST_NEW).await
}

/// The schema as it was before migration `first_new`.
async fn schema_before(db: &TestDb, first_new: i64) {
    let all = match db.engine {
        Engine::Sqlite => sqlx::migrate!("./migrations/sqlite"),
        Engine::Postgres => sqlx::migrate!("./migrations/postgres"),
    };
    let old = Migrator {
        migrations: Cow::Owned(
            all.iter()
                .filter(|m| m.version < first_new)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    };
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&format!("{}?mode=rwc", db.url))
                .await
                .unwrap();
            old.run(&pool).await.unwrap();
            pool.close().await;
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            old.run(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

/// Statements against the database as the previous version left it.
async fn execute(db: &TestDb, statements: &[String]) {
    match db.engine {
        Engine::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
        Engine::Postgres => {
            let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
            for s in statements {
                sqlx::query(sqlx::AssertSqlSafe(s.clone()))
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            pool.close().await;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn an_upgraded_database_is_repaired_and_keeps_working(engine: Engine) {
    let db = TestDb::new(engine).await;
    previous_schema(&db).await;
    let key_b64 = random_master_key();
    let master = MasterKey::from_base64(&key_b64).unwrap();
    // Secrets digested the previous version's way: HMAC(HMAC(master, purpose), secret).
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&key_b64)
        .unwrap();
    let legacy = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &raw),
            b"tessera/client-secret/v1",
        )
        .as_ref(),
    );
    let digest = |secret: &str| hex(ring::hmac::sign(&legacy, secret.as_bytes()).as_ref());
    let bool_ = |b: bool| match (engine, b) {
        (Engine::Sqlite, true) => "1",
        (Engine::Sqlite, false) => "0",
        (Engine::Postgres, true) => "TRUE",
        (Engine::Postgres, false) => "FALSE",
    };
    let bytes = |h: &str| match engine {
        Engine::Sqlite => format!("X'{h}'"),
        Engine::Postgres => format!("'\\x{h}'::bytea"),
    };
    let user_id = uuid::Uuid::new_v4();
    let user_id_sql = match engine {
        Engine::Sqlite => bytes(&hex(user_id.as_bytes())),
        Engine::Postgres => format!("'{user_id}'"),
    };
    let password_hash = tessera::auth::password::hash(PASSWORD).unwrap();
    let client = |id: &str,
                  confidential: bool,
                  digest: Option<String>,
                  grants: &str,
                  scopes: &str,
                  audiences: &str,
                  admin: bool| {
        format!(
            "INSERT INTO clients (id, confidential, secret_digest, grant_types, scopes, audiences, origins, cookie, admin, \
             on_binding_change, disabled, created_at) VALUES ('{id}', {}, {}, '{grants}', '{scopes}', '{audiences}', '', {}, {}, \
             'audit', {}, 0)",
            bool_(confidential),
            digest.map_or("NULL".to_owned(), |d| bytes(&d)),
            bool_(false),
            bool_(admin),
            bool_(false),
        )
    };
    // Three unkeyed audit rows, chained as the previous version did.
    let mut audit = Vec::new();
    let mut prev = tessera::audit::GENESIS.to_vec();
    for seq in 1..=3 {
        let e = tessera::store::NewAuditEvent {
            at: 1_800_000_000 + seq,
            actor: "cli".into(),
            action: "user_created".into(),
            subject: None,
            detail: "{}".into(),
            network_prefix: None,
        };
        let link = tessera::audit::legacy_link(seq, &prev, &e);
        audit.push(format!(
            "INSERT INTO audit_log (seq, at, actor, action, subject, detail, network_prefix, prev_hash, hash) \
             VALUES ({seq}, {}, 'cli', 'user_created', NULL, '{{}}', NULL, {}, {})",
            e.at,
            bytes(&hex(&prev)),
            bytes(&hex(&link))
        ));
        prev = link.to_vec();
    }
    let mut statements = vec![
        format!(
            "INSERT INTO users (id, username, password_hash, totp_secret, disabled, created_at, updated_at) \
             VALUES ({user_id_sql}, 'alice', '{password_hash}', NULL, {}, 0, 0)",
            bool_(false)
        ),
        // The review's reproduction: a public admin client with the password grant.
        client(
            "console",
            false,
            None,
            "password refresh_token",
            "read tessera:admin",
            ISSUER,
            true,
        ),
        client(
            "ops",
            true,
            Some(digest("ops-secret")),
            "client_credentials",
            "tessera:admin",
            ISSUER,
            true,
        ),
        client(
            "rs",
            true,
            Some(digest("rs-secret")),
            "client_credentials",
            "read",
            AUD,
            false,
        ),
    ];
    statements.extend(audit);
    execute(&db, &statements).await;

    let app = spawn_app_on_with(db, &[("TESSERA_MASTER_KEY", &key_b64)]).await;
    let console = app.store.client_by_id("console").await.unwrap().unwrap();
    assert!(!console.admin && console.scopes == ["read"], "{console:?}");
    let ops = app.store.client_by_id("ops").await.unwrap().unwrap();
    assert!(ops.admin && !ops.resource_server);
    let rs = app.store.client_by_id("rs").await.unwrap().unwrap();
    assert!(rs.resource_server && !rs.admin);

    // The repair and the kept rights are in the audit log, chained after
    // the old rows, and the whole log verifies.
    let rows = app.store.audit_page(0, 100).await.unwrap();
    let find = |action: &str, subject: &str| {
        rows.iter().any(|r| {
            r.action == action
                && r.subject.as_deref() == Some(subject)
                && r.actor == "system:migration"
        })
    };
    assert!(find("client_admin_revoked", "console"), "{rows:?}");
    assert!(find("client_resource_server_kept", "rs"));
    assert!(!find("client_admin_revoked", "ops"));
    let report =
        tessera::audit::verify_chain(app.store.as_ref(), &tessera::audit::ChainKey::new(&master))
            .await
            .unwrap();
    assert_eq!(report.legacy_end, 3);
    assert!(report.rows >= 5, "{report}");

    // Secrets digested the old way still authenticate; the admin API works
    // for the confidential admin client and not for a user through console.
    let admin = app.client_token("ops", "ops-secret").await;
    let keys = app
        .admin_api(Method::GET, "/keys", Some(&admin), None)
        .await;
    assert_eq!(keys.status(), 200);
    let res = app
        .password_grant(Login::new("alice").client("console"))
        .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "read", "{body}");
    let user_token = body["access_token"].as_str().unwrap();
    let keys = app
        .admin_api(Method::GET, "/keys", Some(user_token), None)
        .await;
    assert_eq!(keys.status(), 403);
    let rs_token = app.client_token("rs", "rs-secret").await;
    let res = app.introspect_as(("rs", "rs-secret"), &rs_token).await;
    assert_eq!(res.json::<Value>().await.unwrap()["active"], true);
}

/// Sessions opened before refresh tokens named their session and
/// generation (migration 20261203000001): their token is a row in
/// `refresh_tokens`. It rotates once after the upgrade, into the current
/// format, and the chain goes on from there; replaying it afterwards is
/// still detected as a replay and ends the session.
async fn refresh_tokens_issued_before_the_upgrade_rotate_after_it(engine: Engine) {
    use base64::Engine as _;
    let db = TestDb::new(engine).await;
    schema_before(&db, 20261203000001).await;
    let bytes = |b: &[u8]| match engine {
        Engine::Sqlite => format!("X'{}'", hex(b)),
        Engine::Postgres => format!("'\\x{}'::bytea", hex(b)),
    };
    let uuid = |u: uuid::Uuid| match engine {
        Engine::Sqlite => bytes(u.as_bytes()),
        Engine::Postgres => format!("'{u}'"),
    };
    let (user, sid, second) = (
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    );
    let now = crate::helpers::now();
    let legacy = |n: u8| {
        let raw = [n; 32];
        (
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw),
            tessera::digest::sha256(&raw),
        )
    };
    let ((token, hash), (other, other_hash)) = (legacy(7), legacy(8));
    let password_hash = tessera::auth::password::hash(PASSWORD).unwrap();
    let f = match engine {
        Engine::Sqlite => "0",
        Engine::Postgres => "FALSE",
    };
    let session = |id: uuid::Uuid| {
        format!(
            "INSERT INTO sessions (id, user_id, client_id, scope, created_at, last_used_at, idle_expires_at, \
             absolute_expires_at) VALUES ({}, {}, 'spa', 'read', {now}, {now}, {}, {})",
            uuid(id),
            uuid(user),
            now + 3600,
            now + 86_400
        )
    };
    let token_row = |id: uuid::Uuid, generation: i64, state: &str, hash: &[u8]| {
        format!(
            "INSERT INTO refresh_tokens (token_hash, session_id, generation, state, created_at) \
             VALUES ({}, {}, {generation}, '{state}', {now})",
            bytes(hash),
            uuid(id)
        )
    };
    execute(
        &db,
        &[
            format!(
                "INSERT INTO users (id, username, password_hash, totp_secret, disabled, created_at, updated_at) \
                 VALUES ({}, 'alice', '{password_hash}', NULL, {f}, 0, 0)",
                uuid(user)
            ),
            format!(
                "INSERT INTO clients (id, confidential, secret_digest, grant_types, scopes, audiences, origins, cookie, \
                 admin, on_binding_change, disabled, created_at) VALUES ('spa', {f}, NULL, 'password refresh_token', \
                 'read', '{AUD}', '', {f}, {f}, 'audit', {f}, 0)"
            ),
            session(sid),
            token_row(sid, 3, "consumed", &[1; 32]),
            token_row(sid, 4, "active", &hash),
            session(second),
            token_row(second, 0, "active", &other_hash),
        ],
    )
    .await;
    let app = spawn_app_on_with(db, &[]).await;

    // The old token is introspectable and rotates, into the current format.
    let res = app.refresh(&token).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let next = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(next.starts_with(&format!("{sid}.5.")), "{next}");
    let session = app.store.session(sid).await.unwrap().unwrap();
    assert_eq!(session.refresh_generation, 5);
    // The chain goes on in the new format.
    let res = app.refresh(&next).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let newest = body["refresh_token"].as_str().unwrap().to_owned();
    assert!(newest.starts_with(&format!("{sid}.6.")), "{newest}");
    // Neither the old token nor its successor works twice: the old one is
    // a replay, and ends the session.
    let res = app.refresh(&token).await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("already used"),
        "{body}"
    );
    assert_eq!(app.refresh(&newest).await.status(), 400);
    assert!(
        app.store
            .session(sid)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_some()
    );
    // The other old session is untouched by all that, and a token of the
    // new format with its sid and a guessed generation is refused.
    let forged = format!("{second}.1.{}", &next[next.rfind('.').unwrap() + 1..]);
    assert_eq!(app.refresh(&forged).await.status(), 400);
    assert_eq!(app.refresh(&other).await.status(), 200);
    // New logins open sessions of the new format.
    let (_, fresh) = app.login("alice").await;
    assert!(fresh.contains(".0."), "{fresh}");
    assert_eq!(app.refresh(&fresh).await.status(), 200);
}

/// Migration 20261204000002 widens the revocation kinds (SQLite rebuilds
/// the table): every entry keeps its id, and a feed cursor handed out
/// before the upgrade is never reused, even past entries already purged.
async fn the_revocation_feed_survives_the_kid_migration(engine: Engine) {
    let db = TestDb::new(engine).await;
    schema_before(&db, 20261204000002).await;
    let now = chrono::Utc::now().timestamp();
    execute(
        &db,
        &[
            format!(
                "INSERT INTO revocations (kind, value, revoked_at, relevant_until) VALUES \
                 ('jti', 'kept', {now}, {}), ('jti', 'purged-1', {now}, {}), ('jti', 'purged-2', {now}, {})",
                now + 900,
                now + 900,
                now + 900
            ),
            // The two newest are purged: the counter is ahead of the last row.
            "DELETE FROM revocations WHERE value LIKE 'purged-%'".into(),
        ],
    )
    .await;
    let app = spawn_app_on_with(db, &[]).await;
    let store = app.store.clone();
    let page = store.revocations_since(0, now, 100).await.unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, 1);
    assert_eq!(page[0].value, "kept");
    // A new entry takes an id after every one ever handed out (3), not 2.
    store
        .revoke_jti("new", now, now + 900, None, 1000)
        .await
        .unwrap();
    let page = store.revocations_since(1, now, 100).await.unwrap();
    assert_eq!(page.len(), 1);
    assert!(page[0].id > 3, "{:?}", page[0]);
}

on_both_engines!(
    the_revocation_feed_survives_the_kid_migration,
    an_upgraded_database_is_repaired_and_keeps_working,
    refresh_tokens_issued_before_the_upgrade_rotate_after_it
);
