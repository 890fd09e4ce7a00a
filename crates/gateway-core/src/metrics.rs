//! Prometheus metrics, kept as atomics so the hot path never takes a lock to count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::config::Protocol;
use crate::policy::Verdict;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5, 10.0,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    overflow: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Count one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        self.sum_us.fetch_add(d.as_micros() as u64, Relaxed);
        match BUCKETS.iter().position(|b| secs <= *b) {
            Some(i) => self.counts[i].fetch_add(1, Relaxed),
            None => self.overflow.fetch_add(1, Relaxed),
        };
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

/// Counters kept per protocol.
#[derive(Debug, Default)]
pub struct ProtocolCounters {
    pub sessions_total: AtomicU64,
    pub sessions_active: AtomicU64,
    pub auth_failures_total: AtomicU64,
    pub target_errors_total: AtomicU64,
    /// Commands decided: allowed, denied, held for review.
    decisions: [AtomicU64; 3],
}

/// Every counter the gateway exports.
#[derive(Debug, Default)]
pub struct Metrics {
    per_protocol: [ProtocolCounters; PROTOCOLS.len()],
    pub audit_failures_total: AtomicU64,
    pub policy_reloads_total: AtomicU64,
    /// Time from receiving a command to forwarding it (classify + decide + audit).
    pub decision_latency: Histogram,
    /// Time from forwarding a command to its completion at the target.
    pub statement_latency: Histogram,
}

/// Every protocol, in the order their counters are kept.
const PROTOCOLS: [Protocol; 5] = [
    Protocol::Postgres,
    Protocol::Tds,
    Protocol::Ssh,
    Protocol::Kube,
    Protocol::Http,
];

impl Metrics {
    /// The counters of `protocol`.
    pub fn protocol(&self, protocol: Protocol) -> &ProtocolCounters {
        let i = PROTOCOLS.iter().position(|p| *p == protocol).unwrap_or(0);
        &self.per_protocol[i]
    }

    /// Count one command decided on a `protocol` session.
    pub fn decided(&self, protocol: Protocol, verdict: &Verdict) {
        let i = match verdict {
            Verdict::Allow(_) => 0,
            Verdict::Deny => 1,
            Verdict::Review { .. } => 2,
        };
        self.protocol(protocol).decisions[i].fetch_add(1, Relaxed);
    }

    /// Render in the Prometheus text exposition format. Per-protocol series are written for
    /// the protocols that have seen a session or a refusal.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let seen: Vec<(Protocol, &ProtocolCounters)> = PROTOCOLS
            .iter()
            .zip(&self.per_protocol)
            .filter(|(_, c)| {
                c.sessions_total.load(Relaxed) + c.auth_failures_total.load(Relaxed) > 0
            })
            .map(|(p, c)| (*p, c))
            .collect();
        type Field = fn(&ProtocolCounters) -> &AtomicU64;
        let per: [(&str, &str, &str, Field); 4] = [
            (
                "portcullis_sessions_total",
                "Sessions opened.",
                "counter",
                |c| &c.sessions_total,
            ),
            (
                "portcullis_sessions_active",
                "Sessions open now.",
                "gauge",
                |c| &c.sessions_active,
            ),
            (
                "portcullis_auth_failures_total",
                "Connection attempts refused at authentication or connect policy.",
                "counter",
                |c| &c.auth_failures_total,
            ),
            (
                "portcullis_target_errors_total",
                "Targets unreachable or failing.",
                "counter",
                |c| &c.target_errors_total,
            ),
        ];
        for (name, help, kind, field) in per {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (p, c) in &seen {
                let _ = writeln!(
                    out,
                    "{name}{{protocol=\"{}\"}} {}",
                    p.as_str(),
                    field(c).load(Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP portcullis_statements_total Commands decided, by protocol and verdict.\n# TYPE portcullis_statements_total counter"
        );
        for (p, c) in &seen {
            for (v, n) in ["allow", "deny", "review"].iter().zip(&c.decisions) {
                let _ = writeln!(
                    out,
                    "portcullis_statements_total{{protocol=\"{}\",verdict=\"{v}\"}} {}",
                    p.as_str(),
                    n.load(Relaxed)
                );
            }
        }
        let c = |out: &mut String, name: &str, help: &str, kind: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", v.load(Relaxed));
        };
        c(
            &mut out,
            "portcullis_audit_failures_total",
            "Commands refused because their audit event could not be recorded.",
            "counter",
            &self.audit_failures_total,
        );
        c(
            &mut out,
            "portcullis_policy_reloads_total",
            "Policy reloads applied.",
            "counter",
            &self.policy_reloads_total,
        );
        let _ = writeln!(
            out,
            "# HELP portcullis_decision_seconds Classify, decide and audit time per command.\n# TYPE portcullis_decision_seconds histogram"
        );
        self.decision_latency
            .render(&mut out, "portcullis_decision_seconds", "");
        let _ = writeln!(
            out,
            "# HELP portcullis_statement_seconds Target time per command.\n# TYPE portcullis_statement_seconds histogram"
        );
        self.statement_latency
            .render(&mut out, "portcullis_statement_seconds", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_overflow() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut s = String::new();
        h.render(&mut s, "x", "");
        assert!(s.contains("x_bucket{le=\"0.0001\"} 1"), "{s}");
        assert!(s.contains("x_bucket{le=\"0.005\"} 2"), "{s}");
        assert!(s.contains("x_bucket{le=\"+Inf\"} 3"), "{s}");
        assert!(s.contains("x_count{} 3"), "{s}");
    }

    #[test]
    fn counters_carry_their_protocol() {
        let m = Metrics::default();
        m.protocol(Protocol::Ssh)
            .sessions_total
            .fetch_add(1, Relaxed);
        m.decided(Protocol::Ssh, &Verdict::Deny);
        let s = m.render();
        assert!(
            s.contains("portcullis_sessions_total{protocol=\"ssh\"} 1"),
            "{s}"
        );
        assert!(
            s.contains("portcullis_statements_total{protocol=\"ssh\",verdict=\"deny\"} 1"),
            "{s}"
        );
        // No series for protocols that saw nothing.
        assert!(!s.contains("protocol=\"postgres\""), "{s}");
    }
}
