//! `GET /metrics`: the Prometheus text format, with the counters of the
//! flows that just ran and no identifiers in any label.

use crate::helpers::{Engine, fixture_with};

/// The value of the series named exactly `series` (name and labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .unwrap_or_else(|| panic!("{series} missing from:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_flows_without_identifiers() {
    let f = fixture_with(Engine::Postgres, &[("TESSERA_TOKEN_RATE_LIMIT", "3/m")]).await;
    let (_, refresh_token) = f.app.login("alice").await;
    assert_eq!(f.app.refresh(&refresh_token).await.status(), 200);
    // A replay of the rotated token: detected, the session revoked.
    assert_eq!(f.app.refresh(&refresh_token).await.status(), 400);
    let cc = || f.app.client_credentials("rs", &f.rs);
    for _ in 0..3 {
        assert_eq!(cc().await.status(), 200);
    }
    assert_eq!(cc().await.status(), 429);
    assert_eq!(
        f.app.get("/admin/v1/users/alice/sessions").await.status(),
        401
    );

    let res = f.app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = res.text().await.unwrap();
    assert_eq!(
        value(&text, "tessera_tokens_issued_total{grant=\"password\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tessera_tokens_issued_total{grant=\"refresh_token\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tessera_tokens_issued_total{grant=\"client_credentials\"}"
        ),
        3.0
    );
    assert_eq!(value(&text, "tessera_refresh_rotations_total"), 1.0);
    assert_eq!(value(&text, "tessera_refresh_replays_total"), 1.0);
    assert_eq!(
        value(&text, "tessera_rate_limited_total{limit=\"token\"}"),
        1.0
    );
    assert_eq!(
        value(
            &text,
            "tessera_http_requests_total{method=\"POST\",route=\"/oauth/token\",status=\"429\"}"
        ),
        1.0
    );
    // Routes are patterns, never concrete paths.
    assert_eq!(
        value(
            &text,
            "tessera_http_requests_total{method=\"GET\",route=\"/admin/v1/users/{username}/sessions\",status=\"401\"}"
        ),
        1.0
    );
    assert!(
        value(
            &text,
            "tessera_http_request_duration_seconds_count{method=\"POST\",route=\"/oauth/token\"}"
        ) >= 6.0
    );
    assert_eq!(value(&text, "tessera_signing_keys{state=\"active\"}"), 1.0);
    assert!(value(&text, "tessera_signing_key_age_seconds") >= 0.0);
    assert_eq!(value(&text, "tessera_db_connections{state=\"max\"}"), 16.0);
    assert!(
        value(&text, "tessera_revocation_list_entries") >= 1.0,
        "the replay revoked a session"
    );
    assert!(value(&text, "tessera_process_resident_memory_bytes") > 1e6);
    // No user, client, session or token identifier in any label.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.contains("alice") && !line.contains("\"rs\"") && !line.contains("spa"),
            "{line}"
        );
        let labels = line.split('}').next().unwrap_or_default();
        assert!(
            labels.chars().filter(|c| *c == '-').count() < 4,
            "looks like an id: {line}"
        );
    }
}
