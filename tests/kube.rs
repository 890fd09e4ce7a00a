//! The Kubernetes API gateway end to end: real kubectl through the gateway to the test API
//! server (`tests/kube/apiserver.py`; no real kube-apiserver can be installed here, see
//! `tests/support/kube.rs`), which logs every request it receives. Each request is decided
//! by verb, resource and namespace; refusals are `Status` objects kubectl prints and never
//! reach the API server; the held token replaces the caller's; impersonation is the
//! gateway's to add; deletes in prod wait for a second person while kubectl waits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use support::kube::{ApiServer, HELD_TOKEN, ROTATED_TOKEN, start, start_holding};

pub const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ci", action == Action::"connect", resource);

@id("reads")
permit(principal in Group::"ci",
       action in [Action::"kube.get", Action::"kube.list", Action::"kube.watch"], resource);

@id("no-system-secrets")
@reason("secrets in kube-system are not for pipelines")
forbid(principal, action in Action::"kube", resource)
when { context has resource && context.resource == "secrets" &&
       context has namespace && context.namespace == "kube-system" };

@id("deploy-default")
permit(principal in Group::"ci",
       action in [Action::"kube.create", Action::"kube.update", Action::"kube.patch"], resource)
when { context has namespace && context.namespace == "default" };

@id("whoami")
permit(principal in Group::"ci", action == Action::"kube.create", resource)
when { context has resource && context.resource == "selfsubjectreviews" };

@id("cleanup-default")
permit(principal in Group::"ci",
       action in [Action::"kube.delete", Action::"kube.deletecollection"], resource)
when { context has resource && context.resource == "configmaps" &&
       context has namespace && context.namespace == "default" };

@id("prod-deletes")
@reason("deleting in prod needs a second person")
@approval("1")
@approvers("approvers")
permit(principal in Group::"ci", action == Action::"kube.delete", resource)
when { context has namespace && context.namespace == "prod" };

@id("exec")
permit(principal in Group::"operators", action == Action::"kube.exec", resource);

@id("admins")
permit(principal in Group::"admins", action, resource);
"#;

fn configmap(name: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n\
         data:\n  setting: \"{value}\"\n"
    )
}

/// Every request that reached the API server carried the held token and nothing else.
fn assert_only_held_token(api: &ApiServer, caller: &str) {
    let reqs = api.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        let auth = ApiServer::header(r, "authorization");
        assert_eq!(auth, vec![format!("Bearer {HELD_TOKEN}")], "{r}");
        assert!(
            !r.to_string().contains(caller),
            "the caller's token reached the API: {r}"
        );
    }
}

#[test]
fn kubectl_is_decided_by_verb_resource_and_namespace() {
    let api = ApiServer::start();
    let gw = start(&api, POLICY, "", "");
    let ci = gw.gw.token("pipeline-7", &["ci"]);

    let r = gw.kubectl(&ci, &["get", "ns"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains("kube-system") && r.stdout.contains("prod"),
        "{}",
        r.stdout
    );
    let r = gw.kubectl(&ci, &["get", "pods"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(
        r.stdout.contains("web-0") && r.stdout.contains("Running"),
        "{}",
        r.stdout
    );

    let r = gw.kubectl(&ci, &["create", "configmap", "made", "--from-literal=a=b"]);
    assert!(r.ok, "{}", r.stderr);
    let manifest = configmap("applied", "one");
    let r = gw.apply(&ci, &manifest, &[]);
    assert!(
        r.ok && r.stdout.contains("created"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = gw.apply(&ci, &manifest, &[]);
    assert!(
        r.ok && r.stdout.contains("unchanged"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = gw.apply(&ci, &configmap("applied", "two"), &["--server-side"]);
    assert!(
        r.ok && r.stdout.contains("serverside-applied"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = gw.kubectl(
        &ci,
        &[
            "get",
            "configmap",
            "applied",
            "-o",
            "jsonpath={.data.setting}",
        ],
    );
    assert_eq!(r.stdout, "two", "{}", r.stderr);

    // Refused: no rule lets pipelines delete pods; secrets in kube-system are forbidden.
    let r = gw.kubectl(&ci, &["delete", "pod", "web-0"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("Error from server (Forbidden)") && r.stderr.contains("portcullis:"),
        "{}",
        r.stderr
    );
    let r = gw.kubectl(&ci, &["get", "secrets", "-n", "kube-system"]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("secrets in kube-system are not for pipelines"),
        "{}",
        r.stderr
    );
    let r = gw.kubectl(&ci, &["delete", "configmap", "made"]);
    assert!(r.ok, "{}", r.stderr);

    // Nothing refused reached the API server; what did carried the held token only.
    let reqs = api.requests();
    assert!(reqs.iter().all(|r| {
        let p = r["path"].as_str().unwrap_or("");
        let pod_delete = r["method"] == "DELETE" && p.contains("/pods/web-0");
        !pod_delete && !p.contains("kube-system/secrets")
    }));
    assert!(
        reqs.iter().any(|r| r["method"] == "DELETE"
            && r["path"].as_str().unwrap_or("").contains("configmaps/made"))
    );
    assert_only_held_token(&api, &ci);

    // Audit names the verb and the rule.
    let denied: Vec<_> = gw
        .gw
        .audit_until(&["--kind", "command"], |e| {
            e.iter().filter(|e| e["verdict"] == "deny").count() >= 2
        })
        .into_iter()
        .filter(|e| e["verdict"] == "deny")
        .collect();
    let actions: Vec<&str> = denied.iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(
        actions.contains(&"kube.delete") && actions.contains(&"kube.list"),
        "{denied:?}"
    );
}

#[test]
fn impersonation_is_the_gateways_and_paths_cannot_be_spelled_around() {
    let api = ApiServer::start();
    let gw = start(&api, POLICY, "impersonate = true", "");
    let ci = gw.gw.token("pipeline-7", &["ci", "deployers"]);

    let r = gw.kubectl(&ci, &["auth", "whoami"]);
    assert!(r.ok, "{}", r.stderr);
    assert!(r.stdout.contains("pipeline-7"), "{}", r.stdout);
    let last = api.requests().pop().unwrap();
    assert_eq!(
        ApiServer::header(&last, "impersonate-user"),
        vec!["pipeline-7"]
    );
    assert_eq!(
        ApiServer::header(&last, "impersonate-group"),
        vec!["ci", "deployers"]
    );

    // The caller cannot choose whom the gateway acts as: the request is refused (discovery
    // goes on, as the gateway's own identity for the caller, so kubectl prints the refusal).
    let before = api.requests().len();
    let r = gw.kubectl(&ci, &["--as", "cluster-admin", "get", "pods"]);
    assert!(!r.ok);
    assert!(
        r.stderr
            .contains("Error from server (Forbidden): portcullis: impersonation"),
        "{}",
        r.stderr
    );
    for r in &api.requests()[before..] {
        assert!(!r["path"].as_str().unwrap_or("").contains("pods"), "{r}");
        assert_eq!(
            ApiServer::header(r, "impersonate-user"),
            vec!["pipeline-7"],
            "{r}"
        );
    }

    // An identity provider's group named like the cluster's own is never impersonated.
    let masters = gw.gw.token("pipeline-8", &["ci", "system:masters"]);
    let before = api.requests().len();
    let r = gw.kubectl(&masters, &["get", "pods"]);
    assert!(
        !r.ok && r.stderr.contains("reserved by Kubernetes"),
        "{}",
        r.stderr
    );
    assert!(api.requests()[before..].iter().all(|r| {
        ApiServer::header(r, "impersonate-group")
            .iter()
            .all(|g| !g.starts_with("system:"))
    }));

    // Spellings of a forbidden path are the forbidden path, or refused.
    let denied = "/c/prod/api/v1/namespaces/kube-system/secrets";
    for (path, want) in [
        (denied.to_string(), 403),
        (
            "/c/prod/api/v1/namespaces/default/../kube-system/secrets".into(),
            403,
        ),
        (
            "/c/prod/api/v1/namespaces/kube-system/%73ecrets".into(),
            403,
        ),
        (
            "/c/prod/api/v1/namespaces/kube-system/./secrets/".into(),
            403,
        ),
        (
            "//c/prod//api/v1/namespaces/kube-system/secrets".into(),
            403,
        ),
        (
            "/c/prod/api/v1/watch/namespaces/kube-system/secrets".into(),
            403,
        ),
        (
            "/c/prod/api/v1/namespaces/kube-system%2fsecrets".into(),
            400,
        ),
        (
            "/c/prod/api/v1/namespaces/kube-system/%252e%252e/secrets".into(),
            400,
        ),
    ] {
        let (body, status) = gw.curl(&ci, "GET", &path);
        assert_eq!(status, want, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["kind"], "Status", "{path}: {body}");
    }
    assert!(api.requests().iter().all(|r| {
        let p = r["path"].as_str().unwrap_or("");
        !p.contains("secrets") && !p.contains("proxy") && !p.contains(';')
    }));
}

/// A connection may hold a client certificate instead of a token: the API server sees the
/// certificate's user, and no bearer token at all. Port-forwarding is refused unless policy
/// allows it.
#[test]
fn a_held_client_certificate_reaches_the_api_server() {
    let api = ApiServer::start_with(true);
    let (crt, key) = api.client_cert("portcullis-gateway", "gateways");
    let kube = format!(
        "client_cert = \"{}\"\nclient_key = \"{}\"",
        crt.display(),
        key.display()
    );
    let gw = start_holding(&api, POLICY, &kube, "");
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.kubectl(&ci, &["get", "pods"]);
    assert!(
        r.ok && r.stdout.contains("web-0"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let reqs = api.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r["client_cert"], "CN=portcullis-gateway,O=gateways", "{r}");
        assert!(ApiServer::header(r, "authorization").is_empty(), "{r}");
        assert_eq!(r["user"], "portcullis-gateway", "{r}");
    }
    let before = reqs.len();
    let r = gw.kubectl(&ci, &["port-forward", "pod/web-0", "18080:8080"]);
    assert!(!r.ok);
    assert!(
        r.stderr.contains("portcullis: kube.portforward denied"),
        "{}",
        r.stderr
    );
    assert!(
        api.requests()[before..]
            .iter()
            .all(|r| !r["path"].as_str().unwrap_or("").contains("portforward"))
    );
}

/// The held token file is rotated in place (as a projected service-account token is): the
/// next requests carry the new token, without a restart.
#[test]
fn a_rotated_token_file_is_picked_up() {
    let api = ApiServer::start();
    let gw = start(&api, POLICY, "", "");
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let held = |r: &serde_json::Value| ApiServer::header(r, "authorization");
    assert!(gw.kubectl(&ci, &["get", "pods"]).ok);
    let before = api.requests().len();
    assert_eq!(
        held(&api.requests()[before - 1]),
        [format!("Bearer {HELD_TOKEN}")]
    );
    let file = gw.gw.scratch.0.join("sa.token");
    std::fs::write(file.with_extension("new"), format!("{ROTATED_TOKEN}\n")).unwrap();
    std::fs::rename(file.with_extension("new"), &file).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let r = gw.kubectl(&ci, &["get", "pods"]);
    assert!(r.ok, "{}", r.stderr);
    let after = api.requests();
    assert!(after.len() > before);
    for r in &after[before..] {
        assert_eq!(held(r), [format!("Bearer {ROTATED_TOKEN}")], "{r}");
    }
}

/// Deleting in prod waits, with kubectl, for a second person; it runs once approved.
#[test]
fn a_prod_delete_waits_for_approval_while_kubectl_waits() {
    let api = ApiServer::start();
    let gw = start(&api, POLICY, "", "");
    let admin = gw.gw.token("root", &["ci", "admins"]);
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    let r = gw.kubectl(
        &admin,
        &[
            "create",
            "configmap",
            "doomed",
            "-n",
            "prod",
            "--from-literal=a=b",
        ],
    );
    assert!(r.ok, "{}", r.stderr);

    let mut child = gw
        .kubectl_cmd(
            &support::kube::kubectl_bin(),
            &ci,
            &["delete", "configmap", "doomed", "-n", "prod"],
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lead = gw.gw.token("lead", &["approvers"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let id = loop {
        let r = gw.gw.cli(&[
            "approvals",
            "--token",
            &lead,
            "list",
            "--state",
            "pending",
            "--json",
        ]);
        let list: Vec<serde_json::Value> = serde_json::from_str(&r.stdout).unwrap_or_default();
        if let Some(req) = list.first() {
            break req["id"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no approval was requested: {}",
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(child.try_wait().unwrap().is_none(), "kubectl did not wait");
    let deletes = |api: &ApiServer| {
        api.requests()
            .iter()
            .filter(|r| r["method"] == "DELETE")
            .count()
    };
    assert_eq!(deletes(&api), 0, "the delete ran before approval");
    let a = gw.gw.cli(&["approvals", "--token", &lead, "approve", &id]);
    assert!(a.ok, "{}", a.stderr);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"doomed\" deleted"), "{stdout}");
    assert_eq!(deletes(&api), 1);
    let allowed = gw.gw.audit_until(&["--kind", "command"], |e| {
        e.iter()
            .any(|e| e["action"] == "kube.delete" && e["verdict"] == "allow")
    });
    let del = allowed
        .iter()
        .find(|e| e["action"] == "kube.delete" && e["verdict"] == "allow")
        .unwrap();
    assert_eq!(del["approval"], id.as_str());
}

/// The shipped example passes `config check` and decides as its comments say.
#[test]
fn the_kube_example_checks_and_decides_as_documented() {
    let dir = support::Scratch::new("kube-example");
    for f in ["kube.toml", "kube.cedar"] {
        std::fs::copy(support::root().join("examples").join(f), dir.0.join(f)).unwrap();
    }
    for f in [
        "gateway.crt",
        "gateway.key",
        "prod-cluster-ca.crt",
        "prod-sa.token",
    ] {
        std::fs::write(dir.0.join(f), "stand-in").unwrap();
    }
    let cli = |args: &[&str]| -> support::Run {
        std::process::Command::new(support::bin())
            .args(args)
            .current_dir(&dir.0)
            .output()
            .unwrap()
            .into()
    };
    let r = cli(&["config", "check", "--config", "kube.toml"]);
    assert!(r.ok, "{} {}", r.stdout, r.stderr);
    let decide = |group: &str, action: &str, context: &str| -> String {
        let r = cli(&[
            "policy",
            "test",
            "--config",
            "kube.toml",
            "--who",
            "someone",
            "--group",
            group,
            "--connection",
            "prod",
            "--action",
            action,
            "--context",
            context,
        ]);
        format!("{}{}", r.stdout, r.stderr)
    };
    let out = decide(
        "ci",
        "kube.list",
        r#"{"resource":"pods","namespace":"prod","group":""}"#,
    );
    assert!(out.contains("ALLOW kube.list"), "{out}");
    let out = decide(
        "ci",
        "kube.get",
        r#"{"resource":"secrets","namespace":"kube-system","group":""}"#,
    );
    assert!(
        out.contains("DENY kube.get") && out.contains("no-system-secrets"),
        "{out}"
    );
    let out = decide("ci", "kube.list", r#"{"resource":"secrets","group":""}"#);
    assert!(
        out.contains("DENY kube.list"),
        "all namespaces' secrets: {out}"
    );
    let r = cli(&[
        "policy",
        "test",
        "--config",
        "kube.toml",
        "--who",
        "someone",
        "--group",
        "ci",
        "--connection",
        "prod",
        "--action",
        "kube",
        "--kube",
        "DELETE /apis/apps/v1/namespaces/prod/deployments/web",
    ]);
    assert!(
        r.stdout.contains("REVIEW kube.delete"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let out = decide(
        "ci",
        "kube.delete",
        r#"{"resource":"deployments","namespace":"prod","name":"web","group":"apps"}"#,
    );
    assert!(out.contains("REVIEW kube.delete"), "{out}");
    let out = decide(
        "operators",
        "kube.exec",
        r#"{"resource":"pods","namespace":"prod","name":"web-0","subresource":"exec","command":"sh -c 'rm -rf /'"}"#,
    );
    assert!(out.contains("DENY kube.exec"), "{out}");
}
