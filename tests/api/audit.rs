//! The audit trail's hash chain, on both engines: appends from many writers
//! form one chain, and `verify_chain` names the first tampered row.

use tessera::audit::{ChainError, verify_chain};
use tessera::store::NewAuditEvent;

use crate::helpers::{Engine, TestStore, on_both_engines, test_store};

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
    s.store.append_audit(&events, true).await.unwrap();
    s
}

async fn concurrent_writers_build_one_chain(engine: Engine) {
    let s = test_store(engine).await;
    let writers = (0..8).map(|w| {
        let store = s.store.clone();
        tokio::spawn(async move {
            for b in 0..5 {
                let batch: Vec<_> = (0..3).map(|i| event(w * 100 + b * 10 + i)).collect();
                store
                    .append_audit(&batch, false)
                    .await
                    .expect("append under contention");
            }
        })
    });
    for w in writers.collect::<Vec<_>>() {
        w.await.unwrap();
    }
    assert_eq!(verify_chain(s.store.as_ref()).await, Ok(8 * 5 * 3));
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

async fn an_edited_row_is_named(engine: Engine) {
    let s = with_rows(engine, 5).await;
    assert_eq!(verify_chain(s.store.as_ref()).await, Ok(5));
    allow_tampering(&s, engine).await;
    s.raw
        .execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 3", &[])
        .await
        .unwrap();
    assert_eq!(
        verify_chain(s.store.as_ref()).await,
        Err(ChainError::Broken {
            seq: 3,
            reason: "content does not match its hash (edited)"
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
        verify_chain(s.store.as_ref()).await,
        Err(ChainError::Broken { seq: 2, .. })
    ));
}

async fn a_rehashed_row_still_breaks_the_link(engine: Engine) {
    // An attacker who edits a row and recomputes its hash breaks the next
    // row's link instead.
    let s = with_rows(engine, 4).await;
    allow_tampering(&s, engine).await;
    let rows = s.store.audit_page(0, 10).await.unwrap();
    let mut forged = event(99);
    forged.actor = "mallory".into();
    let hash = tessera::audit::chain_hash(2, &rows[0].hash, &forged);
    s.raw
        .execute(
            "UPDATE audit_log SET actor = 'mallory', at = 1800000099, subject = 'subject-99', \
             detail = '{\"n\":99}', hash = $1 WHERE seq = 2",
            &[&hash],
        )
        .await
        .unwrap();
    assert_eq!(
        verify_chain(s.store.as_ref()).await,
        Err(ChainError::Broken {
            seq: 3,
            reason: "does not link to the previous row"
        })
    );
}

on_both_engines!(
    concurrent_writers_build_one_chain,
    an_edited_row_is_named,
    a_removed_row_is_named,
    a_rehashed_row_still_breaks_the_link,
);
