//! Refresh-token rotation rules in the store, on both engines, with the
//! clock under the test's control.

use std::sync::Arc;

use tessera::store::{
    NewClient, NewSession, NewUser, PresentedRefresh, Rotation, RotationRequest, Store,
};
use uuid::Uuid;

use crate::helpers::{Engine, on_both_engines, test_store};

const T0: i64 = 1_800_000_000;
const IDLE: i64 = 3600;
const ABSOLUTE: i64 = 86_400;

/// The digest of session `sid`'s refresh secret (any 32 bytes do here:
/// the store compares digests).
fn secret(sid: Uuid) -> [u8; 32] {
    let mut s = [7u8; 32];
    s[..16].copy_from_slice(sid.as_bytes());
    s
}

/// Generation `generation` of session `sid`'s refresh token.
fn token(sid: Uuid, generation: i64) -> PresentedRefresh {
    PresentedRefresh::Current {
        sid,
        generation,
        secret_digest: secret(sid),
    }
}

/// A live session `sid` of `user` through the `spa` client, opened at `T0`.
fn spa_session(sid: Uuid, user: Uuid) -> NewSession {
    NewSession {
        id: sid,
        user_id: user,
        client_id: "spa".into(),
        scope: "read".into(),
        created_at: T0,
        idle_expires_at: T0 + IDLE,
        absolute_expires_at: T0 + ABSOLUTE,
        user_agent_hash: None,
        network_prefix: None,
        user_agent_summary: None,
        credential_version: 0,
        upstream: None,
    }
}

/// A user, a client and a session at generation 0.
async fn login(store: &Arc<dyn Store>) -> (Uuid, Uuid) {
    let user = Uuid::new_v4();
    store
        .create_user(
            &NewUser {
                id: user,
                username: format!("u{}", user.simple()),
                password_hash: "x".into(),
                totp_secret: None,
            },
            T0,
        )
        .await
        .unwrap();
    for id in ["spa", "other"] {
        let _ = store
            .create_client(
                &NewClient {
                    id: id.into(),
                    secret_digest: None,
                    grant_types: vec!["password".into(), "refresh_token".into()],
                    scopes: vec!["read".into()],
                    audiences: vec!["https://api.example".into()],
                    origins: vec![],
                    redirect_uris: vec![],
                    cookie: false,
                    admin: false,
                    resource_server: false,
                    on_binding_change: tessera::store::BindingPolicy::Audit,
                    require_dpop: false,
                    exchange_audiences: vec![],
                },
                T0,
            )
            .await;
    }
    let sid = Uuid::new_v4();
    store
        .create_session(&spa_session(sid, user), &secret(sid))
        .await
        .unwrap();
    (user, sid)
}

fn request(presented: PresentedRefresh, client: &str, now: i64, grace: i64) -> RotationRequest {
    RotationRequest {
        presented,
        fresh_secret: [9; 32],
        client_id: client.into(),
        now,
        idle_ttl: IDLE,
        grace,
        revocation_relevant_until: now + 900,
    }
}

async fn rotate(store: &Arc<dyn Store>, sid: Uuid, generation: i64, now: i64) -> Rotation {
    rotate_with_grace(store, sid, generation, now, 0).await
}

async fn rotate_with_grace(
    store: &Arc<dyn Store>,
    sid: Uuid,
    generation: i64,
    now: i64,
    grace: i64,
) -> Rotation {
    store
        .rotate_refresh_token(&request(token(sid, generation), "spa", now, grace))
        .await
        .unwrap()
}

async fn a_chain_of_rotations_slides_the_idle_expiry(engine: Engine) {
    let s = test_store(engine).await;
    let (user, sid) = login(&s.store).await;
    let Rotation::Rotated { session, .. } = rotate(&s.store, sid, 0, T0 + 100).await else {
        panic!("first rotation")
    };
    assert_eq!((session.id, session.user_id), (sid, user));
    assert_eq!(session.idle_expires_at, T0 + 100 + IDLE);
    assert_eq!(session.last_used_at, T0 + 100);
    let Rotation::Rotated { session, .. } = rotate(&s.store, sid, 1, T0 + 200).await else {
        panic!("second rotation")
    };
    assert_eq!(session.idle_expires_at, T0 + 200 + IDLE);
    assert_eq!(
        (session.refresh_generation, session.refresh_rotated_at),
        (2, Some(T0 + 200))
    );
    // Never beyond the absolute expiry.
    let late = T0 + ABSOLUTE - 10;
    let mut from = 2;
    let mut t = T0 + 200;
    while t + IDLE / 2 < late {
        t += IDLE / 2;
        assert!(matches!(
            rotate(&s.store, sid, from, t).await,
            Rotation::Rotated { .. }
        ));
        from += 1;
    }
    let Rotation::Rotated { session, .. } = rotate(&s.store, sid, from, late).await else {
        panic!()
    };
    assert_eq!(session.idle_expires_at, T0 + ABSOLUTE);
    assert_eq!(
        rotate(&s.store, sid, from + 1, T0 + ABSOLUTE).await,
        Rotation::Invalid,
        "absolute expiry"
    );
}

async fn replaying_a_consumed_token_revokes_the_session(engine: Engine) {
    let s = test_store(engine).await;
    let (user, sid) = login(&s.store).await;
    assert!(matches!(
        rotate(&s.store, sid, 0, T0 + 10).await,
        Rotation::Rotated { .. }
    ));
    // The thief (or a confused client) presents the old token again.
    assert_eq!(
        rotate(&s.store, sid, 0, T0 + 20).await,
        Rotation::Replayed {
            session_id: sid,
            user_id: user
        }
    );
    // The legitimate holder's new token is dead too, and so is the session.
    assert_eq!(rotate(&s.store, sid, 1, T0 + 30).await, Rotation::Invalid);
    let session = s.store.session(sid).await.unwrap().unwrap();
    assert_eq!(session.revoked_at, Some(T0 + 20));
    assert_eq!(
        session.revoke_reason.as_deref(),
        Some("refresh token replay")
    );
    // The sid is listed as revoked, once.
    assert_eq!(
        s.raw
            .text("SELECT value FROM revocations WHERE kind = 'sid'")
            .await,
        sid.to_string()
    );
    assert_eq!(
        rotate(&s.store, sid, 0, T0 + 40).await,
        Rotation::Replayed {
            session_id: sid,
            user_id: user
        }
    );
    assert_eq!(
        s.raw
            .text("SELECT CAST(COUNT(*) AS TEXT) FROM revocations")
            .await,
        "1"
    );
}

async fn exactly_one_of_many_concurrent_refreshes_wins(engine: Engine) {
    let s = test_store(engine).await;
    let (_, sid) = login(&s.store).await;
    let attempts = (0..32u8).map(|_| {
        let store = s.store.clone();
        async move {
            store
                .rotate_refresh_token(&request(token(sid, 0), "spa", T0 + 5, 0))
                .await
        }
    });
    let tasks: Vec<_> = attempts.map(tokio::spawn).collect();
    let mut rotated = 0;
    for t in tasks {
        match t
            .await
            .unwrap()
            .expect("no database error under contention")
        {
            Rotation::Rotated { .. } => rotated += 1,
            Rotation::Replayed { .. } | Rotation::Invalid => {}
        }
    }
    assert_eq!(rotated, 1);
    let session = s.store.session(sid).await.unwrap().unwrap();
    assert_eq!(session.refresh_generation, 1, "moved on once");
    assert_eq!(
        s.raw
            .text("SELECT CAST(COUNT(*) AS TEXT) FROM refresh_tokens")
            .await,
        "0",
        "a rotation inserts nothing"
    );
}

async fn expired_foreign_and_disabled_are_invalid_and_consume_nothing(engine: Engine) {
    let s = test_store(engine).await;
    let (_, sid) = login(&s.store).await;
    // Idle expiry.
    assert_eq!(rotate(&s.store, sid, 0, T0 + IDLE).await, Rotation::Invalid);
    // Another client presenting it: refused, token not consumed.
    let r = s
        .store
        .rotate_refresh_token(&request(token(sid, 0), "other", T0 + 10, 0))
        .await
        .unwrap();
    assert_eq!(r, Rotation::Invalid);
    // Unknown session; the right session with another secret (someone who
    // knows the sid, not the token); a generation not issued yet.
    assert_eq!(
        rotate(&s.store, Uuid::new_v4(), 0, T0 + 10).await,
        Rotation::Invalid
    );
    let wrong_secret = PresentedRefresh::Current {
        sid,
        generation: 0,
        secret_digest: [1; 32],
    };
    for presented in [wrong_secret, token(sid, 1), token(sid, 5)] {
        let r = s
            .store
            .rotate_refresh_token(&request(presented, "spa", T0 + 10, 30))
            .await
            .unwrap();
        assert_eq!(r, Rotation::Invalid, "{presented:?}");
    }
    // An older generation with a wrong secret is no replay either: it
    // cannot revoke the session.
    assert!(matches!(
        rotate(&s.store, sid, 0, T0 + 10).await,
        Rotation::Rotated { .. }
    ));
    let r = s
        .store
        .rotate_refresh_token(&request(wrong_secret, "spa", T0 + 10, 0))
        .await
        .unwrap();
    assert_eq!(r, Rotation::Invalid);
    // None of that consumed the real token.
    assert!(matches!(
        rotate(&s.store, sid, 1, T0 + 10).await,
        Rotation::Rotated { .. }
    ));
    // A disabled user cannot refresh.
    let name = s.raw.text("SELECT username FROM users").await;
    s.store
        .set_user_disabled(&name, true, T0 + 11)
        .await
        .unwrap();
    assert_eq!(rotate(&s.store, sid, 2, T0 + 12).await, Rotation::Invalid);
}

/// The maintenance purge repeats its batches until nothing expired is
/// left (#23 item 4: one batch a minute fell behind a flood of revocations).
async fn the_purge_repeats_batches_until_nothing_expired_is_left(engine: Engine) {
    let s = test_store(engine).await;
    for i in 0..25 {
        s.raw
            .execute(
                match i % 2 {
                    0 => "INSERT INTO revocations (kind, value, revoked_at, relevant_until) VALUES ('jti', 'a', 1, 50)",
                    _ => "INSERT INTO revocations (kind, value, revoked_at, relevant_until) VALUES ('jti', 'b', 1, 60)",
                },
                &[],
            )
            .await
            .unwrap();
    }
    s.raw
        .execute("INSERT INTO revocations (kind, value, revoked_at, relevant_until) VALUES ('jti', 'live', 1, 999999999999)", &[])
        .await
        .unwrap();
    let purged = tessera::startup::purge_expired(s.store.as_ref(), 1000, 10)
        .await
        .unwrap();
    assert_eq!(purged, 25, "three batches of 10, 10 and 5");
    let left = s.store.revocations_since(0, 1000, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].value, "live");
}

async fn expired_sessions_are_purged_and_live_ones_kept(engine: Engine) {
    let s = test_store(engine).await;
    let (user, live) = login(&s.store).await;
    let short = Uuid::new_v4();
    s.store
        .create_session(
            &NewSession {
                id: short,
                user_id: user,
                client_id: "spa".into(),
                scope: "read".into(),
                created_at: T0,
                idle_expires_at: T0 + 10,
                absolute_expires_at: T0 + ABSOLUTE,
                user_agent_hash: None,
                network_prefix: None,
                user_agent_summary: None,
                credential_version: 0,
                upstream: None,
            },
            &secret(short),
        )
        .await
        .unwrap();
    // A token row of the earlier format for it (sessions opened before the
    // upgrade still have one).
    s.raw
        .execute(
            "INSERT INTO refresh_tokens (token_hash, session_id, generation, state, created_at) \
             SELECT $1, id, 0, 'active', 0 FROM sessions WHERE idle_expires_at = 1800000010",
            &[&[5; 32]],
        )
        .await
        .unwrap();
    s.raw
        .execute("INSERT INTO revocations (kind, value, revoked_at, relevant_until) VALUES ('jti', 'old', 1, 50)", &[])
        .await
        .unwrap();
    let purged = s
        .store
        .purge_expired(T0 + 100, T0 + 100, 1000)
        .await
        .unwrap();
    assert_eq!(purged, 1);
    assert!(s.store.session(short).await.unwrap().is_none());
    assert!(s.store.session(live).await.unwrap().is_some());
    assert_eq!(
        s.raw
            .text("SELECT CAST(COUNT(*) AS TEXT) FROM refresh_tokens")
            .await,
        "0",
        "tokens go with their session"
    );
    assert_eq!(
        s.raw
            .text("SELECT CAST(COUNT(*) AS TEXT) FROM revocations")
            .await,
        "0"
    );
    // The live session still rotates.
    assert!(matches!(
        rotate(&s.store, live, 0, T0 + 200).await,
        Rotation::Rotated { .. }
    ));
}

async fn the_grace_window_allows_one_reuse_of_the_previous_token(engine: Engine) {
    const GRACE: i64 = 5;
    let s = test_store(engine).await;
    let (user, sid) = login(&s.store).await;
    let rotated = |r: Rotation, grace_expected: bool| match r {
        Rotation::Rotated { grace_reuse, .. } => assert_eq!(grace_reuse, grace_expected),
        other => panic!("expected a rotation, got {other:?}"),
    };
    rotated(
        rotate_with_grace(&s.store, sid, 0, T0 + 10, GRACE).await,
        false,
    );
    // A second tab presents the token the first tab just rotated: one fresh pair.
    rotated(
        rotate_with_grace(&s.store, sid, 0, T0 + 12, GRACE).await,
        true,
    );
    // The same token once more inside the window: refused, session kept.
    assert_eq!(
        rotate_with_grace(&s.store, sid, 0, T0 + 13, GRACE).await,
        Rotation::Invalid
    );
    assert!(
        s.store
            .session(sid)
            .await
            .unwrap()
            .unwrap()
            .revoked_at
            .is_none()
    );
    // Generation 1 was superseded by the grace pair; it is now the
    // immediately previous one and gets its own one reuse.
    rotated(
        rotate_with_grace(&s.store, sid, 1, T0 + 14, GRACE).await,
        true,
    );
    // The newest token works normally.
    rotated(
        rotate_with_grace(&s.store, sid, 3, T0 + 15, GRACE).await,
        false,
    );
    // After the window, a consumed token is a replay again.
    assert_eq!(
        rotate_with_grace(&s.store, sid, 3, T0 + 15 + GRACE + 1, GRACE).await,
        Rotation::Replayed {
            session_id: sid,
            user_id: user
        }
    );
    assert_eq!(
        rotate_with_grace(&s.store, sid, 4, T0 + 30, GRACE).await,
        Rotation::Invalid
    );
}

async fn an_older_token_revokes_even_inside_the_grace_window(engine: Engine) {
    let s = test_store(engine).await;
    let (user, sid) = login(&s.store).await;
    assert!(matches!(
        rotate_with_grace(&s.store, sid, 0, T0 + 1, 30).await,
        Rotation::Rotated { .. }
    ));
    assert!(matches!(
        rotate_with_grace(&s.store, sid, 1, T0 + 2, 30).await,
        Rotation::Rotated { .. }
    ));
    // Generation 0 is two back: not a tab race.
    assert_eq!(
        rotate_with_grace(&s.store, sid, 0, T0 + 3, 30).await,
        Rotation::Replayed {
            session_id: sid,
            user_id: user
        }
    );
    assert_eq!(
        rotate_with_grace(&s.store, sid, 2, T0 + 4, 30).await,
        Rotation::Invalid
    );
}

/// Revoking a user's sessions (password change, disable, logout
/// everywhere) while those sessions rotate must never fail: a rotation
/// takes only the session row, a revocation the revocation lock and then
/// the session row, so neither can wait on the other in a cycle
/// (PostgreSQL would abort one as a deadlock after a second).
async fn revoking_sessions_while_they_rotate_never_deadlocks(engine: Engine) {
    let s = test_store(engine).await;
    let store = s.store.clone();
    let (user, _) = login(&store).await;
    for round in 0..15 {
        let mut chains = Vec::new();
        for _ in 0..8 {
            let sid = Uuid::new_v4();
            store
                .create_session(&spa_session(sid, user), &secret(sid))
                .await
                .unwrap();
            chains.push(sid);
        }
        let rotating = chains.into_iter().map(|sid| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut current = 0;
                loop {
                    let req = request(token(sid, current), "spa", T0 + 10, 0);
                    match store.rotate_refresh_token(&req).await? {
                        Rotation::Rotated { .. } => current += 1,
                        _ => return Ok::<_, tessera::store::StoreError>(()),
                    }
                }
            })
        });
        let rotating: Vec<_> = rotating.collect();
        // The race under test: revoke while the rotations are under way.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store
            .revoke_user_sessions(
                user,
                Some(tessera::store::Cutoff::Commit),
                T0 + 10,
                "test",
                T0 + 910,
            )
            .await
            .unwrap_or_else(|e| panic!("round {round}: revoking failed: {e}"));
        for r in rotating {
            r.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a rotation failed: {e}"));
        }
    }
}

/// A session is created only if the credentials its login checked are
/// still current and the user is enabled; a credential change revokes
/// every live session and lists each sid.
async fn sessions_open_only_under_current_credentials(engine: Engine) {
    use tessera::store::CredentialChange;
    let s = test_store(engine).await;
    let (user, _) = login(&s.store).await;
    let stale = spa_session(Uuid::new_v4(), user);
    let revoked = s
        .store
        .change_credentials(
            user,
            &CredentialChange::Password("$argon2id$new".into()),
            T0 + 1,
            "password changed",
            T0 + 901,
        )
        .await
        .unwrap();
    assert_eq!(revoked, Some(1), "the session login() opened");
    // A login that read version 0 before the change cannot open its session.
    assert!(
        !s.store
            .create_session(&stale, &secret(stale.id))
            .await
            .unwrap()
    );
    let current = NewSession {
        credential_version: 1,
        ..spa_session(Uuid::new_v4(), user)
    };
    assert!(
        s.store
            .create_session(&current, &secret(current.id))
            .await
            .unwrap()
    );
    assert!(matches!(
        rotate(&s.store, current.id, 0, T0 + 1).await,
        Rotation::Rotated { .. }
    ));
    // A session that somehow outlived a change (its revocation lost) does
    // not rotate: rotation checks the version too.
    s.raw
        .execute(
            "UPDATE users SET credential_version = credential_version + 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        rotate(&s.store, current.id, 1, T0 + 1).await,
        Rotation::Invalid
    );
    s.raw
        .execute(
            "UPDATE users SET credential_version = credential_version - 1",
            &[],
        )
        .await
        .unwrap();
    let sid = current.id.to_string();
    s.store
        .change_credentials(
            user,
            &CredentialChange::Totp(vec![1, 2, 3]),
            T0 + 2,
            "TOTP enrolled",
            T0 + 902,
        )
        .await
        .unwrap();
    let entries = s.store.revocations_since(0, T0 + 3, 100).await.unwrap();
    assert!(entries.iter().any(|e| e.value == sid), "sid listed");
    assert_eq!(
        s.store
            .change_credentials(
                Uuid::new_v4(),
                &CredentialChange::Password("x".into()),
                T0,
                "x",
                T0
            )
            .await
            .unwrap(),
        None
    );
    // Disabled users get no session either.
    let name = s.raw.text("SELECT username FROM users").await;
    s.store
        .set_user_disabled(&name, true, T0 + 4)
        .await
        .unwrap();
    let late = NewSession {
        credential_version: 2,
        ..spa_session(Uuid::new_v4(), user)
    };
    assert!(
        !s.store
            .create_session(&late, &secret(late.id))
            .await
            .unwrap()
    );
}

/// `sub` and `client` cut-offs are taken inside the revocation's
/// transaction, not from the `now` the request started with: a token minted
/// by a request that started later but finished before the revocation
/// committed is covered. Each revoked session's sid is listed as well.
async fn revocation_cut_offs_are_taken_when_the_revocation_commits(engine: Engine) {
    use tessera::store::{Cutoff, RevocationKind};
    let s = test_store(engine).await;
    let (user, sid) = login(&s.store).await;
    // The caller's `now` is long past (a request that waited, or a slow clock).
    let stale_now = 1_000;
    let before = chrono::Utc::now().timestamp();
    s.store
        .revoke_user_sessions(user, Some(Cutoff::Commit), stale_now, "test", before + 900)
        .await
        .unwrap();
    s.store
        .revoke_client_tokens("spa", Cutoff::Commit, stale_now, "test", before + 900)
        .await
        .unwrap();
    let entries = s.store.revocations_since(0, before, 100).await.unwrap();
    for kind in [RevocationKind::Sub, RevocationKind::Client] {
        let e = entries.iter().find(|e| e.kind == kind).unwrap();
        assert!(
            e.revoked_at >= before,
            "{kind:?} cut at {} < {before}",
            e.revoked_at
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e.kind == RevocationKind::Sid && e.value == sid.to_string()),
        "the session of a sub revocation is listed by sid too"
    );
    // A disabled user's or client's entry covers every token while it matters.
    s.store
        .revoke_client_tokens("spa", Cutoff::Always, before, "disabled", before + 900)
        .await
        .unwrap();
    let entries = s.store.revocations_since(0, before, 100).await.unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e.kind == RevocationKind::Client && e.revoked_at == before + 900)
    );
}

/// A rotation whose answer never went out (tessera could not sign) is
/// undone: the presented token is current again and its retry is served,
/// not taken for a replay. The undo names the generation it undoes, so it
/// never steps back a session that moved on, and never touches a revoked one.
async fn an_undone_rotation_leaves_the_presented_token_current(engine: Engine) {
    let s = test_store(engine).await;
    let (_, sid) = login(&s.store).await;
    assert!(matches!(
        rotate(&s.store, sid, 0, T0 + 10).await,
        Rotation::Rotated { .. }
    ));
    assert!(s.store.unrotate_refresh_token(sid, 1).await.unwrap());
    assert!(
        !s.store.unrotate_refresh_token(sid, 1).await.unwrap(),
        "only from the generation it names"
    );
    let Rotation::Rotated { session, .. } = rotate(&s.store, sid, 0, T0 + 20).await else {
        panic!("the retry of the token presented first is served")
    };
    assert_eq!(session.refresh_generation, 1);
    assert!(matches!(
        rotate(&s.store, sid, 1, T0 + 30).await,
        Rotation::Rotated { .. }
    ));
    assert!(
        !s.store.unrotate_refresh_token(sid, 1).await.unwrap(),
        "the session moved on to generation 2"
    );
    // Replay of generation 0 revokes; an undo then changes nothing.
    assert!(matches!(
        rotate(&s.store, sid, 0, T0 + 40).await,
        Rotation::Replayed { .. }
    ));
    assert!(!s.store.unrotate_refresh_token(sid, 2).await.unwrap());
    assert_eq!(
        rotate(&s.store, sid, 1, T0 + 50).await,
        Rotation::Replayed {
            session_id: sid,
            user_id: session.user_id
        }
    );
}

on_both_engines!(
    the_purge_repeats_batches_until_nothing_expired_is_left,
    sessions_open_only_under_current_credentials,
    revocation_cut_offs_are_taken_when_the_revocation_commits,
    revoking_sessions_while_they_rotate_never_deadlocks,
    the_grace_window_allows_one_reuse_of_the_previous_token,
    an_older_token_revokes_even_inside_the_grace_window,
    a_chain_of_rotations_slides_the_idle_expiry,
    replaying_a_consumed_token_revokes_the_session,
    exactly_one_of_many_concurrent_refreshes_wins,
    expired_foreign_and_disabled_are_invalid_and_consume_nothing,
    expired_sessions_are_purged_and_live_ones_kept,
    an_undone_rotation_leaves_the_presented_token_current,
);
