//! The audit trail's keyed chain, on both engines: appends from many writers
//! form one chain, `verify_chain` names the first tampered row, rows cut from
//! the end after a checkpoint are found, and someone who can write the
//! database but lacks the master key can neither edit nor recompute a row.

use tessera::audit::{ChainError, ChainKey, checkpoint, legacy_link, verify_chain};
use tessera::keys::master::MasterKey;
use tessera::store::NewAuditEvent;

use crate::helpers::{Engine, TestStore, on_both_engines, test_store};

fn key() -> ChainKey {
    ChainKey::new(&MasterKey::from_bytes(&[5; 32]))
}

fn event(n: usize) -> NewAuditEvent {
    NewAuditEvent {
        at: 1_800_000_000 + n as i64,
        actor: "cli".into(),
        action: "test_event".into(),
        subject: Some(format!("subject-{n}")),
        detail: format!("{{\"n\":{n}}}"),
        network_prefix: None,
    }
}

async fn with_rows(engine: Engine, rows: usize) -> TestStore {
    let s = test_store(engine).await;
    let events: Vec<_> = (0..rows).map(event).collect();
    s.store.append_audit(&events, true, &key()).await.unwrap();
    s
}

async fn rows_verified(s: &TestStore) -> Result<i64, ChainError> {
    verify_chain(s.store.as_ref(), &key()).await.map(|r| r.rows)
}

async fn concurrent_writers_build_one_chain(engine: Engine) {
    let s = test_store(engine).await;
    let writers = (0..8).map(|w| {
        let store = s.store.clone();
        tokio::spawn(async move {
            for b in 0..5 {
                let batch: Vec<_> = (0..3).map(|i| event(w * 100 + b * 10 + i)).collect();
                store
                    .append_audit(&batch, false, &key())
                    .await
                    .expect("append under contention");
            }
        })
    });
    for w in writers.collect::<Vec<_>>() {
        w.await.unwrap();
    }
    assert_eq!(rows_verified(&s).await, Ok(8 * 5 * 3));
}

/// Lets the test change rows the database otherwise refuses to change.
async fn allow_tampering(s: &TestStore, engine: Engine) {
    match engine {
        Engine::Postgres => {
            s.raw
                .execute(
                    "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete",
                    &[],
                )
                .await
                .unwrap();
        }
        Engine::Sqlite => {
            s.raw
                .execute("DROP TRIGGER audit_log_no_update", &[])
                .await
                .unwrap();
            s.raw
                .execute("DROP TRIGGER audit_log_no_delete", &[])
                .await
                .unwrap();
        }
    }
}

const EDITED: &str = "content does not match its link (edited, or written without the master key)";

async fn an_edited_row_is_named(engine: Engine) {
    let s = with_rows(engine, 5).await;
    assert_eq!(rows_verified(&s).await, Ok(5));
    allow_tampering(&s, engine).await;
    s.raw
        .execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3", &[])
        .await
        .unwrap();
    assert_eq!(
        rows_verified(&s).await,
        Err(ChainError::Broken {
            seq: 3,
            reason: EDITED
        })
    );
}

async fn a_removed_row_is_named(engine: Engine) {
    let s = with_rows(engine, 5).await;
    allow_tampering(&s, engine).await;
    s.raw
        .execute("DELETE FROM audit_log WHERE seq = 2", &[])
        .await
        .unwrap();
    assert!(matches!(
        rows_verified(&s).await,
        Err(ChainError::Broken { seq: 2, .. })
    ));
}

/// Someone with write access to the database but not the master key
/// rewrites a row and recomputes its link the only way they can (the
/// unkeyed hash, or a key of their own): the row itself is reported.
async fn a_row_rewritten_without_the_master_key_is_named(engine: Engine) {
    let s = with_rows(engine, 4).await;
    allow_tampering(&s, engine).await;
    let rows = s.store.audit_page(0, 10).await.unwrap();
    let mut forged = event(99);
    forged.actor = "mallory".into();
    let unkeyed = legacy_link(2, &rows[0].hash, &forged);
    let other_key = ChainKey::new(&MasterKey::from_bytes(&[6; 32])).link(2, &rows[0].hash, &forged);
    for link in [unkeyed, other_key] {
        s.raw
            .execute(
                "UPDATE audit_log SET actor = 'mallory', at = 1800000099, subject = 'subject-99', \
                 detail = '{\"n\":99}', hash = $1 WHERE seq = 2",
                &[&link],
            )
            .await
            .unwrap();
        assert_eq!(
            rows_verified(&s).await,
            Err(ChainError::Broken {
                seq: 2,
                reason: EDITED
            })
        );
    }
    // Even with the key, a rewritten row breaks the next row's link.
    let keyed = key().link(2, &rows[0].hash, &forged);
    s.raw
        .execute("UPDATE audit_log SET hash = $1 WHERE seq = 2", &[&keyed])
        .await
        .unwrap();
    assert_eq!(
        rows_verified(&s).await,
        Err(ChainError::Broken {
            seq: 3,
            reason: "does not link to the previous row"
        })
    );
}

/// The review's reproduction: rows cut from the end (trigger dropped) left a
/// chain that verified. The newest checkpoint now vouches for them.
async fn rows_cut_from_the_end_after_a_checkpoint_are_detected(engine: Engine) {
    let s = with_rows(engine, 67).await;
    assert_eq!(
        checkpoint(s.store.as_ref(), &key(), None).await.unwrap(),
        67
    );
    let report = verify_chain(s.store.as_ref(), &key()).await.unwrap();
    assert_eq!(report.checkpoint.map(|c| c.0), Some(67));
    allow_tampering(&s, engine).await;
    s.raw
        .execute("DELETE FROM audit_log WHERE seq >= 9", &[])
        .await
        .unwrap();
    match verify_chain(s.store.as_ref(), &key()).await {
        Err(ChainError::Truncated {
            checkpoint: 67,
            last: 8,
            first_missing: 9,
            ..
        }) => {}
        other => panic!("truncation not detected: {other:?}"),
    }
    // A checkpoint forged without the key (or its MAC edited) is not believed:
    // the genuine one still stands.
    s.raw
        .execute(
            "INSERT INTO audit_checkpoints (seq, head, legacy_end, at, mac) \
             SELECT 8, hash, 0, 1800000000, $1 FROM audit_log WHERE seq = 8",
            &[&[7u8; 32]],
        )
        .await
        .unwrap();
    assert!(matches!(
        verify_chain(s.store.as_ref(), &key()).await,
        Err(ChainError::Truncated { checkpoint: 67, .. })
    ));
}

/// Rows written before the chain was keyed verify as such, up to where the
/// migration recorded they end; an unkeyed row after that is refused.
async fn rows_from_before_the_keyed_chain_verify_up_to_the_recorded_end(engine: Engine) {
    let s = test_store(engine).await;
    // Two rows as the previous version wrote them, then the record the
    // migration writes.
    let mut prev = tessera::audit::GENESIS.to_vec();
    for seq in 1..=2 {
        let e = event(seq as usize);
        let link = legacy_link(seq, &prev, &e);
        s.raw
            .execute(
                "INSERT INTO audit_log (seq, at, actor, action, subject, detail, network_prefix, prev_hash, hash) \
                 SELECT seq, 1800000000 + seq, 'cli', 'test_event', 'subject-' || seq, '{\"n\":' || seq || '}', NULL, $2, $3 \
                 FROM (SELECT CAST(length($1) AS BIGINT) AS seq) AS one",
                &[&vec![0u8; seq as usize], &prev, &link],
            )
            .await
            .unwrap();
        prev = link.to_vec();
    }
    s.raw
        .execute("UPDATE audit_checkpoints SET legacy_end = 2, seq = 2", &[])
        .await
        .unwrap();
    s.store
        .append_audit(&[event(3), event(4)], true, &key())
        .await
        .unwrap();
    let report = verify_chain(s.store.as_ref(), &key()).await.unwrap();
    assert_eq!((report.rows, report.legacy_end), (4, 2));
    assert!(
        report
            .to_string()
            .contains("rows 1–2 written before the chain was keyed")
    );
    // Once a keyed checkpoint exists, moving the unkeyed end forward is ignored.
    checkpoint(s.store.as_ref(), &key(), None).await.unwrap();
    s.raw
        .execute(
            "UPDATE audit_checkpoints SET legacy_end = 4 WHERE mac IS NULL",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        verify_chain(s.store.as_ref(), &key())
            .await
            .unwrap()
            .legacy_end,
        2
    );
}

/// Master-key rotation from A to B: `keys rewrap` (here its parts) adds
/// chain-key version 2 sealed under B and the chain switches to it; a stale
/// process catches up; then someone who still holds A (and so version 1)
/// can neither append after the switch, nor cut the rows linked under
/// version 2, nor delete version 2 itself, without `verify_chain` saying so.
async fn a_retired_master_key_cannot_extend_the_chain_after_the_switch(engine: Engine) {
    use base64::Engine as _;
    use tessera::keys::rewrap::{CHECK_SETTING, ROOT_SETTING, check_text, rewrap};
    let s = with_rows(engine, 3).await;
    let a = MasterKey::from_bytes(&[5; 32]);
    let b64 = |k: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
    // As start-up leaves it under A: the root and the check value sealed under A.
    let root = a.default_root_of(&a.seal(b"x", b"x")).unwrap();
    s.store
        .init_setting(
            ROOT_SETTING,
            &a.seal(&root.encode(), ROOT_SETTING.as_bytes()),
        )
        .await
        .unwrap();
    s.store
        .init_setting(
            CHECK_SETTING,
            &a.seal(&check_text(1), CHECK_SETTING.as_bytes()),
        )
        .await
        .unwrap();
    let both = MasterKey::from_base64(&format!("{}\n{}", b64([7; 32]), b64([5; 32])))
        .unwrap()
        .with_root(&root);
    let b_alone = MasterKey::from_base64(&b64([7; 32]))
        .unwrap()
        .with_root(&root);

    let stale = ChainKey::load(s.store.as_ref(), &both).await.unwrap();
    let chain = ChainKey::load(s.store.as_ref(), &both).await.unwrap();
    assert_eq!(chain.roll(s.store.as_ref()).await.unwrap(), Some(2));
    assert_eq!(
        chain.roll(s.store.as_ref()).await.unwrap(),
        None,
        "B seals version 2"
    );
    chain
        .append(s.store.as_ref(), &[event(3)], true)
        .await
        .unwrap();
    // A process that loaded its keys before the switch catches up.
    assert_eq!(stale.newest(), 1);
    stale
        .append(s.store.as_ref(), &[event(4)], true)
        .await
        .unwrap();
    assert_eq!(stale.newest(), 2);
    let head = s.store.audit_head().await.unwrap().unwrap();
    assert_eq!((head.0, head.2), (5, 2));
    rewrap(s.store.as_ref(), &both, 100, chain.newest())
        .await
        .unwrap();

    let under_b = || ChainKey::new(&b_alone);
    let report = verify_chain(s.store.as_ref(), &under_b()).await.unwrap();
    assert_eq!(report.rows, 5);
    let spans: Vec<_> = report
        .key_versions
        .iter()
        .map(|v| (v.version, v.first, v.last))
        .collect();
    assert_eq!(spans, [(1, 1, 3), (2, 4, 5)]);
    assert!(
        report
            .to_string()
            .contains("chain key version 1 for rows 1–3, version 2 for rows 4–5"),
        "{report}"
    );

    // 1. A row appended with A's chain key after the switch.
    let rows = s.store.audit_page(0, 10).await.unwrap();
    let forged = ChainKey::new(&a).link(6, &rows[4].hash, &event(6));
    s.raw
        .execute(
            "INSERT INTO audit_log (seq, at, actor, action, subject, detail, network_prefix, prev_hash, hash, key_version) \
             VALUES (6, 1800000006, 'cli', 'test_event', 'subject-6', '{\"n\":6}', NULL, $1, $2, 1)",
            &[&rows[4].hash, &forged],
        )
        .await
        .unwrap();
    assert_eq!(
        verify_chain(s.store.as_ref(), &under_b())
            .await
            .map(|r| r.rows),
        Err(ChainError::Broken {
            seq: 6,
            reason: "linked under an older chain key version than the row before it (written with a retired key)"
        })
    );
    // 2. Every row linked under version 2 cut.
    allow_tampering(&s, engine).await;
    s.raw
        .execute("DELETE FROM audit_log WHERE seq >= 4", &[])
        .await
        .unwrap();
    assert_eq!(
        verify_chain(s.store.as_ref(), &under_b())
            .await
            .map(|r| r.rows),
        Err(ChainError::NotSwitched { stored: 2, head: 1 })
    );
    // 3. And version 2 itself deleted: the check value, sealed under B,
    // still records it.
    s.raw
        .execute("DELETE FROM settings WHERE name = 'audit_chain_key.2'", &[])
        .await
        .unwrap();
    match verify_chain(s.store.as_ref(), &under_b()).await {
        Err(ChainError::Store(message)) => {
            assert!(message.contains("version 2 is missing"), "{message}")
        }
        other => panic!("a deleted chain key must be reported: {other:?}"),
    }
}

on_both_engines!(
    concurrent_writers_build_one_chain,
    an_edited_row_is_named,
    a_removed_row_is_named,
    a_row_rewritten_without_the_master_key_is_named,
    rows_cut_from_the_end_after_a_checkpoint_are_detected,
    rows_from_before_the_keyed_chain_verify_up_to_the_recorded_end,
    a_retired_master_key_cannot_extend_the_chain_after_the_switch,
);
