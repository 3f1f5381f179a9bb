//! Prometheus metrics, served at `GET /metrics`.
//!
//! One process-wide registry: the counters are bumped from wherever the
//! event happens (the HTTP edge, the token endpoint, the audit trail) without
//! threading a handle through every constructor. Labels are small fixed sets
//! (routes as patterns, grant types, event names): never a user, client or
//! token id, so the series count cannot grow with traffic.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric tessera exports.
pub struct Metrics {
    registry: Registry,
    /// Requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// Request latency by route pattern and method.
    pub http_duration: HistogramVec,
    /// Access tokens issued, by grant type.
    pub tokens_issued: IntCounterVec,
    /// Token exchanges (RFC 8693), by kind (`on_behalf_of`, `upstream`)
    /// and outcome (`issued`, `refused`).
    pub token_exchanges: IntCounterVec,
    /// Refresh tokens rotated (successful refresh grants).
    pub refresh_rotations: IntCounter,
    /// Refresh-token replays detected (each revoked a session).
    pub refresh_replays: IntCounter,
    /// Revocations made through this instance, by kind.
    pub revocations: IntCounterVec,
    /// Requests refused by a limit, by limit.
    pub rate_limited: IntCounterVec,
    /// Audit events recorded, by event name.
    pub audit_events: IntCounterVec,
    /// Seconds since the current signing key started signing.
    pub signing_key_age: IntGauge,
    /// Keys in the JWKS, by state.
    pub keys: IntGaugeVec,
    /// Database pool connections, by state (`idle`, `in_use`, `max`).
    pub db_connections: IntGaugeVec,
    /// Entries in the in-memory revocation list.
    pub revocation_list_entries: IntGauge,
    /// Rows the newest audit checkpoint written by this process vouches for.
    pub audit_checkpoint: IntGauge,
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new_custom(Some("tessera".into()), None).expect("registry");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("process collector");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route pattern and method.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["route", "method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("unique metric");
        Metrics {
            http_requests: counter_vec(
                &registry,
                "http_requests_total",
                "HTTP requests by route pattern, method and status.",
                &["route", "method", "status"],
            ),
            http_duration,
            tokens_issued: counter_vec(
                &registry,
                "tokens_issued_total",
                "Access tokens issued, by grant type.",
                &["grant"],
            ),
            token_exchanges: counter_vec(
                &registry,
                "token_exchanges_total",
                "Token exchanges (RFC 8693), by kind and outcome.",
                &["kind", "outcome"],
            ),
            refresh_rotations: counter(
                &registry,
                "refresh_rotations_total",
                "Refresh tokens rotated.",
            ),
            refresh_replays: counter(
                &registry,
                "refresh_replays_total",
                "Refresh-token replays detected (the session was revoked).",
            ),
            revocations: counter_vec(
                &registry,
                "revocations_total",
                "Revocations made through this instance, by kind (token, session, user, client, logout).",
                &["kind"],
            ),
            rate_limited: counter_vec(
                &registry,
                "rate_limited_total",
                "Requests refused by a limit (token, introspection, login_account, login_network).",
                &["limit"],
            ),
            audit_events: counter_vec(
                &registry,
                "audit_events_total",
                "Audit events recorded by this instance, by event.",
                &["event"],
            ),
            signing_key_age: gauge(
                &registry,
                "signing_key_age_seconds",
                "Seconds since the current signing key started signing.",
            ),
            keys: gauge_vec(
                &registry,
                "signing_keys",
                "Published signing keys by state (next, active, retiring).",
                &["state"],
            ),
            db_connections: gauge_vec(
                &registry,
                "db_connections",
                "Database pool connections by state (idle, in_use, max).",
                &["state"],
            ),
            revocation_list_entries: gauge(
                &registry,
                "revocation_list_entries",
                "Entries in this instance's in-memory revocation list.",
            ),
            audit_checkpoint: gauge(
                &registry,
                "audit_checkpoint_seq",
                "Audit rows vouched for by the newest checkpoint this process wrote (compare with `tessera audit verify`).",
            ),
            registry,
        }
    }

    /// The text exposition format of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// Counts an audit event, and the revocations and replays it stands for.
    pub fn audit_event(&self, action: crate::audit::Action) {
        self.audit_events
            .with_label_values(&[action.as_str()])
            .inc();
        if action == crate::audit::Action::RefreshReuseDetected {
            self.refresh_replays.inc();
        }
        if let Some(kind) = action.revocation_kind() {
            self.revocations.with_label_values(&[kind]).inc();
        }
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_map_to_revocation_kinds_and_replays() {
        let m = Metrics::new();
        m.audit_event(crate::audit::Action::SessionRevoked);
        m.audit_event(crate::audit::Action::SessionRevoked);
        m.audit_event(crate::audit::Action::RefreshReuseDetected);
        m.audit_event(crate::audit::Action::Login);
        let text = m.render();
        assert!(
            text.contains("tessera_revocations_total{kind=\"session\"} 2"),
            "{text}"
        );
        assert!(text.contains("tessera_refresh_replays_total 1"), "{text}");
        assert!(
            text.contains("tessera_audit_events_total{event=\"login\"} 1"),
            "{text}"
        );
    }
}
