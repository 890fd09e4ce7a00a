//! Tests of what outlives one process: restart handling, replicas sharing one store file,
//! concurrent writers, and events in the real audit log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::tests::{
    alice, bob, carol, held, service_on, settings, settle, tokio_clock, two_approvers, window,
};
use super::*;
use crate::audit::event::{EventFilter, EventKind, IdentityRecord};
use crate::store::sqlite::tests::TempDir;
use crate::store::{SqliteStore, Store};

#[tokio::test(start_paused = true)]
async fn restart_abandons_held_commands_and_keeps_the_rest() {
    let dir = TempDir::new("approvals-restart");
    let path = dir.path().join("gateway.db");
    let clock = tokio_clock();
    let (ids, other_node) = {
        let store = Arc::new(SqliteStore::open(&path).unwrap());
        let (svc, _) = service_on(store.clone(), "n1", clock.clone()).await;
        let held_here = svc.request(&alice(), held("s1")).await.unwrap();
        let pending_window = svc.request(&alice(), window(30)).await.unwrap();
        let open_window = svc.request(&alice(), window(60)).await.unwrap();
        svc.vote(&open_window.id, &bob(), true, None).await.unwrap();
        let (other, _) = service_on(store, "n2", clock.clone()).await;
        let held_elsewhere = other.request(&alice(), held("s7")).await.unwrap();
        (
            (held_here.id, pending_window.id, open_window.id),
            held_elsewhere.id,
        )
    };
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let (svc, audit) = service_on(store, "n1", clock).await;
    let abandoned = svc.get(&ids.0).await.unwrap();
    assert_eq!(abandoned.state, State::Abandoned);
    assert!(
        abandoned
            .outcome_message()
            .contains("the gateway restarted while the command was held")
    );
    assert!(matches!(svc.wait(&ids.0).await, Outcome::Refused(_)));
    assert!(
        svc.vote(&ids.0, &bob(), true, None).await.is_err(),
        "can never be approved now"
    );
    assert_eq!(audit.kinds(&ids.0), vec![EventKind::ApprovalOutcome]);
    assert_eq!(svc.get(&ids.1).await.unwrap().state, State::Pending);
    assert_eq!(
        svc.active_window(&alice(), "orders", "sql.write"),
        Some(ids.2.clone())
    );
    assert_eq!(
        svc.get(&other_node).await.unwrap().state,
        State::Pending,
        "another node's hold"
    );
    let listed = svc
        .list(&ApprovalFilter {
            state: Some(State::Abandoned),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1, "abandoned requests stay visible");
}

#[tokio::test(start_paused = true)]
async fn a_vote_on_another_replica_releases_the_held_command() {
    let dir = TempDir::new("approvals-replicas");
    let path = dir.path().join("gateway.db");
    let clock = tokio_clock();
    let (here, _) = service_on(
        Arc::new(SqliteStore::open(&path).unwrap()),
        "a",
        clock.clone(),
    )
    .await;
    let (there, _) = service_on(Arc::new(SqliteStore::open(&path).unwrap()), "b", clock).await;
    let req = here.request(&alice(), held("s1")).await.unwrap();
    let waiter = tokio::spawn(here.wait(&req.id));
    settle().await;
    there.vote(&req.id, &bob(), true, None).await.unwrap();
    // Only the store poll can tell `here`: the waiter sees it within one poll interval.
    let outcome = waiter.await.unwrap();
    assert!(outcome.is_approved(), "{}", outcome.message());

    // A window granted on the other replica reaches this one's cache with the next sweep.
    let w = here.request(&alice(), window(30)).await.unwrap();
    there.vote(&w.id, &carol(), true, None).await.unwrap();
    assert_eq!(here.active_window(&alice(), "orders", "sql.write"), None);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        here.active_window(&alice(), "orders", "sql.write"),
        Some(w.id)
    );
}

/// A store where another replica's vote lands between our read and our write.
struct Racing {
    inner: SqliteStore,
    rival: Mutex<Option<IdentityRecord>>,
}

impl ApprovalStore for Racing {
    fn create_approval(&self, req: &ApprovalRequest) -> crate::error::Result<()> {
        self.inner.create_approval(req)
    }
    fn approval(&self, id: &str) -> crate::error::Result<Option<ApprovalRequest>> {
        self.inner.approval(id)
    }
    fn list_approvals(&self, f: &ApprovalFilter) -> crate::error::Result<Vec<ApprovalRequest>> {
        self.inner.list_approvals(f)
    }
    fn update_approval(&self, req: &ApprovalRequest) -> crate::error::Result<bool> {
        if let Some(voter) = self.rival.lock().unwrap().take() {
            let mut theirs = self.inner.approval(&req.id)?.unwrap();
            theirs
                .apply_vote(&voter, true, None, req.created_us + 1)
                .unwrap();
            assert!(self.inner.update_approval(&theirs)?);
        }
        self.inner.update_approval(req)
    }
    fn active_windows(&self, now_us: i64) -> crate::error::Result<Vec<ApprovalRequest>> {
        self.inner.active_windows(now_us)
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_votes_are_both_kept() {
    let store = Arc::new(Racing {
        inner: SqliteStore::open_in_memory().unwrap(),
        rival: Mutex::new(None),
    });
    let (svc, _) = service_on(store.clone(), "n1", tokio_clock()).await;
    let req = svc
        .request(&alice(), held("s1").with_review(&two_approvers()))
        .await
        .unwrap();
    *store.rival.lock().unwrap() = Some(IdentityRecord::from(&carol()));
    let done = svc.vote(&req.id, &bob(), true, None).await.unwrap();
    assert_eq!(
        done.state,
        State::Approved,
        "bob's vote was re-applied on top of carol's"
    );
    assert_eq!(
        done.votes
            .iter()
            .map(|v| v.subject.as_str())
            .collect::<Vec<_>>(),
        vec!["carol", "bob"]
    );
    assert_eq!(done.version, 2);
}

#[tokio::test]
async fn events_reach_the_audit_log_linked_by_the_approval_id() {
    let dir = TempDir::new("approvals-audit");
    let store = Arc::new(SqliteStore::open(&dir.path().join("gateway.db")).unwrap());
    let log = crate::audit::AuditLog::start(
        store.clone(),
        crate::config::Durability::Process,
        dir.path().join("journal"),
        None,
    )
    .unwrap();
    let svc = Approvals::start(store.clone(), settings("n1"), Arc::new(log.clone()), None)
        .await
        .unwrap();
    let req = svc.request(&alice(), held("s1")).await.unwrap();
    svc.vote(&req.id, &bob(), true, None).await.unwrap();
    log.shutdown().await;
    let evs = store
        .query_events(&EventFilter {
            approval: Some(req.id.clone()),
            ..Default::default()
        })
        .unwrap();
    let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["approval_request", "approval_vote", "approval_outcome"]
    );
    assert_eq!(store.verify_chain().unwrap().problem, None);
}
