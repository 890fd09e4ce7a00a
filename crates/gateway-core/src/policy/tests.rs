//! Behaviour of the policy engine as users see it: verdicts, reasons, validation messages.

use std::sync::Arc;

use cedar_policy::Request;

use super::engine::context_for;
use super::schema::{Shipped, shipped};
use super::ssh_tests::ssh;
use super::*;
use crate::action::{
    Action, HttpKind, HttpRequest, KubeRequest, KubeVerb, SqlKind, SqlStatement, SshKind,
};
use crate::audit::event;
use crate::config::Protocol;
use crate::identity::Identity;

const POLICY: &str = r#"
@id("ci-connect")
permit (principal in Group::"ci", action == Action::"connect", resource == Connection::"orders");

@id("ci-read")
permit (
  principal in Group::"ci",
  action in [Action::"sql.read", Action::"sql.session"],
  resource
) when { resource.protocol == "postgres" };

@id("ci-write")
permit (principal in Group::"ci", action == Action::"sql.write", resource)
when { !context.unbounded };

@id("write-unbounded")
@approval("2")
@approvers("dba, security")
permit (principal in Group::"ci", action == Action::"sql.write", resource)
when { context.unbounded };

@id("ddl-for-dba")
permit (principal in Group::"dba", action == Action::"sql.ddl", resource);

@id("no-ddl")
@reason("schema changes go through migrations")
forbid (principal, action == Action::"sql.ddl", resource);

@id("secrets")
@reason("the secrets table is off limits")
forbid (principal, action in Action::"sql", resource)
when { context.tables.contains("secrets") };

@id("repo-admin")
permit (principal, action == Action::"sql.admin", resource)
when { principal.hasTag("repository") && principal.getTag("repository") == "org/app" };

@id("no-truncate-shape")
forbid (principal, action == Action::"sql.write", resource)
when { context.statement like "delete from audit*" };
"#;

pub(super) fn engine() -> PolicyEngine {
    PolicyEngine::from_text(POLICY, 7).unwrap()
}

pub(super) const ORDERS: ConnectionRef<'static> = ConnectionRef {
    name: "orders",
    protocol: Protocol::Postgres,
};

pub(super) fn sql(kind: SqlKind, tables: &[&str], unbounded: bool, shape: &str) -> Action {
    Action::Sql(Arc::new(SqlStatement {
        kind,
        tables: tables.iter().map(|t| t.to_string()).collect(),
        unbounded,
        shape: shape.into(),
        functions: Vec::new(),
        parsed: kind != SqlKind::Unknown,
        refusal: None,
        outputs: None,
        by_name: Default::default(),
    }))
}

pub(super) fn read(table: &str) -> Action {
    sql(
        SqlKind::Read,
        &[table],
        false,
        &format!("select * from {table}"),
    )
}

pub(super) fn ci() -> Identity {
    Identity::for_tests("builtin", "ci-job", &["ci"])
}

pub(super) fn errors_of(text: &str) -> Vec<String> {
    PolicyEngine::from_text(text, 1).unwrap_err()
}

#[test]
fn shipped_schema_parses() {
    let s = shipped().unwrap();
    assert!(s.action("sql.read").is_some());
    assert!(s.action("kube.portforward").is_some());
    assert!(s.action("http.delete").is_some());
}

#[test]
fn allowed_by_a_plain_permit() {
    let e = engine();
    let d = e.decide(&ci(), &ORDERS, &read("orders"));
    assert!(d.is_allowed());
    assert_eq!(d.policies, vec!["ci-read"]);
    assert_eq!(d.policy_version, 7);
    assert_eq!(d.permit().unwrap().policy_version(), 7);
    assert_eq!(d.audit_verdict(), event::Verdict::Allow);
    assert!(e.decide(&ci(), &ORDERS, &Action::Connect).is_allowed());
}

#[test]
fn resource_protocol_is_visible() {
    let e = engine();
    let tds = ConnectionRef {
        name: "orders",
        protocol: Protocol::Tds,
    };
    assert!(!e.decide(&ci(), &tds, &read("orders")).is_allowed());
}

#[test]
fn denied_with_the_forbids_reason_and_forbid_beats_permit() {
    let dba = Identity::for_tests("builtin", "dana", &["dba"]);
    let d = engine().decide(
        &dba,
        &ORDERS,
        &sql(SqlKind::Ddl, &["orders"], false, "drop table orders"),
    );
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.policies, vec!["no-ddl"]);
    assert_eq!(
        d.reason.as_deref(),
        Some("schema changes go through migrations")
    );
    assert!(d.permit().is_none());
    assert_eq!(d.audit_verdict(), event::Verdict::Deny);
}

#[test]
fn forbid_without_reason_names_the_policy() {
    let d = engine().decide(
        &ci(),
        &ORDERS,
        &sql(
            SqlKind::Write,
            &["audit"],
            false,
            "delete from audit where id = ?",
        ),
    );
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(
        d.reason.as_deref(),
        Some("denied by policy `no-truncate-shape`")
    );
}

#[test]
fn default_deny_says_nothing_permits() {
    let nobody = Identity::for_tests("builtin", "eve", &["sales"]);
    let d = engine().decide(&nobody, &ORDERS, &read("orders"));
    assert_eq!(d.verdict, Verdict::Deny);
    assert!(d.policies.is_empty());
    assert_eq!(
        d.reason.as_deref(),
        Some("no policy permits sql.read on orders")
    );
}

#[test]
fn only_approval_permits_hold_means_review() {
    let d = engine().decide(
        &ci(),
        &ORDERS,
        &sql(SqlKind::Write, &["orders"], true, "delete from orders"),
    );
    assert_eq!(
        d.verdict,
        Verdict::Review {
            approvals: 2,
            approvers: vec!["dba".into(), "security".into()]
        }
    );
    assert_eq!(d.policies, vec!["write-unbounded"]);
    let reason = d.reason.unwrap();
    assert!(reason.starts_with("approval required"), "{reason}");
    assert!(reason.contains("write-unbounded"), "{reason}");
    assert!(
        !engine()
            .decide(&ci(), &ORDERS, &sql(SqlKind::Write, &["orders"], true, "x"))
            .is_allowed()
    );
}

#[test]
fn plain_permit_beats_approval_permit() {
    let text = format!(
        "{POLICY}\n@id(\"ci-anything\") permit (principal in Group::\"ci\", action == Action::\"sql.write\", resource);"
    );
    let e = PolicyEngine::from_text(&text, 1).unwrap();
    let d = e.decide(
        &ci(),
        &ORDERS,
        &sql(SqlKind::Write, &["orders"], true, "delete from orders"),
    );
    assert!(d.is_allowed());
    assert_eq!(d.policies, vec!["ci-anything"]);
}

#[test]
fn forbid_beats_approval_permit() {
    let d = engine().decide(
        &ci(),
        &ORDERS,
        &sql(SqlKind::Write, &["secrets"], true, "delete from secrets"),
    );
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.policies, vec!["secrets"]);
    assert_eq!(d.reason.as_deref(), Some("the secrets table is off limits"));
}

#[test]
fn tables_condition_and_action_group() {
    let e = engine();
    // `action in Action::"sql"` catches a read too.
    let d = e.decide(&ci(), &ORDERS, &read("secrets"));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.policies, vec!["secrets"]);
    // Table names are compared lower-case.
    let d = e.decide(
        &ci(),
        &ORDERS,
        &sql(SqlKind::Write, &["orders", "SECRETS"], false, "x"),
    );
    assert_eq!(d.policies, vec!["secrets"]);
    let d = e.decide(
        &ci(),
        &ORDERS,
        &sql(
            SqlKind::Write,
            &["orders"],
            false,
            "update orders set a = ? where id = ?",
        ),
    );
    assert!(d.is_allowed());
    assert_eq!(d.policies, vec!["ci-write"]);
}

#[test]
fn group_membership_comes_from_the_identitys_groups() {
    let e = engine();
    let both = Identity::for_tests("entra", "svc", &["sales", "ci", "ci"]);
    assert!(e.decide(&both, &ORDERS, &Action::Connect).is_allowed());
    let other = Identity::for_tests("entra", "svc", &["sales"]);
    assert!(!e.decide(&other, &ORDERS, &Action::Connect).is_allowed());
}

#[test]
fn claims_are_tags() {
    let e = engine();
    let admin = sql(SqlKind::Admin, &[], false, "grant all on orders to bob");
    let mut who = Identity::for_tests("builtin", "deploy", &[]);
    // No tag: the hasTag guard keeps this a plain deny, not an evaluation error.
    let d = e.decide(&who, &ORDERS, &admin);
    assert_eq!(
        d.reason.as_deref(),
        Some("no policy permits sql.admin on orders")
    );
    who.claims.insert("repository".into(), "org/other".into());
    assert!(!e.decide(&who, &ORDERS, &admin).is_allowed());
    who.claims.insert("repository".into(), "org/app".into());
    let d = e.decide(&who, &ORDERS, &admin);
    assert!(d.is_allowed());
    assert_eq!(d.policies, vec!["repo-admin"]);
}

#[test]
fn evaluation_error_fails_closed() {
    let text = r#"
@id("anyone-connect") permit (principal, action == Action::"connect", resource);
@id("broken") forbid (principal, action == Action::"connect", resource)
when { 9223372036854775807 + 1 > 0 };
"#;
    let e = PolicyEngine::from_text(text, 1).unwrap();
    let who = Identity::for_tests("builtin", "eve", &[]);
    let d = e.decide(&who, &ORDERS, &Action::Connect);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.policies, vec!["broken"]);
    let reason = d.reason.unwrap();
    assert!(reason.contains("policy evaluation error"), "{reason}");
    assert!(reason.contains("broken"), "{reason}");
}

#[test]
fn decide_all_needs_every_statement() {
    let e = engine();
    let ddl = sql(SqlKind::Ddl, &["orders"], false, "drop table orders");
    let unbounded = sql(SqlKind::Write, &["orders"], true, "delete from orders");
    let session = sql(SqlKind::Session, &[], false, "begin");

    let d = e.decide_all(&ci(), &ORDERS, &[read("orders"), unbounded.clone(), ddl]);
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(
        d.reason.as_deref(),
        Some("schema changes go through migrations")
    );

    let d = e.decide_all(&ci(), &ORDERS, &[read("orders"), unbounded]);
    assert!(matches!(d.verdict, Verdict::Review { approvals: 2, .. }));
    assert_eq!(d.policies, vec!["ci-read", "write-unbounded"]);

    let d = e.decide_all(&ci(), &ORDERS, &[session, read("orders")]);
    assert!(d.is_allowed());
    assert_eq!(d.policies, vec!["ci-read"]);

    assert!(!e.decide_all(&ci(), &ORDERS, &[]).is_allowed());
}

#[test]
fn cache_hit_skips_cedar() {
    let e = engine();
    let first = e.decide(&ci(), &ORDERS, &read("orders"));
    assert_eq!(e.evaluations(), 1);
    for _ in 0..10 {
        assert_eq!(e.decide(&ci(), &ORDERS, &read("orders")), first);
    }
    assert_eq!(e.evaluations(), 1);
    // Anything that changes the request misses.
    e.decide(&ci(), &ORDERS, &read("customers"));
    assert_eq!(e.evaluations(), 2);
    let mut tagged = ci();
    tagged.claims.insert("repository".into(), "org/app".into());
    e.decide(&tagged, &ORDERS, &read("orders"));
    assert_eq!(e.evaluations(), 3);
    let other_conn = ConnectionRef {
        name: "billing",
        protocol: Protocol::Postgres,
    };
    e.decide(&ci(), &other_conn, &read("orders"));
    assert_eq!(e.evaluations(), 4);
    // decide_all goes through the same cache.
    e.decide_all(&ci(), &ORDERS, &[read("orders"), read("customers")]);
    assert_eq!(e.evaluations(), 4);
}

#[test]
fn built_contexts_match_the_schema() {
    let s = shipped().unwrap();
    let who = Shipped::uid(&s.identity_type, "builtin/x");
    let conn = Shipped::uid(&s.connection_type, "orders");
    let actions = [
        Action::Connect,
        read("orders"),
        sql(SqlKind::Unknown, &[], false, "??"),
        ssh(SshKind::Exec, Some("uptime")),
        ssh(SshKind::Shell, None),
        ssh(SshKind::Sftp, None),
        ssh(SshKind::Forward, Some("direct-tcpip db:5432")),
        Action::Kube(Arc::new(KubeRequest {
            verb: KubeVerb::Get,
            resource: Some("secrets".into()),
            subresource: None,
            namespace: Some("prod".into()),
            name: Some("db".into()),
            group: Some(String::new()),
            path: None,
            command: None,
        })),
        Action::Kube(Arc::new(KubeRequest {
            verb: KubeVerb::List,
            resource: Some("nodes".into()),
            subresource: None,
            namespace: None,
            name: None,
            group: None,
            path: None,
            command: None,
        })),
        Action::Http(Arc::new(HttpRequest {
            kind: HttpKind::of_method("delete"),
            method: "delete".into(),
            path: "/subscriptions/s/resourceGroups/rg".into(),
            host: "Management.Azure.com".into(),
            query: "api-version=2021-04-01".into(),
        })),
    ];
    for action in actions {
        let (uid, _) = s.action(action.cedar_id()).unwrap();
        let ctx = context_for(&action).unwrap();
        Request::new(who.clone(), uid.clone(), conn.clone(), ctx, Some(&s.schema))
            .unwrap_or_else(|e| panic!("{}: {e}", action.cedar_id()));
    }
}
