//! Key custody: master-key rotation (A → "B, A" → rewrap → B alone) with a
//! restart at each step, on both engines.

use serde_json::Value;
use tessera::keys::master::MasterKey;

use crate::helpers::{
    AUD, ClientSpec, Engine, Login, PASSWORD, TestApp, on_both_engines, random_master_key,
    spawn_app_with, spawn_on_with_key,
};

fn cli(app: &TestApp, master_key: &str, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env_clear()
        .env("TESSERA_DATABASE_URL", app.database_url())
        .env("TESSERA_MASTER_KEY", master_key)
        .output()
        .unwrap()
}

/// Creates `name` with a TOTP secret sealed under `master_key`'s active key.
async fn add_totp_user(app: &TestApp, master_key: &str, name: &str) -> Vec<u8> {
    let master = MasterKey::from_base64(master_key).unwrap();
    let id = uuid::Uuid::new_v4();
    let secret = tessera::auth::totp::new_secret();
    let user = tessera::store::NewUser {
        id,
        username: name.into(),
        password_hash: tessera::auth::password::hash(PASSWORD).unwrap(),
        totp_secret: Some(master.seal(&secret, &tessera::auth::totp::seal_context(id))),
    };
    app.store.create_user(&user, 0).await.unwrap();
    secret.to_vec()
}

async fn refreshed(app: &TestApp, refresh: &str) -> String {
    let res = app.refresh(refresh).await;
    assert_eq!(res.status(), 200, "refresh on {}", app.address);
    let body: Value = res.json().await.unwrap();
    body["refresh_token"].as_str().unwrap().to_owned()
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks: Value = app
        .get("/.well-known/jwks.json")
        .await
        .json()
        .await
        .unwrap();
    let mut kids: Vec<String> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect();
    kids.sort();
    kids
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whole cycle: what was sealed under A (signing key, TOTP secret,
/// derivation root, check value) and what was MACed from it (client-secret
/// digests, the audit chain) keeps working under "B, A", is re-sealed by
/// `keys rewrap`, and works under B alone; B alone before the rewrap, and
/// A alone after it, fail at start with one line naming the setting.
async fn the_master_key_rotates_without_losing_anything(engine: Engine) {
    let a = random_master_key();
    let b = random_master_key();
    let both = format!("{b}\n{a}\n");
    let app = spawn_app_with(engine, &[("TESSERA_MASTER_KEY", &a)]).await;
    let secret = app
        .add_client(ClientSpec::confidential("svc", &["client_credentials"]))
        .await;
    app.add_client(ClientSpec::public("spa", &["password", "refresh_token"]))
        .await;
    app.add_user("alice").await;
    let totp_a = add_totp_user(&app, &a, "bob").await;
    let (_, mut refresh) = app.login("alice").await;
    app.client_token("svc", &secret).await;
    let kids = jwks_kids(&app).await;
    assert!(!kids.is_empty());

    // Step 1: "B, A". Everything keeps working; new secrets are sealed under B.
    let app = {
        let next = spawn_on_with_key(&app, &both)
            .await
            .expect("starts with B, A");
        drop(app);
        next
    };
    refresh = refreshed(&app, &refresh).await;
    app.client_token("svc", &secret).await;
    assert_eq!(jwks_kids(&app).await, kids);
    let totp_b = add_totp_user(&app, &both, "carol").await;

    // B alone before the rewrap: refused at start, naming the setting and the missing key.
    let a_id = MasterKey::from_base64(&a).unwrap().id_hex();
    let b_id = MasterKey::from_base64(&b).unwrap().id_hex();
    let err = spawn_on_with_key(&app, &b)
        .await
        .err()
        .expect("B alone must not start yet");
    assert!(err.contains("TESSERA_MASTER_KEY"), "{err}");
    assert!(err.contains(&a_id), "names the key still needed: {err}");
    assert!(err.contains("keys rewrap"), "says what to do: {err}");

    // Step 2: the rewrap, online (the instance keeps serving), reports its counts.
    let printed = stdout(&cli(&app, &both, &["keys", "rewrap"]));
    assert!(
        printed.contains(&format!("active_key={b_id}\n")),
        "{printed}"
    );
    assert!(printed.contains("totp_secrets=2 resealed=1\n"), "{printed}");
    assert!(printed.contains("settings=3 resealed=2\n"), "{printed}");
    assert!(
        printed.contains("audit_chain_key_version=2 (new)\n"),
        "a chain key A cannot open: {printed}"
    );
    assert!(
        printed.contains(&format!("no_longer_needed={a_id}\n")),
        "{printed}"
    );
    let signing = printed
        .lines()
        .find_map(|l| l.strip_prefix("signing_keys="))
        .unwrap();
    let (total, resealed) = signing.split_once(" resealed=").unwrap();
    assert_eq!(total, resealed, "every signing key was under A: {printed}");
    assert_ne!(total, "0");
    // A second run finds nothing to do.
    let again = stdout(&cli(&app, &both, &["keys", "rewrap"]));
    assert!(again.contains("totp_secrets=2 resealed=0\n"), "{again}");
    assert!(again.contains("settings=3 resealed=0\n"), "{again}");
    assert!(again.contains("audit_chain_key_version=2\n"), "{again}");
    refresh = refreshed(&app, &refresh).await;

    // Step 3: B alone. Nothing is lost.
    let app = {
        let next = spawn_on_with_key(&app, &b)
            .await
            .expect("starts with B alone after the rewrap");
        drop(app);
        next
    };
    refreshed(&app, &refresh).await;
    app.client_token("svc", &secret).await;
    assert_eq!(
        jwks_kids(&app).await,
        kids,
        "the same signing keys, opened under B"
    );
    let now = chrono::Utc::now().timestamp();
    for (user, totp) in [("bob", &totp_a), ("carol", &totp_b)] {
        let code = tessera::auth::totp::code_at(totp, now);
        app.login_as(Login::new(user).param("otp", &code).param("audience", AUD))
            .await;
    }
    // The audit chain (keyed from the stored root) verifies under B alone,
    // and records the rewrap.
    let verified = stdout(&cli(&app, &b, &["audit", "verify"]));
    assert!(verified.contains("audit log intact"), "{verified}");
    assert!(verified.contains(", version 2 for rows "), "{verified}");
    let audit: String = app
        .store
        .audit_page(0, 1000)
        .await
        .unwrap()
        .iter()
        .map(|e| format!("{} ", e.action))
        .collect();
    assert!(
        audit.contains("audit_chain_key_rolled master_key_rewrapped"),
        "{audit}"
    );

    // A alone no longer opens anything.
    let err = spawn_on_with_key(&app, &a)
        .await
        .err()
        .expect("A alone must not start");
    assert!(err.contains("TESSERA_MASTER_KEY"), "{err}");
    assert!(err.contains(&b_id), "{err}");
    let out = cli(&app, &a, &["keys", "list"]);
    assert!(!out.status.success());
}

/// A key setting that is not a list of keys stops start-up with one line
/// naming the setting and the entry.
async fn a_bad_key_list_names_the_setting_and_the_entry(engine: Engine) {
    let a = random_master_key();
    let app = spawn_app_with(engine, &[("TESSERA_MASTER_KEY", &a)]).await;
    for (setting, expected) in [
        (format!("{a}\nnot-a-key"), "key 2 of 2: not a master key"),
        (format!("{a},{a}"), "twice"),
    ] {
        let out = cli(&app, &setting, &["keys", "list"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("TESSERA_MASTER_KEY"), "{err}");
        assert!(err.contains(expected), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

on_both_engines!(
    the_master_key_rotates_without_losing_anything,
    a_bad_key_list_names_the_setting_and_the_entry,
);
