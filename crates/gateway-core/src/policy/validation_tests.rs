//! Policy validation messages, explanations, the shipped examples, and the Kubernetes and
//! HTTP actions.

use std::sync::Arc;

use super::tests::{ORDERS, ci, engine, errors_of, read, sql};
use super::*;
use crate::action::{Action, HttpKind, HttpRequest, KubeRequest, KubeVerb, SqlKind};
use crate::config::Protocol;
use crate::identity::Identity;

#[test]
fn validation_reports_unknown_action_with_line() {
    let errors =
        errors_of("@id(\"a\")\npermit (principal, action == Action::\"sql.raed\", resource);");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("line 2:"), "{errors:?}");
    assert!(errors[0].contains("sql.raed"), "{errors:?}");
}

#[test]
fn validation_reports_unknown_attribute_and_type_error() {
    let errors = errors_of(
        r#"@id("a")
permit (principal, action == Action::"sql.read", resource) when { context.rows > 3 };
@id("b")
permit (principal, action == Action::"sql.read", resource) when { context.unbounded == "yes" || context.tables.contains(1) };
@id("c")
permit (principal, action == Action::"connect", resource) when { principal.department == "x" };
"#,
    );
    let all = errors.join("\n");
    assert!(errors.len() >= 3, "{all}");
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("line 2:") && e.contains("rows")),
        "{all}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("line 4:") && e.contains("`b`")),
        "{all}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("line 6:") && e.contains("department")),
        "{all}"
    );
}

#[test]
fn validation_requires_ids_and_checks_annotations() {
    let errors = errors_of(
        r#"permit (principal, action == Action::"connect", resource);
@id("zero") @approval("0") permit (principal, action == Action::"sql.write", resource);
@id("word") @approval("two") permit (principal, action == Action::"sql.write", resource);
@id("forbid-approval") @approval("1") forbid (principal, action == Action::"sql.ddl", resource);
@id("lonely") @approvers("dba") permit (principal, action == Action::"sql.ddl", resource);
@id("word") permit (principal, action == Action::"sql.read", resource);
"#,
    );
    let all = errors.join("\n");
    assert_eq!(errors.len(), 6, "{all}");
    assert!(
        errors[0].starts_with("line 1:") && errors[0].contains("no @id"),
        "{all}"
    );
    assert!(
        errors[1].starts_with("line 2:") && errors[1].contains("@approval(\"0\")"),
        "{all}"
    );
    assert!(
        errors[2].starts_with("line 3:") && errors[2].contains("@approval(\"two\")"),
        "{all}"
    );
    assert!(
        errors[3].starts_with("line 4:") && errors[3].contains("only to permit"),
        "{all}"
    );
    assert!(
        errors[4].starts_with("line 5:") && errors[4].contains("@approvers"),
        "{all}"
    );
    assert!(
        errors[5].starts_with("line 6:") && errors[5].contains("already used"),
        "{all}"
    );
}

#[test]
fn syntax_errors_have_a_line() {
    let errors = errors_of(
        "@id(\"a\")\npermit (principal, action, resource)\nwhen { context.tables.contains( };",
    );
    assert!(!errors.is_empty());
    assert!(errors[0].starts_with("line 3:"), "{errors:?}");
}

#[test]
fn explain_shows_verdict_policies_and_reason() {
    let e = engine();
    let dba = Identity::for_tests("builtin", "dana", &["dba"]);
    let x = e.explain_action(
        &dba,
        &ORDERS,
        &sql(SqlKind::Ddl, &[], false, "drop table t"),
    );
    let text = x.to_string();
    assert!(
        text.starts_with(
            "DENY sql.ddl on orders for builtin/dana (policy version 7): schema changes"
        ),
        "{text}"
    );
    assert!(text.contains("forbid `no-ddl` (line 25)"), "{text}");
    assert_eq!(x.policies.len(), 1);

    let x = e.explain_action(
        &ci(),
        &ORDERS,
        &sql(SqlKind::Write, &[], true, "delete from t"),
    );
    let text = x.to_string();
    assert!(text.starts_with("REVIEW"), "{text}");
    assert!(
        text.contains("@approval(\"2\") @approvers(\"dba, security\")"),
        "{text}"
    );

    let nobody = Identity::for_tests("builtin", "eve", &[]);
    let text = e
        .explain_action(&nobody, &ORDERS, &Action::Connect)
        .to_string();
    assert!(text.contains("denied by default"), "{text}");
}

#[test]
fn explain_from_names_and_json_context() {
    let e = engine();
    let groups = vec!["ci".to_string()];
    let claims = Default::default();
    let who = PrincipalRef {
        issuer: "builtin",
        subject: "alice",
        groups: &groups,
        claims: &claims,
    };
    let ctx = serde_json::json!({ "tables": ["secrets"] });
    let x = e.explain(&who, &ORDERS, "sql.write", Some(&ctx)).unwrap();
    assert_eq!(x.decision.policies, vec!["secrets"]);
    let x = e.explain(&who, &ORDERS, "sql.write", None).unwrap();
    assert!(x.decision.is_allowed(), "{x}");
    // Explaining always evaluates: it never answers from the cache.
    assert_eq!(e.evaluations(), 2);

    let err = e.explain(&who, &ORDERS, "sql.raed", None).unwrap_err();
    assert!(
        err.contains("unknown action `sql.raed`") && err.contains("sql.read"),
        "{err}"
    );
    assert!(e.explain(&who, &ORDERS, "sql", None).is_err());
    let bad = serde_json::json!({ "unbounded": "yes" });
    let r = e.explain(&who, &ORDERS, "sql.write", Some(&bad));
    assert!(r.is_err(), "{}", r.unwrap());
}

#[test]
fn quickstart_example_validates_and_decides() {
    let text = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/quickstart.cedar"
    ));
    let e = PolicyEngine::from_text(text, 1).unwrap_or_else(|errs| panic!("{errs:#?}"));
    let ci = ci();
    assert!(e.decide(&ci, &ORDERS, &Action::Connect).is_allowed());
    assert!(e.decide(&ci, &ORDERS, &read("orders")).is_allowed());
    let update = sql(
        SqlKind::Write,
        &["orders"],
        false,
        "update orders set a = ? where id = ?",
    );
    assert!(e.decide(&ci, &ORDERS, &update).is_allowed());
    let audit = sql(
        SqlKind::Write,
        &["audit_log"],
        false,
        "delete from audit_log where id = ?",
    );
    assert!(!e.decide(&ci, &ORDERS, &audit).is_allowed());
    let unbounded = sql(SqlKind::Write, &["orders"], true, "delete from orders");
    assert!(matches!(
        e.decide(&ci, &ORDERS, &unbounded).verdict,
        Verdict::Review { approvals: 1, .. }
    ));
    let ddl = e.decide(
        &ci,
        &ORDERS,
        &sql(SqlKind::Ddl, &["orders"], false, "drop table orders"),
    );
    assert_eq!(ddl.policies, vec!["no-ddl"]);
    assert_eq!(
        ddl.reason.as_deref(),
        Some("schema changes go through migrations, not ad-hoc sessions")
    );
    for kind in [SqlKind::Unknown, SqlKind::Admin] {
        let d = e.decide(&ci, &ORDERS, &sql(kind, &[], false, "x"));
        assert_eq!(d.verdict, Verdict::Deny);
        assert!(
            !d.policies.is_empty(),
            "{kind:?} should be denied by a named forbid"
        );
    }
    let stranger = Identity::for_tests("builtin", "eve", &[]);
    assert!(!e.decide(&stranger, &ORDERS, &Action::Connect).is_allowed());
}

/// Kubernetes and HTTP requests are decided on their context like any other action.
#[test]
fn kube_and_http_requests_are_decided_on_their_context() {
    let e = PolicyEngine::from_text(
        r#"
@id("deploy-reads")
permit(principal in Group::"ci", action in [Action::"kube.get", Action::"kube.list"], resource)
when { context has namespace && context.namespace == "staging" };

@id("no-secrets")
forbid(principal, action in Action::"kube", resource)
when { context has resource && context.resource == "secrets" };

@id("arm-reads")
permit(principal in Group::"ci", action == Action::"http.read", resource)
when { context.host == "management.azure.com" && context.path like "/subscriptions/*" };
"#,
        1,
    )
    .unwrap();
    let kube = |verb: KubeVerb, resource: &str, ns: Option<&str>| {
        Action::Kube(Arc::new(KubeRequest {
            verb,
            resource: Some(resource.into()),
            subresource: None,
            namespace: ns.map(Into::into),
            name: None,
            group: None,
            path: None,
            command: None,
        }))
    };
    let cluster = ConnectionRef {
        name: "aks",
        protocol: Protocol::Kube,
    };
    assert!(
        e.decide(
            &ci(),
            &cluster,
            &kube(KubeVerb::List, "pods", Some("staging"))
        )
        .is_allowed()
    );
    assert!(
        !e.decide(&ci(), &cluster, &kube(KubeVerb::List, "pods", Some("prod")))
            .is_allowed()
    );
    assert!(
        !e.decide(
            &ci(),
            &cluster,
            &kube(KubeVerb::Delete, "pods", Some("staging"))
        )
        .is_allowed()
    );
    let d = e.decide(
        &ci(),
        &cluster,
        &kube(KubeVerb::Get, "secrets", Some("staging")),
    );
    assert_eq!(d.policies, vec!["no-secrets"]);
    let http = |method: &str, host: &str, path: &str| {
        Action::Http(Arc::new(HttpRequest {
            kind: HttpKind::of_method(method),
            method: method.into(),
            path: path.into(),
            host: host.into(),
            query: String::new(),
        }))
    };
    let arm = ConnectionRef {
        name: "arm",
        protocol: Protocol::Http,
    };
    assert!(
        e.decide(
            &ci(),
            &arm,
            &http("GET", "Management.Azure.com", "/subscriptions/x")
        )
        .is_allowed()
    );
    assert!(
        !e.decide(
            &ci(),
            &arm,
            &http("DELETE", "management.azure.com", "/subscriptions/x")
        )
        .is_allowed()
    );
    assert!(
        !e.decide(
            &ci(),
            &arm,
            &http("GET", "evil.example", "/subscriptions/x")
        )
        .is_allowed()
    );
}
