//! Clients of the Kubernetes API gateway beyond one kubectl: every kubectl version on the
//! machine (1.27 … 1.33, and 1.37 from PyPI), and the `kube` crate (Rust's Kubernetes
//! client, typed objects). The API server is the test API server (`tests/support/kube.rs`
//! says why); an optional tier runs against a real cluster when one is given.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::PathBuf;

use support::kube::{ApiServer, KubeGw, kubectl_versions, start};

const POLICY: &str = r#"
@id("connect")
permit(principal, action == Action::"connect", resource);

@id("reads")
permit(principal,
       action in [Action::"kube.get", Action::"kube.list", Action::"kube.watch"], resource);

@id("writes-default")
permit(principal,
       action in [Action::"kube.create", Action::"kube.patch", Action::"kube.update"], resource)
when { context has namespace && context.namespace == "default" };

@id("whoami")
permit(principal, action == Action::"kube.create", resource)
when { context has resource && context.resource == "selfsubjectreviews" };

@id("exec")
permit(principal, action == Action::"kube.exec", resource);
"#;

const MASKING: &str = r#"
[[masking]]
connections = ["prod"]
detectors = ["secret"]
"#;

/// base64("hunter2-s3cret"), the seeded secret's password.
const PASSWORD_B64: &str = "aHVudGVyMi1zM2NyZXQ=";

/// kubectl versions to drive: the machine's fixed ones and the PyPI build, by version.
fn versions() -> Vec<(String, PathBuf)> {
    let mut v = kubectl_versions();
    let pypi = support::root().join("tests/kube/pylib/bin/kubectl");
    if pypi.exists() {
        v.push(("1.37".into(), pypi));
    }
    v
}

/// The minor version of `1.NN`.
fn minor(v: &str) -> u32 {
    v.split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_kubectl_version_on_the_machine_works_through_the_gateway() {
    let vs = versions();
    assert!(
        vs.len() >= 3,
        "expected kubectl 1.27 … 1.33 and 1.37 (deploy/setup.sh): {vs:?}"
    );
    let api = ApiServer::start();
    let gw: KubeGw = start(&api, POLICY, "", MASKING);
    let ci = gw.gw.token("pipeline-7", &["ci"]);
    for (v, bin) in &vs {
        let run = |args: &[&str], stdin: Option<&str>| gw.kubectl_with(bin, &ci, args, stdin);
        let r = run(&["get", "pods"], None);
        assert!(
            r.ok && r.stdout.contains("web-0"),
            "{v}: {} {}",
            r.stdout,
            r.stderr
        );
        let r = run(&["get", "secret", "db-creds", "-o", "yaml"], None);
        assert!(r.ok && r.stdout.contains("db-creds"), "{v}: {}", r.stderr);
        assert!(!r.stdout.contains(PASSWORD_B64), "{v} leaked: {}", r.stdout);
        let name = format!("v{}", v.replace('.', "-"));
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: default\n\
             data:\n  k: v\n"
        );
        let r = run(&["apply", "-f", "-"], Some(&manifest));
        assert!(
            r.ok && r.stdout.contains("created"),
            "{v}: {} {}",
            r.stdout,
            r.stderr
        );
        let r = run(&["delete", "configmap", &name], None);
        assert!(!r.ok && r.stderr.contains("Forbidden"), "{v}: {}", r.stderr);
        // Exec over WebSocket from 1.30 on, over SPDY before: both recorded.
        let r = run(&["exec", "web-0", "--", "echo", "hello"], None);
        assert!(
            r.ok && r.stdout.trim() == "hello",
            "{v}: {} {}",
            r.stdout,
            r.stderr
        );
        let want = if minor(v) >= 30 {
            "websocket"
        } else {
            "SPDY/3.1"
        };
        assert_eq!(api.upgrades().last(), Some(&vec![want.to_string()]), "{v}");
    }
    let ends = gw.gw.audit_until(&["--kind", "command_end"], |e| {
        e.iter()
            .filter(|e| e["detail"]["recording"].is_string())
            .count()
            >= vs.len()
    });
    let recorded = ends
        .iter()
        .filter(|e| e["detail"]["recording"].is_string() && e["detail"]["exit_status"] == 0)
        .count();
    assert_eq!(recorded, vs.len(), "{ends:?}");
    let held = format!("Bearer {}", support::kube::HELD_TOKEN);
    for r in api.requests() {
        assert_eq!(
            ApiServer::header(&r, "authorization"),
            vec![held.clone()],
            "{r}"
        );
    }
}

/// The `kube` crate, typed: Secrets decode (masked values are still base64), lists,
/// creates, watches and refusals arrive as the API's errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kube_crate_works_through_the_gateway() {
    use futures_util::StreamExt as _;
    use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
    use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};

    let api = ApiServer::start();
    let gw = start(&api, POLICY, "", MASKING);
    let token = gw.gw.token("pipeline-7", &["ci"]);
    let pem = std::fs::read(&gw.ca).unwrap();
    let ca: Vec<Vec<u8>> = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|c| c.unwrap().to_vec())
        .collect();
    let url = format!("https://localhost:{}/c/prod", gw.port);
    let mut config = kube::Config::new(url.parse().unwrap());
    config.root_cert = Some(ca);
    config.auth_info.token = Some(token.clone().into());
    let client = kube::Client::try_from(config).unwrap();

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let list = pods.list(&ListParams::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("web-0"))
    );

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s = secrets.get("db-creds").await.unwrap();
    let password = &s.data.as_ref().unwrap()["password"].0;
    assert_ne!(password.as_slice(), b"hunter2-s3cret");
    assert!(
        String::from_utf8_lossy(password).contains("REDACTED"),
        "{s:?}"
    );

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let mut watch = cms
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some("from-rust".into());
    cm.data = Some([("k".to_string(), "v".to_string())].into());
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(ev) = watch.next().await {
            if let Ok(WatchEvent::Added(c)) = ev
                && c.metadata.name.as_deref() == Some("from-rust")
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true));

    match pods.delete("web-0", &DeleteParams::default()).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403);
            assert!(e.message.starts_with("portcullis:"), "{e:?}");
        }
        other => panic!("the delete was not refused: {other:?}"),
    }
    assert!(
        api.requests()
            .iter()
            .all(|r| !(r["method"] == "DELETE" && r["path"].as_str().unwrap().contains("web-0")))
    );
}

/// Optional tier: a real cluster. Set `PORTCULLIS_TEST_KUBECONFIG` to a kubeconfig whose
/// current context holds a token or client certificate (and may list namespaces) and run
/// with `--ignored`: kubectl goes through a gateway that holds that credential.
#[test]
#[ignore = "needs a real cluster: set PORTCULLIS_TEST_KUBECONFIG and run with --ignored"]
fn a_real_cluster_through_the_gateway() {
    let Some(kc) = std::env::var_os("PORTCULLIS_TEST_KUBECONFIG") else {
        panic!("set PORTCULLIS_TEST_KUBECONFIG to a real cluster's kubeconfig");
    };
    let view = std::process::Command::new(support::kube::kubectl_bin())
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["config", "view", "--raw", "--minify", "-o", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&view.stdout).unwrap();
    let cluster = &v["clusters"][0]["cluster"];
    let user = &v["users"][0]["user"];
    let server = cluster["server"].as_str().unwrap();
    let host_port = server.trim_start_matches("https://").trim_end_matches('/');
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let target = if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:443")
    };
    let dir = support::Scratch::new("real-kube");
    let decode = |field: &serde_json::Value, file: &str| -> Option<PathBuf> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(field.as_str()?)
            .ok()?;
        let p = dir.0.join(file);
        std::fs::write(&p, bytes).ok()?;
        Some(p)
    };
    let mut kube = format!("server_name = \"{host}\"\n");
    if let Some(t) = user["token"].as_str() {
        std::fs::write(dir.0.join("real.token"), t).unwrap();
        kube.push_str(&format!(
            "token_file = \"{}\"\n",
            dir.0.join("real.token").display()
        ));
    }
    if let (Some(c), Some(k)) = (
        decode(&user["client-certificate-data"], "client.crt"),
        decode(&user["client-key-data"], "client.key"),
    ) {
        kube.push_str(&format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            c.display(),
            k.display()
        ));
    }
    let ca = decode(&cluster["certificate-authority-data"], "ca.crt")
        .map(|p| format!("sslrootcert = \"{}\"\n", p.display()))
        .unwrap_or_default();
    let port = support::free_port();
    let tls = support::http::tls_files(&dir.0);
    let gw = support::Gateway::start_config(port, POLICY, |_, admin| {
        format!(
            r#"
{head}
[[listeners]]
protocol = "kube"
listen = "127.0.0.1:{port}"
tls = {{ cert = "{crt}", key = "{key}" }}
[[connections]]
name = "prod"
protocol = "kube"
target = "{target}"
{ca}
[connections.kube]
{kube}
"#,
            crt = tls.join("server.crt").display(),
            key = tls.join("server.key").display(),
            head = support::gateway_section(admin),
        )
    });
    let ci = gw.token("pipeline-7", &["ci"]);
    let kubeconfig = dir.0.join("kubeconfig");
    let r = gw.cli(&[
        "kubeconfig",
        "--connection",
        "prod",
        "--server",
        &format!("https://localhost:{port}"),
        "--ca",
        tls.join("ca.crt").to_str().unwrap(),
        "--token-env",
        "PORTCULLIS_TOKEN",
        "-o",
        kubeconfig.to_str().unwrap(),
    ]);
    assert!(r.ok, "{}", r.stderr);
    let kubectl = |args: &[&str]| -> support::Run {
        std::process::Command::new(support::kube::kubectl_bin())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .env("PORTCULLIS_TOKEN", &ci)
            .output()
            .unwrap()
            .into()
    };
    let r = kubectl(&["get", "namespaces"]);
    assert!(
        r.ok && r.stdout.contains("kube-system"),
        "{} {}",
        r.stdout,
        r.stderr
    );
    let r = kubectl(&["delete", "namespace", "kube-system", "--dry-run=server"]);
    assert!(!r.ok && r.stderr.contains("portcullis:"), "{}", r.stderr);
}
