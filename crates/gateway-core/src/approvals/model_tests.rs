//! The state machine's rules, on values: no store, no clock.

use super::*;
use crate::identity::Identity;

fn rec(issuer: &str, subject: &str, groups: &[&str]) -> IdentityRecord {
    IdentityRecord::from(&Identity::for_tests(issuer, subject, groups))
}

fn request(kind: ApprovalKind, required: u32, groups: &[&str]) -> ApprovalRequest {
    ApprovalRequest {
        id: new_approval_id(),
        version: 0,
        kind,
        requester: rec("entra", "alice", &["dev"]),
        connection: "orders".into(),
        action: "sql.write".into(),
        reason: None,
        policies: vec!["writes-need-review".into()],
        required,
        approver_groups: groups.iter().map(|g| g.to_string()).collect(),
        votes: Vec::new(),
        state: State::Pending,
        created_us: 0,
        expires_us: 1_000,
        window_until_us: None,
        closed_us: None,
        closed_by: None,
        closed_reason: None,
        used_us: None,
        used_by: None,
    }
}

fn one_time() -> ApprovalKind {
    ApprovalKind::OneTime {
        fingerprint: fingerprint("delete from t", &[]),
        statement: "delete from t".into(),
        session: "s1".into(),
        parameters: Vec::new(),
        tables: Vec::new(),
        node: "n1".into(),
        grant: false,
    }
}

#[test]
fn ids_are_short_and_prefixed() {
    let id = new_approval_id();
    assert!(id.starts_with("apr_") && id.len() == 16, "{id}");
    assert_ne!(id, new_approval_id());
}

#[test]
fn fingerprint_separates_text_and_parameters() {
    let a = fingerprint("select $1", &[Some(b"1")]);
    assert_eq!(a, fingerprint("select $1", &[Some(b"1")]));
    assert_ne!(a, fingerprint("select $1", &[Some(b"2")]));
    assert_ne!(a, fingerprint("select $1", &[None]));
    assert_ne!(fingerprint("ab", &[]), fingerprint("a", &[Some(b"b")]));
    assert_ne!(
        fingerprint("x", &[Some(b"ab"), Some(b"")]),
        fingerprint("x", &[Some(b"a"), Some(b"b")])
    );
}

#[test]
fn needs_n_distinct_approvers() {
    let mut r = request(one_time(), 2, &["dba"]);
    r.apply_vote(&rec("entra", "bob", &["dba"]), true, None, 10)
        .unwrap();
    assert_eq!(r.state, State::Pending);
    // The same person again, under another issuer, does not count twice.
    let again = r.apply_vote(&rec("builtin", "bob", &["dba"]), true, None, 11);
    assert!(matches!(again, Err(ApprovalError::AlreadyVoted(_))));
    r.apply_vote(&rec("entra", "carol", &["dba"]), true, None, 12)
        .unwrap();
    assert_eq!(r.state, State::Approved);
    assert_eq!(r.closed_us, Some(12));
    assert_eq!(
        r.outcome_message(),
        format!("approval {} was approved by entra/bob, entra/carol", r.id)
    );
}

#[test]
fn requester_cannot_vote_under_any_issuer() {
    let mut r = request(one_time(), 1, &["dba"]);
    for issuer in ["entra", "builtin"] {
        let err = r.apply_vote(&rec(issuer, "alice", &["dba"]), true, None, 1);
        assert!(matches!(err, Err(ApprovalError::SelfVote(_))), "{issuer}");
    }
    assert!(r.votes.is_empty());
    // A deny by the requester is refused too: it would be a cancel in disguise.
    assert!(
        r.apply_vote(&rec("entra", "alice", &["dba"]), false, None, 1)
            .is_err()
    );
}

#[test]
fn approver_must_be_in_a_group_unless_none_are_named() {
    let mut r = request(one_time(), 1, &["dba", "security"]);
    let err = r.apply_vote(&rec("entra", "bob", &["dev"]), true, None, 1);
    assert!(
        matches!(&err, Err(ApprovalError::NotApprover { groups, .. }) if groups == "dba, security")
    );
    r.apply_vote(&rec("entra", "bob", &["dev", "security"]), true, None, 1)
        .unwrap();
    assert_eq!(r.state, State::Approved);

    // A request whose rule names no approvers (and no default applied) is approved by
    // nobody: fail closed.
    let mut nobody = request(one_time(), 1, &[]);
    let err = nobody.apply_vote(&rec("entra", "bob", &["dba"]), true, None, 1);
    assert!(
        matches!(err, Err(ApprovalError::NotApprover { .. })),
        "{err:?}"
    );
    assert_eq!(nobody.state, State::Pending);
}

#[test]
fn one_deny_denies_and_later_votes_are_refused() {
    let mut r = request(one_time(), 2, &["dba"]);
    r.apply_vote(&rec("entra", "bob", &["dba"]), true, None, 1)
        .unwrap();
    r.apply_vote(
        &rec("entra", "carol", &["dba"]),
        false,
        Some("not on a Friday".into()),
        2,
    )
    .unwrap();
    assert_eq!(r.state, State::Denied);
    assert!(
        r.outcome_message()
            .ends_with("denied by entra/carol: not on a Friday")
    );
    let late = r.apply_vote(&rec("entra", "dave", &["dba"]), true, None, 3);
    assert!(matches!(
        late,
        Err(ApprovalError::NotPending {
            state: State::Denied,
            ..
        })
    ));
    assert_eq!(r.votes.len(), 2);
}

#[test]
fn expiry_closes_only_pending_requests_at_their_time() {
    let mut r = request(one_time(), 1, &["dba"]);
    assert!(!r.expire_if_due(999));
    assert!(r.expire_if_due(1_000));
    assert_eq!(r.state, State::Expired);
    assert!(!r.expire_if_due(2_000));
    let mut done = request(one_time(), 1, &["dba"]);
    done.apply_vote(&rec("entra", "bob", &["dba"]), true, None, 5)
        .unwrap();
    assert!(!done.expire_if_due(5_000));
    assert_eq!(done.state, State::Approved);
}

#[test]
fn window_opens_when_granted_and_ends() {
    let mut r = request(ApprovalKind::Window { window_secs: 60 }, 1, &["dba"]);
    assert!(!r.window_open(0));
    r.apply_vote(&rec("entra", "bob", &["dba"]), true, None, 500)
        .unwrap();
    assert_eq!(r.window_until_us, Some(500 + 60_000_000));
    assert!(r.window_open(500 + 59_999_999));
    assert!(!r.window_open(500 + 60_000_000));
}

#[test]
fn cancel_by_requester_or_holding_session_only() {
    let mut r = request(one_time(), 1, &["dba"]);
    let bob = rec("entra", "bob", &["dba"]);
    assert!(matches!(
        r.cancel(CancelBy::Requester(&bob), None, 1),
        Err(ApprovalError::NotRequester(_))
    ));
    assert!(r.cancel(CancelBy::Session("s2"), None, 1).is_err());
    // Same subject under another issuer is someone else's token: not the requester.
    let alias = rec("builtin", "alice", &["dba"]);
    assert!(r.cancel(CancelBy::Requester(&alias), None, 1).is_err());
    r.cancel(
        CancelBy::Session("s1"),
        Some("client disconnected".into()),
        2,
    )
    .unwrap();
    assert_eq!(r.state, State::Cancelled);
    assert_eq!(r.closed_by.as_deref(), Some("session s1"));
    let again = r.cancel(CancelBy::Session("s1"), None, 3);
    assert!(matches!(again, Err(ApprovalError::NotPending { .. })));

    let mut w = request(ApprovalKind::Window { window_secs: 60 }, 1, &["dba"]);
    let alice = w.requester.clone();
    assert!(w.cancel(CancelBy::Session("s1"), None, 1).is_err());
    w.apply_vote(&bob, true, None, 10).unwrap();
    assert!(w.window_open(20));
    w.cancel(CancelBy::Requester(&alice), Some("done early".into()), 20)
        .unwrap();
    assert_eq!(w.state, State::Cancelled);
    assert!(!w.window_open(21));
}

#[test]
fn abandon_only_pending() {
    let mut r = request(one_time(), 1, &["dba"]);
    assert!(r.abandon(7));
    assert_eq!(r.state, State::Abandoned);
    assert_eq!(r.closed_reason.as_deref(), Some(ABANDONED_REASON));
    assert!(!r.abandon(8));
}

#[test]
fn states_round_trip_their_names() {
    for s in [
        "pending",
        "approved",
        "denied",
        "expired",
        "cancelled",
        "abandoned",
    ] {
        assert_eq!(State::parse(s).map(State::as_str), Some(s));
    }
    assert_eq!(State::parse("granted"), None);
    let json = serde_json::to_value(one_time()).unwrap();
    assert_eq!(json["type"], "one_time");
}
