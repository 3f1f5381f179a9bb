//! Store behaviour, identical on SQLite and PostgreSQL.

use tessera::store::Engine as StoreEngine;
use tessera::store::{Audience, NewClient, NewSigningKey, NewUser, StoreError};
use uuid::Uuid;

use crate::helpers::{Engine, RawPool, on_both_engines, test_store};

fn new_user(name: &str) -> NewUser {
    NewUser {
        id: Uuid::new_v4(),
        username: name.to_string(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_string(),
        totp_secret: None,
    }
}

fn new_client(id: &str, secret: Option<Vec<u8>>) -> NewClient {
    NewClient {
        id: id.to_string(),
        secret_digest: secret,
        grant_types: vec!["password".into(), "refresh_token".into()],
        scopes: vec!["openid".into(), "read:things".into()],
        audiences: vec!["https://api.example".into()],
        origins: vec!["https://app.example".into()],
        redirect_uris: vec![],
        cookie: true,
        admin: false,
        resource_server: false,
        on_binding_change: tessera::store::BindingPolicy::Audit,
        require_dpop: false,
        exchange_audiences: vec![],
    }
}

async fn reports_its_engine_and_is_fully_migrated(engine: Engine) {
    let store = test_store(engine).await;
    let expected = match engine {
        Engine::Sqlite => StoreEngine::Sqlite,
        Engine::Postgres => StoreEngine::Postgres,
    };
    assert_eq!(store.engine(), expected);
    store.ping().await.unwrap();
    assert_eq!(store.pending_migrations().await.unwrap(), 0);
    // Running migrations again is a no-op.
    store.migrate().await.unwrap();
}

async fn fresh_database_reports_pending_migrations(engine: Engine) {
    let db = crate::helpers::TestDb::new(engine).await;
    let (store, _) = crate::helpers::connect_store(&db).await;
    assert!(store.pending_migrations().await.unwrap() >= 1);
    store.migrate().await.unwrap();
    assert_eq!(store.pending_migrations().await.unwrap(), 0);
}

async fn users_are_created_found_and_disabled(engine: Engine) {
    let store = test_store(engine).await;
    let input = new_user("alice");
    let created = store.create_user(&input, 1_700_000_000).await.unwrap();
    assert_eq!(created.id, input.id);
    assert_eq!(created.username, "alice");
    assert!(!created.disabled);
    assert_eq!(created.created_at, 1_700_000_000);

    let by_name = store.user_by_username("alice").await.unwrap().unwrap();
    assert_eq!(by_name, created);
    assert_eq!(store.user_by_id(input.id).await.unwrap().unwrap(), created);
    assert!(store.user_by_username("Alice").await.unwrap().is_none());
    assert!(store.user_by_id(Uuid::new_v4()).await.unwrap().is_none());

    assert!(
        store
            .set_user_disabled("alice", true, 1_700_000_100)
            .await
            .unwrap()
    );
    let disabled = store.user_by_username("alice").await.unwrap().unwrap();
    assert!(disabled.disabled);
    assert_eq!(disabled.updated_at, 1_700_000_100);
    assert!(!store.set_user_disabled("nobody", true, 0).await.unwrap());
}

async fn duplicate_usernames_conflict_and_change_nothing(engine: Engine) {
    let store = test_store(engine).await;
    let first = store.create_user(&new_user("bob"), 1).await.unwrap();
    let err = store.create_user(&new_user("bob"), 2).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict("user")), "{err:?}");
    // A name differing only in case would read as the same account.
    let err = store.create_user(&new_user("Bob"), 2).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict("user")), "{err:?}");
    assert_eq!(store.user_by_username("bob").await.unwrap().unwrap(), first);
    assert!(
        store.user_by_username("BOB").await.unwrap().is_none(),
        "lookups stay exact"
    );
}

async fn hostile_strings_are_data_not_sql(engine: Engine) {
    let store = test_store(engine).await;
    let name = "robert'); DROP TABLE users; --\u{202e}x";
    store.create_user(&new_user(name), 1).await.unwrap();
    assert_eq!(
        store
            .user_by_username(name)
            .await
            .unwrap()
            .unwrap()
            .username,
        name
    );
    store.create_user(&new_user("carol"), 1).await.unwrap();
    assert!(store.user_by_username("carol").await.unwrap().is_some());
}

async fn clients_round_trip_with_their_lists(engine: Engine) {
    let store = test_store(engine).await;
    let public = store
        .create_client(&new_client("spa", None), 5)
        .await
        .unwrap();
    assert!(!public.confidential);
    assert_eq!(public.grant_types, vec!["password", "refresh_token"]);
    assert_eq!(public.scopes, vec!["openid", "read:things"]);
    assert_eq!(public.audiences, vec!["https://api.example"]);
    assert_eq!(public.origins, vec!["https://app.example"]);
    assert!(public.cookie && !public.admin && !public.disabled);
    assert_eq!(store.client_by_id("spa").await.unwrap().unwrap(), public);

    let mut backend = new_client("backend", Some(vec![7u8; 32]));
    backend.origins.clear();
    backend.cookie = false;
    let confidential = store.create_client(&backend, 6).await.unwrap();
    assert!(confidential.confidential);
    assert_eq!(confidential.secret_digest, Some(vec![7u8; 32]));
    assert!(confidential.origins.is_empty());

    let err = store
        .create_client(&new_client("spa", None), 7)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict("client")), "{err:?}");
    let err = store
        .create_client(&new_client("SPA", None), 7)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict("client")), "{err:?}");
    assert!(store.client_by_id("nope").await.unwrap().is_none());
}

async fn schema_refuses_invalid_client_policy(engine: Engine) {
    // The type admits only audit and revoke; the schema refuses anything
    // else written around it.
    let store = test_store(engine).await;
    let insert = "INSERT INTO clients (id, confidential, secret_digest, grant_types, scopes, audiences, \
                  origins, cookie, admin, on_binding_change, disabled, created_at) \
                  VALUES ('weird', FALSE, NULL, 'password', '', '', '', FALSE, FALSE, 'shrug', FALSE, 1)";
    assert!(store.raw.execute(insert, &[]).await.is_err());
    assert!(store.client_by_id("weird").await.unwrap().is_none());
}

async fn audiences_are_registered_and_rekeyed(engine: Engine) {
    let store = test_store(engine).await;
    let plain = Audience {
        name: "https://api.example".into(),
        encrypt_jwk: None,
        created_at: 10,
    };
    store.put_audience(&plain).await.unwrap();
    assert_eq!(
        store
            .audience("https://api.example")
            .await
            .unwrap()
            .unwrap(),
        plain
    );

    let jwk = r#"{"kty":"EC","crv":"P-256","x":"x","y":"y"}"#.to_string();
    let rekeyed = Audience {
        encrypt_jwk: Some(jwk.clone()),
        created_at: 99,
        ..plain.clone()
    };
    store.put_audience(&rekeyed).await.unwrap();
    let stored = store
        .audience("https://api.example")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.encrypt_jwk, Some(jwk));
    assert_eq!(
        stored.created_at, 10,
        "re-keying keeps the registration time"
    );
    assert!(store.audience("other").await.unwrap().is_none());
}

fn signing_key(kid: &str, created_at: i64, activate_at: i64) -> NewSigningKey {
    NewSigningKey {
        kid: kid.into(),
        public_jwk: format!(r#"{{"kid":"{kid}"}}"#),
        private_key: vec![1, 2, 3],
        created_at,
        activate_at,
    }
}

async fn signing_keys_rotate_and_retire(engine: Engine) {
    let store = test_store(engine).await;
    store
        .add_signing_key(&signing_key("k1", 100, 100), None, 0)
        .await
        .unwrap();
    let keys = store.signing_keys(150).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!((keys[0].deactivated_at, keys[0].retire_at), (None, None));
    assert_eq!(keys[0].private_key, vec![1, 2, 3]);

    // k2 is published at 200, signs from 500; k1 stops at 500 and leaves at 2000.
    store
        .add_signing_key(&signing_key("k2", 200, 500), Some(0), 2000)
        .await
        .unwrap();
    let keys = store.signing_keys(300).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k2", "k1"]
    );
    assert_eq!((keys[0].deactivated_at, keys[0].retire_at), (None, None));
    assert_eq!(
        (keys[1].deactivated_at, keys[1].retire_at),
        (Some(500), Some(2000))
    );

    // After its retirement time k1 is no longer listed.
    let keys = store.signing_keys(2000).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k2"]
    );
}

async fn concurrent_rotations_cannot_both_win(engine: Engine) {
    let store = test_store(engine).await;
    store
        .add_signing_key(&signing_key("k1", 100, 100), None, 0)
        .await
        .unwrap();
    // A second "first key" and a rotation from a stale predecessor both lose.
    let err = store
        .add_signing_key(&signing_key("other", 100, 100), None, 0)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    store
        .add_signing_key(&signing_key("k2", 200, 500), Some(0), 2000)
        .await
        .unwrap();
    let err = store
        .add_signing_key(&signing_key("k3", 201, 501), Some(0), 2001)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    // The losing attempt changed nothing.
    let keys = store.signing_keys(300).await.unwrap();
    assert_eq!(
        keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
        ["k2", "k1"]
    );
    assert_eq!(keys[1].retire_at, Some(2000));

    // Racing for real: many rotations from the same predecessor, one wins.
    let results = futures_util::future::join_all((0..8).map(|i| {
        let store = store.store.clone();
        async move {
            store
                .add_signing_key(&signing_key(&format!("r{i}"), 300, 600), Some(1), 3000)
                .await
        }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
}

async fn settings_are_initialised_once(engine: Engine) {
    let store = test_store(engine).await;
    assert!(store.setting("check").await.unwrap().is_none());
    assert_eq!(
        store.init_setting("check", b"first").await.unwrap(),
        b"first"
    );
    assert_eq!(
        store.init_setting("check", b"second").await.unwrap(),
        b"first"
    );
    assert_eq!(store.setting("check").await.unwrap().unwrap(), b"first");

    assert_eq!(store.raise_setting("n", 300).await.unwrap(), 300);
    assert_eq!(
        store.raise_setting("n", 100).await.unwrap(),
        300,
        "never lowered"
    );
    assert_eq!(store.raise_setting("n", 70_000).await.unwrap(), 70_000);
    assert_eq!(
        store.raise_setting("n", 256).await.unwrap(),
        70_000,
        "compared as numbers, not text"
    );
}

/// The audit log refuses UPDATE and DELETE in the database itself.
async fn audit_log_is_append_only(engine: Engine) {
    let store = test_store(engine).await;
    let insert = "INSERT INTO audit_log (seq, at, actor, action, detail, prev_hash, hash) \
                  VALUES (1, 1, 'admin', 'login', '{}', $1, $2)";
    store
        .raw
        .execute(insert, &[&[0u8; 32], &[1u8; 32]])
        .await
        .unwrap();
    let mut attacks = vec![
        "UPDATE audit_log SET actor = 'mallory'",
        "DELETE FROM audit_log",
    ];
    if engine == Engine::Postgres {
        attacks.push("TRUNCATE audit_log");
    }
    for sql in attacks {
        let err = store.raw.execute(sql, &[]).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.raw.text("SELECT actor FROM audit_log").await, "admin");
}

on_both_engines!(
    reports_its_engine_and_is_fully_migrated,
    fresh_database_reports_pending_migrations,
    users_are_created_found_and_disabled,
    duplicate_usernames_conflict_and_change_nothing,
    hostile_strings_are_data_not_sql,
    clients_round_trip_with_their_lists,
    schema_refuses_invalid_client_policy,
    audiences_are_registered_and_rekeyed,
    signing_keys_rotate_and_retire,
    concurrent_rotations_cannot_both_win,
    settings_are_initialised_once,
    audit_log_is_append_only,
);

/// sqlx 0.9.0 leaves Nagle's algorithm on; the store turns it off (see
/// `store/postgres.rs`), or batches that leave in two segments wait 40 ms
/// for PostgreSQL's delayed ACK.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn postgres_connections_have_tcp_nodelay() {
    let db = crate::helpers::TestDb::new(Engine::Postgres).await;
    let url = url::Url::parse(&db.url).unwrap();
    let port = url.port().unwrap_or(5432);
    let (store, _raw) = crate::helpers::connect_store(&db).await;
    store.ping().await.unwrap();
    let mut checked = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let mut peer: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: getpeername writes at most `len` bytes into `peer`.
        let rc = unsafe {
            libc::getpeername(fd, (&mut peer as *mut libc::sockaddr_in).cast(), &mut len)
        };
        if rc != 0
            || peer.sin_family != libc::AF_INET as libc::sa_family_t
            || u16::from_be(peer.sin_port) != port
        {
            continue;
        }
        let mut on: libc::c_int = 0;
        let mut size = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes one c_int into `on`.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&mut on as *mut libc::c_int).cast(),
                &mut size,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(
            on, 1,
            "a connection to PostgreSQL still uses Nagle's algorithm"
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no TCP connection to PostgreSQL on port {port} found"
    );
}

/// Revocation inserts and audit appends serialise on `store_locks` rows
/// (row locks, which the distributed engines of docs/scaling.md honour):
/// while another transaction holds a row, the write waits; once it commits,
/// the write goes through; a missing row is an error, never a silent pass.
#[tokio::test]
async fn postgres_writers_wait_on_the_store_lock_rows() {
    use std::time::Duration;
    use tessera::audit::ChainKey;
    use tessera::keys::master::MasterKey;
    use tessera::store::NewAuditEvent;

    let s = test_store(Engine::Postgres).await;
    let RawPool::Postgres(pool) = &s.raw else {
        unreachable!()
    };
    let key = ChainKey::new(&MasterKey::from_bytes(&[5; 32]));
    let event = NewAuditEvent {
        at: 1_800_000_000,
        actor: "cli".into(),
        action: "test_event".into(),
        subject: None,
        detail: "{}".into(),
        network_prefix: None,
    };
    let now = chrono::Utc::now().timestamp();

    for name in ["revocations", "audit"] {
        let mut holder = pool.begin().await.unwrap();
        sqlx::query("SELECT name FROM store_locks WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_one(&mut *holder)
            .await
            .unwrap();
        let store = s.store.clone();
        let event = event.clone();
        let key = key.clone();
        let write = tokio::spawn(async move {
            if name == "revocations" {
                store
                    .revoke_jti("held-jti", now, now + 900, None, 100)
                    .await
                    .map(drop)
            } else {
                store.append_audit(&[event], true, &key).await.map(drop)
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !write.is_finished(),
            "{name}: the write ignored the lock row"
        );
        holder.commit().await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), write)
            .await
            .expect("the write goes on once the lock row is free")
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert_eq!(
        s.store.revocations_since(0, now, 10).await.unwrap().len(),
        1
    );

    s.raw
        .execute("DELETE FROM store_locks WHERE name = 'revocations'", &[])
        .await
        .unwrap();
    s.store
        .revoke_jti("unlocked-jti", now, now + 900, None, 100)
        .await
        .expect_err("no lock row, no revocation");
    assert_eq!(
        s.store.revocations_since(0, now, 10).await.unwrap().len(),
        1,
        "nothing was listed without the lock"
    );
}
