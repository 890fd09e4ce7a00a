//! Tests of the approvals service over the real SQLite store: holding and releasing, the
//! voting rules end to end, expiry, cancel, windows, restart, replicas sharing a file, audit.
//! Time is tokio's paused clock (the service clock follows it), so nothing here is timed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::service::Clock;
use super::*;
use crate::audit::event::{AuditEvent, EventKind};
use crate::identity::Identity;
use crate::policy::{Decision, Verdict};
use crate::store::SqliteStore;

const MINUTE: Duration = Duration::from_secs(60);

/// Audit that keeps what it is given.
#[derive(Default)]
pub(super) struct Collect(pub(super) Mutex<Vec<AuditEvent>>);

impl ApprovalAudit for Collect {
    fn record(&self, ev: AuditEvent) -> AuditFuture<'_> {
        self.0.lock().unwrap().push(ev);
        Box::pin(async { Ok(()) })
    }
}

impl Collect {
    pub(super) fn kinds(&self, id: &str) -> Vec<EventKind> {
        let evs = self.0.lock().unwrap();
        evs.iter()
            .filter(|e| e.approval.as_deref() == Some(id))
            .map(|e| e.kind)
            .collect()
    }
}

/// Wall-clock-like µs that advance with tokio's (paused) clock.
pub(super) fn tokio_clock() -> Clock {
    let start = tokio::time::Instant::now();
    Arc::new(move || 1_700_000_000_000_000 + start.elapsed().as_micros() as i64)
}

pub(super) fn settings(node: &str) -> ApprovalSettings {
    ApprovalSettings {
        approvers: vec!["dba".into()],
        pending_ttl: 15 * MINUTE,
        max_window: 8 * 60 * MINUTE,
        node: node.into(),
        poll_interval: Duration::from_secs(1),
    }
}

pub(super) async fn service_on(
    store: Arc<dyn ApprovalStore>,
    node: &str,
    clock: Clock,
) -> (Approvals, Arc<Collect>) {
    let audit = Arc::new(Collect::default());
    let svc = Approvals::start_with_clock(store, settings(node), audit.clone(), None, clock)
        .await
        .unwrap();
    (svc, audit)
}

async fn service() -> (Approvals, Arc<Collect>) {
    let store = Arc::new(SqliteStore::open_in_memory().unwrap());
    service_on(store, "n1", tokio_clock()).await
}

pub(super) fn alice() -> Identity {
    Identity::for_tests("entra", "alice", &["dev"])
}
pub(super) fn bob() -> Identity {
    Identity::for_tests("entra", "bob", &["dba"])
}
pub(super) fn carol() -> Identity {
    Identity::for_tests("entra", "carol", &["dba", "security"])
}

pub(super) fn held(session: &str) -> NewRequest {
    NewRequest::new(
        NewKind::OneTime {
            fingerprint: fingerprint("delete from orders where id = $1", &[Some(b"7")]),
            statement: "delete from orders where id = $1".into(),
            session: session.into(),
            parameters: Vec::new(),
            tables: Vec::new(),
            grant: false,
        },
        "orders",
        "sql.write",
    )
}

pub(super) fn window(minutes: u64) -> NewRequest {
    NewRequest::new(
        NewKind::Window {
            duration: MINUTE * minutes as u32,
        },
        "orders",
        "sql.write",
    )
    .with_reason(Some("migration".into()))
}

pub(super) fn two_approvers() -> Decision {
    Decision {
        verdict: Verdict::Review {
            approvals: 2,
            approvers: vec!["dba".into(), "security".into()],
        },
        policies: vec!["deletes-need-two".into()],
        reason: Some("approval required by deletes-need-two".into()),
        policy_version: 1,
    }
}

/// Let spawned tasks run without moving the clock.
pub(super) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn held_command_waits_for_n_distinct_approvers() {
    let (svc, audit) = service().await;
    let req = svc
        .request(&alice(), held("s1").with_review(&two_approvers()))
        .await
        .unwrap();
    assert_eq!((req.required, req.state), (2, State::Pending));
    assert_eq!(req.approver_groups, vec!["dba", "security"]);
    assert_eq!(req.policies, vec!["deletes-need-two"]);
    let waiter = tokio::spawn(svc.wait(&req.id));
    settle().await;

    let after_one = svc.vote(&req.id, &bob(), true, None).await.unwrap();
    assert_eq!((after_one.state, after_one.version), (State::Pending, 1));
    settle().await;
    assert!(
        !waiter.is_finished(),
        "one approval of two must not release the command"
    );
    // Bob again under another issuer is still bob.
    let again = svc
        .vote(
            &req.id,
            &Identity::for_tests("builtin", "bob", &["dba"]),
            true,
            None,
        )
        .await;
    assert!(matches!(again, Err(ApprovalError::AlreadyVoted(_))));

    svc.vote(&req.id, &carol(), true, Some("checked".into()))
        .await
        .unwrap();
    let outcome = waiter.await.unwrap();
    assert!(outcome.is_approved(), "{}", outcome.message());
    let Outcome::Approved(done) = outcome else {
        unreachable!()
    };
    assert_eq!(done.approvals(), 2);
    assert_eq!(
        audit.kinds(&req.id),
        vec![
            EventKind::ApprovalRequest,
            EventKind::ApprovalVote,
            EventKind::ApprovalVote,
            EventKind::ApprovalOutcome
        ]
    );
    let evs = audit.0.lock().unwrap();
    assert_eq!(evs[0].session, "s1");
    assert_eq!(
        evs[0].statement.as_deref(),
        Some("delete from orders where id = $1")
    );
    assert_eq!(
        evs[2].identity.as_ref().map(|i| i.subject.as_str()),
        Some("carol")
    );
    assert_eq!(evs[3].detail.as_ref().unwrap()["state"], "approved");
}

#[tokio::test(start_paused = true)]
async fn refused_votes_change_nothing() {
    let (svc, audit) = service().await;
    let req = svc.request(&alice(), held("s1")).await.unwrap();
    assert_eq!(
        req.approver_groups,
        vec!["dba"],
        "configured approvers by default"
    );
    let own = svc
        .vote(
            &req.id,
            &Identity::for_tests("builtin", "alice", &["dba"]),
            true,
            None,
        )
        .await;
    assert!(matches!(own, Err(ApprovalError::SelfVote(_))));
    let outsider = svc
        .vote(
            &req.id,
            &Identity::for_tests("entra", "dave", &["dev"]),
            true,
            None,
        )
        .await;
    assert!(matches!(outsider, Err(ApprovalError::NotApprover { .. })));
    let missing = svc.vote("apr_000000000000", &bob(), true, None).await;
    assert!(matches!(missing, Err(ApprovalError::NotFound(_))));
    let stored = svc.get(&req.id).await.unwrap();
    assert!(stored.votes.is_empty());
    assert_eq!(stored.version, 0);
    assert_eq!(audit.kinds(&req.id), vec![EventKind::ApprovalRequest]);
}

#[tokio::test(start_paused = true)]
async fn one_deny_releases_the_wait_with_the_reason() {
    let (svc, _audit) = service().await;
    let req = svc
        .request(&alice(), held("s1").with_review(&two_approvers()))
        .await
        .unwrap();
    let waiter = tokio::spawn(svc.wait(&req.id));
    svc.vote(&req.id, &bob(), true, None).await.unwrap();
    svc.vote(&req.id, &carol(), false, Some("use the archive job".into()))
        .await
        .unwrap();
    let outcome = waiter.await.unwrap();
    assert!(!outcome.is_approved());
    assert!(
        outcome
            .message()
            .ends_with("denied by entra/carol: use the archive job"),
        "{}",
        outcome.message()
    );
    let late = svc
        .vote(
            &req.id,
            &Identity::for_tests("entra", "erin", &["dba"]),
            true,
            None,
        )
        .await;
    assert!(matches!(
        late,
        Err(ApprovalError::NotPending {
            state: State::Denied,
            ..
        })
    ));
}

#[tokio::test(start_paused = true)]
async fn pending_requests_expire_lazily_by_sweep_and_in_wait() {
    let (svc, audit) = service().await;
    let lazy = svc.request(&alice(), held("s1")).await.unwrap();
    let swept = svc.request(&alice(), held("s2")).await.unwrap();
    let waited = svc.request(&alice(), held("s3")).await.unwrap();
    let waiter = tokio::spawn(svc.wait(&waited.id));
    // The waiter wakes at expiry by itself (its sleeps move the paused clock).
    let outcome = waiter.await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Refused(r) if r.state == State::Expired),
        "{outcome:?}"
    );
    assert!(outcome.message().contains("expired with 0 of 1"));
    // The others are expired by now, by the sweeper or when next read.
    let vote = svc.vote(&lazy.id, &bob(), true, None).await;
    assert!(
        matches!(
            vote,
            Err(ApprovalError::NotPending {
                state: State::Expired,
                ..
            })
        ),
        "{vote:?}"
    );
    assert_eq!(svc.get(&swept.id).await.unwrap().state, State::Expired);
    assert_eq!(svc.sweep().await.unwrap(), 0, "nothing left to expire");
    // Each expiry is recorded once, whoever noticed it.
    for id in [&lazy.id, &swept.id, &waited.id] {
        assert_eq!(
            audit.kinds(id),
            vec![EventKind::ApprovalRequest, EventKind::ApprovalOutcome]
        );
    }
}

#[tokio::test(start_paused = true)]
async fn sweep_expires_what_is_due() {
    let (svc, _audit) = service().await;
    let req = svc.request(&alice(), held("s1")).await.unwrap();
    // Move the service clock without letting the background sweeper run first: its tick is
    // a timer, and `advance` fires timers only when this task yields.
    tokio::time::advance(16 * MINUTE).await;
    let n = svc.sweep().await.unwrap();
    assert!(n <= 1);
    assert_eq!(svc.get(&req.id).await.unwrap().state, State::Expired);
    let listed = svc
        .list(&ApprovalFilter {
            state: Some(State::Pending),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(listed.is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_only_by_requester_or_holding_session() {
    let (svc, audit) = service().await;
    let req = svc.request(&alice(), held("s1")).await.unwrap();
    let waiter = tokio::spawn(svc.wait(&req.id));
    assert!(matches!(
        svc.cancel(&req.id, &bob(), None).await,
        Err(ApprovalError::NotRequester(_))
    ));
    assert!(
        svc.cancel_held(&req.id, "s2", "client went away")
            .await
            .is_err()
    );
    let done = svc
        .cancel_held(&req.id, "s1", "the client cancelled the query")
        .await
        .unwrap();
    assert_eq!(done.state, State::Cancelled);
    assert_eq!(done.closed_by.as_deref(), Some("session s1"));
    let outcome = waiter.await.unwrap();
    assert_eq!(
        outcome.message(),
        format!(
            "approval {} was cancelled: the client cancelled the query",
            req.id
        )
    );
    assert!(
        svc.cancel(&req.id, &alice(), None).await.is_err(),
        "already final"
    );

    let other = svc.request(&alice(), held("s9")).await.unwrap();
    assert_eq!(
        svc.cancel(&other.id, &alice(), Some("wrong table".into()))
            .await
            .unwrap()
            .state,
        State::Cancelled
    );
    let outcome_ev = audit
        .0
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e.kind == EventKind::ApprovalOutcome)
        .cloned()
        .unwrap();
    assert_eq!(outcome_ev.approval.as_deref(), Some(other.id.as_str()));
    assert_eq!(outcome_ev.detail.unwrap()["closed_by"], "entra/alice");
}

#[tokio::test(start_paused = true)]
async fn window_grant_is_active_then_ends() {
    let (svc, _audit) = service().await;
    let too_long = svc.request(&alice(), window(9 * 60)).await;
    assert!(matches!(
        too_long,
        Err(ApprovalError::WindowTooLong {
            max_secs: 28_800,
            ..
        })
    ));
    assert!(matches!(
        svc.request(&alice(), window(0)).await,
        Err(ApprovalError::Invalid(_))
    ));

    let req = svc.request(&alice(), window(30)).await.unwrap();
    assert_eq!(
        svc.active_window(&alice(), "orders", "sql.write"),
        None,
        "not before it is granted"
    );
    let granted = svc.vote(&req.id, &bob(), true, None).await.unwrap();
    assert_eq!(granted.state, State::Approved);
    assert_eq!(
        svc.active_window(&alice(), "orders", "sql.write"),
        Some(req.id.clone())
    );
    assert_eq!(svc.active_window(&alice(), "orders", "sql.ddl"), None);
    assert_eq!(svc.active_window(&alice(), "billing", "sql.write"), None);
    assert_eq!(svc.active_window(&bob(), "orders", "sql.write"), None);
    assert_eq!(
        svc.active_window(
            &Identity::for_tests("builtin", "alice", &[]),
            "orders",
            "sql.write"
        ),
        None
    );

    tokio::time::advance(29 * MINUTE).await;
    assert_eq!(
        svc.active_window(&alice(), "orders", "sql.write"),
        Some(req.id.clone())
    );
    tokio::time::advance(MINUTE).await;
    assert_eq!(
        svc.active_window(&alice(), "orders", "sql.write"),
        None,
        "the window is over"
    );

    // Ending a window early.
    let second = svc.request(&alice(), window(60)).await.unwrap();
    svc.vote(&second.id, &carol(), true, None).await.unwrap();
    assert_eq!(
        svc.active_window(&alice(), "orders", "sql.write"),
        Some(second.id.clone())
    );
    assert!(svc.cancel(&second.id, &bob(), None).await.is_err());
    svc.cancel(&second.id, &alice(), Some("done".into()))
        .await
        .unwrap();
    assert_eq!(svc.active_window(&alice(), "orders", "sql.write"), None);
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_refused() {
    let (svc, _) = service().await;
    let mut no_fp = held("s1");
    no_fp.kind = NewKind::OneTime {
        fingerprint: String::new(),
        statement: "x".into(),
        session: "s1".into(),
        parameters: Vec::new(),
        tables: Vec::new(),
        grant: false,
    };
    assert!(matches!(
        svc.request(&alice(), no_fp).await,
        Err(ApprovalError::Invalid(_))
    ));
    let no_conn = NewRequest::new(NewKind::Window { duration: MINUTE }, "", "sql.write");
    assert!(matches!(
        svc.request(&alice(), no_conn).await,
        Err(ApprovalError::Invalid(_))
    ));
    let mut zero = held("s1");
    zero.required = 0;
    assert_eq!(
        svc.request(&alice(), zero).await.unwrap().required,
        1,
        "at least one approver"
    );
}

#[test]
fn settings_come_from_the_config_section() {
    let cfg = crate::config::ApprovalsConfig {
        approvers: vec!["dba".into()],
        pending_ttl: "5m".into(),
        ..Default::default()
    };
    let s = ApprovalSettings::from_config(&cfg, "gw-1").unwrap();
    assert_eq!(s.pending_ttl, 5 * MINUTE);
    assert_eq!(s.max_window, 8 * 60 * MINUTE, "default");
    assert_eq!(
        (s.node.as_str(), s.approvers.clone()),
        ("gw-1", vec!["dba".to_string()])
    );
    let bad = crate::config::ApprovalsConfig {
        max_window: "forever".into(),
        ..Default::default()
    };
    assert!(
        ApprovalSettings::from_config(&bad, "gw-1")
            .unwrap_err()
            .starts_with("approvals.max_window")
    );
}
