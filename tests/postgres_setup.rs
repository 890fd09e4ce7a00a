//! Setting the Postgres gateway up, end to end: tokens from the built-in issuer and a real
//! OIDC provider, the admin listener, config checks, the shipped examples, TLS to the target.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::process::Command;

use support::{Gateway, GatewaySpec, pg};

#[test]
fn token_exchange_gives_a_short_key_that_works_as_a_password() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    let out = Command::new(support::bin())
        .args([
            "token",
            "exchange",
            "--gateway",
            &format!("http://127.0.0.1:{}", gw.admin_port),
            "--ttl",
            "5m",
        ])
        .env("PORTCULLIS_TOKEN", &token)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.len() <= 64, "fits TDS's 128-character password: {key}");
    let r = gw.psql(&key, "SELECT current_user");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(
        r.stdout.trim(),
        "app",
        "the target sees only the gateway's credential"
    );
    let starts = gw.audit(&["--kind", "session_start"]);
    assert_eq!(starts.last().unwrap()["identity"]["method"], "access_key");
    assert_eq!(
        starts.last().unwrap()["identity"]["principal"],
        "builtin/pipeline-7"
    );
    // A garbage key is refused.
    let r = gw.psql("pcx_0000_doesnotexist", "SELECT 1");
    assert!(!r.ok && r.stderr.contains("access key"), "{}", r.stderr);
}

#[test]
fn admin_listener_serves_health_metrics_and_the_builtin_issuer() {
    let gw = Gateway::start(GatewaySpec::default());
    let token = gw.token("pipeline-7", &["ci"]);
    assert!(gw.psql(&token, "SELECT 1").ok);
    assert!(!gw.psql(&token, "DROP TABLE orders").ok);
    let get = |path: &str| -> String {
        let out = Command::new("curl")
            .args(["-fsS", &format!("http://127.0.0.1:{}{path}", gw.admin_port)])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{path}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(get("/healthz").trim(), "ok");
    assert_eq!(get("/readyz").trim(), "ready");
    let m = get("/metrics");
    assert!(
        m.contains("portcullis_statements_total{protocol=\"postgres\",verdict=\"deny\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("portcullis_sessions_total{protocol=\"postgres\"} 2"),
        "{m}"
    );
    // The store catches up with the journal: every recorded event is indexed, none lag.
    let value = |m: &str, name: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from metrics: {m}"))
    };
    let mut m = m;
    for _ in 0..50 {
        if value(&m, "portcullis_audit_store_lag_events") == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        m = get("/metrics");
    }
    assert_eq!(value(&m, "portcullis_audit_store_lag_events"), 0, "{m}");
    let events = value(&m, "portcullis_audit_events_total");
    assert!(events >= 4, "{m}");
    assert_eq!(value(&m, "portcullis_audit_indexed_total"), events, "{m}");
    let disc: serde_json::Value =
        serde_json::from_str(&get("/.well-known/openid-configuration")).unwrap();
    assert_eq!(
        disc["issuer"],
        format!("http://127.0.0.1:{}", gw.admin_port)
    );
    let jwks: serde_json::Value = serde_json::from_str(&get("/.well-known/jwks.json")).unwrap();
    assert_eq!(jwks["keys"][0]["kty"], "EC");
}

#[test]
fn config_check_reports_every_problem_with_its_path() {
    let dir = support::Scratch::new("cfg");
    let cfg = dir.0.join("bad.toml");
    std::fs::write(
        &cfg,
        "[gateway]\nstate_dir='s'\npolicy='p.cedar'\nbogus_key=1\n",
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bogus_key"));
    std::fs::write(
        dir.0.join("p.cedar"),
        "permit(principal, action == Action::\"nope\", resource);",
    )
    .unwrap();
    std::fs::write(
        &cfg,
        "[gateway]\nstate_dir='s'\npolicy='p.cedar'\n[[listeners]]\nprotocol='postgres'\nlisten='nowhere'\n[[connections]]\nname='x'\nprotocol='postgres'\ntarget='db'\n",
    )
    .unwrap();
    let out = Command::new(support::bin())
        .args(["config", "check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("listeners[0].listen"), "{err}");
    assert!(err.contains("connections[0].target"), "{err}");
    assert!(err.contains("connections[0].user"), "{err}");
    assert!(err.contains("gateway.policy"), "{err}");
}

#[test]
fn the_examples_pass_config_check_and_decide_as_their_comments_say() {
    // The examples as shipped, with stand-ins for the key files the demo creates.
    let dir = support::Scratch::new("examples");
    let ex = dir.0.join("examples");
    let keys = dir.0.join(".demo/keys");
    std::fs::create_dir_all(&ex).unwrap();
    std::fs::create_dir_all(&keys).unwrap();
    for f in [
        "quickstart.toml",
        "quickstart.cedar",
        "ssh.toml",
        "ssh.cedar",
    ] {
        std::fs::copy(support::root().join("examples").join(f), ex.join(f)).unwrap();
    }
    let key = support::ssh_keygen(&keys.join("web_ed25519"), "web");
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let public: Vec<&str> = public.split_whitespace().take(2).collect();
    std::fs::write(
        keys.join("known_hosts"),
        format!("127.0.0.1 {}\n", public.join(" ")),
    )
    .unwrap();

    let cli = |args: &[&str]| {
        let out = Command::new(support::bin())
            .args(args)
            .current_dir(&ex)
            .env("ORDERS_PASSWORD", "stand-in")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for config in ["quickstart.toml", "ssh.toml"] {
        let (ok, out) = cli(&["config", "check", "--config", config]);
        assert!(ok, "{config}: {out}");
    }
    let decide = |config: &str, group: &str, conn: &str, action: &str, extra: &[&str]| {
        let mut args = vec![
            "policy",
            "test",
            "--config",
            config,
            "--who",
            "someone",
            "--group",
            group,
            "--connection",
            conn,
            "--action",
            action,
        ];
        args.extend_from_slice(extra);
        let (_, out) = cli(&args);
        // The verdict line (after how a --sql statement was classified), and everything.
        let verdict = out
            .lines()
            .find(|l| ["ALLOW", "DENY", "REVIEW"].iter().any(|v| l.starts_with(v)))
            .unwrap_or_default()
            .to_string();
        (verdict, out)
    };
    let read = decide(
        "quickstart.toml",
        "ci",
        "orders",
        "sql",
        &["--sql", "SELECT * FROM orders"],
    );
    assert!(read.0.starts_with("ALLOW sql.read"), "{}", read.1);
    let drop = decide(
        "quickstart.toml",
        "ci",
        "orders",
        "sql",
        &["--sql", "DROP TABLE orders"],
    );
    assert!(drop.0.starts_with("DENY sql.ddl"), "{}", drop.1);
    assert!(drop.1.contains("no-ddl"), "{}", drop.1);
    let tunnel = |target: &str| {
        let context = format!("{{\"command\":\"direct-tcpip {target}\"}}");
        decide(
            "ssh.toml",
            "ops",
            "web",
            "ssh.forward",
            &["--context", &context],
        )
    };
    let (allowed, out) = tunnel("127.0.0.1:5432");
    assert!(allowed.starts_with("ALLOW ssh.forward"), "{out}");
    assert!(out.contains("ops-db-tunnel"), "{out}");
    let (refused, out) = tunnel("10.0.0.1:22");
    assert!(refused.starts_with("DENY ssh.forward"), "{out}");
}

/// A real OpenID Connect provider (node-oidc-provider, started by `tests/scripts/oidc.sh`)
/// issues client-credentials JWTs; the gateway finds its keys through discovery and JWKS.
#[test]
fn tokens_from_a_real_oidc_provider_are_verified_through_discovery_and_jwks() {
    let oidc = support::oidc::Oidc::start();
    let extra = format!(
        r#"
[[identity.issuers]]
name = "ci-idp"
issuer = "{issuer}"
audience = "api://portcullis"
keep_claims = ["repository"]
"#,
        issuer = oidc.issuer()
    );
    let gw = Gateway::start(GatewaySpec {
        extra: &extra,
        ..Default::default()
    });
    let fetch = |client: &str, secret: &str, resource: &str| oidc.token(client, secret, resource);
    let token = fetch("ci-job", "ci-secret", "api://portcullis");
    let r = gw.psql(&token, "SELECT count(*) FROM customers");
    assert!(r.ok, "{}", r.stderr);
    assert_eq!(r.stdout.trim(), "3");
    let start = gw.audit(&["--kind", "session_start"]).pop().unwrap();
    assert_eq!(start["identity"]["principal"], "ci-idp/ci-job");
    assert_eq!(
        start["identity"]["groups"],
        serde_json::json!(["ci", "deployers"])
    );
    assert_eq!(
        start["identity"]["claims"]["repository"],
        "portcullis-gateway/portcullis"
    );

    let other = fetch("other-aud", "secret", "api://other");
    let r = gw.psql(&other, "SELECT 1");
    assert!(!r.ok);
    assert!(
        r.stderr.contains("audience is not accepted"),
        "{}",
        r.stderr
    );
}

/// TLS from the gateway to PostgreSQL, libpq's sslmodes against a real server with a
/// certificate for `localhost` from a CA the test cluster creates (`tests/scripts/pg.sh`). The
/// role `app_tls` may only log in over TLS, so a session through it proves the encryption.
#[test]
fn tls_to_the_target_follows_sslmode() {
    let ca = pg().dir.join("tls/ca.crt");
    let dir = support::Scratch::new("tls-target");
    // A CA the server's certificate does not chain to.
    let other = dir.0.join("other-ca.crt");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=other", "-keyout"])
        .arg(dir.0.join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = pg().port;
    let conn = |name: &str, host: &str, tls: &str| {
        format!(
            "[[connections]]\nname = \"{name}\"\nprotocol = \"postgres\"\ntarget = \"{host}:{port}\"\n\
             database = \"orders\"\nuser = \"app_tls\"\npassword_file = \"orders.password\"\n{tls}\n"
        )
    };
    let extra = [
        conn(
            "full",
            "localhost",
            &format!("sslrootcert = \"{}\"", ca.display()),
        ),
        conn(
            "ca",
            "127.0.0.1",
            &format!(
                "sslmode = \"verify-ca\"\nsslrootcert = \"{}\"",
                ca.display()
            ),
        ),
        conn(
            "name",
            "127.0.0.1",
            &format!("sslrootcert = \"{}\"", ca.display()),
        ),
        conn(
            "wrongca",
            "localhost",
            &format!("sslrootcert = \"{}\"", other.display()),
        ),
        conn("require", "127.0.0.1", "sslmode = \"require\""),
        conn("plain", "127.0.0.1", ""),
    ]
    .concat();
    let gw = Gateway::start(GatewaySpec {
        extra: &extra,
        ..GatewaySpec::default()
    });
    let token = gw.token("pipeline-7", &["ci"]);
    let ssl = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for db in ["full", "ca", "require"] {
        let r = gw.psql_env(&token, db, &["-c", ssl], &[]);
        assert_eq!((r.ok, r.stdout.trim()), (true, "t"), "{db}: {}", r.stderr);
    }
    for (db, why) in [
        ("name", "not valid for name"),
        ("wrongca", "UnknownIssuer"),
        ("plain", "no encryption"),
    ] {
        let r = gw.psql_env(&token, db, &["-c", "SELECT 1"], &[]);
        assert!(!r.ok, "{db} must fail");
        assert!(r.stderr.contains(why), "{db}: {}", r.stderr);
    }
}
