//! Configuration parsing and validation.

use super::*;

#[test]
fn durations_parse_and_reject_bad_units() {
    assert_eq!(
        parse_duration("15m").ok(),
        Some(std::time::Duration::from_secs(900))
    );
    assert_eq!(
        parse_duration("2h").ok(),
        Some(std::time::Duration::from_secs(7200))
    );
    assert!(parse_duration("15").is_err());
    assert!(parse_duration("15y").is_err());
    assert!(parse_duration("m").is_err());
}

#[test]
fn masking_blocks_are_validated_with_paths() {
    let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[connections]]
name = "orders"
protocol = "postgres"
target = "127.0.0.1:5432"
user = "app"
[[masking]]
connections = ["orders"]
detectors = ["card", "email"]
columns = ["customers.ssn", "*.password"]
unmasked_groups = ["dpo"]
strategies = { card = "partial", email = "hash" }
[[masking]]
connections = ["nope", "orders"]
detectors = ["cards"]
columns = ["ssn", "a..b"]
strategies = { email = "hash", bogus = "redact" }
[[masking]]
connections = []
"#;
    let cfg: Config = toml::from_str(text).unwrap();
    assert_eq!(
        cfg.masking[0].strategies.get("card"),
        Some(&MaskStrategy::Partial)
    );
    assert_eq!(cfg.masking[0].strategy, MaskStrategy::Redact);
    let errs = crate::check_config(&cfg, &[]);
    let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
    assert!(
        !errs.iter().any(|e| e.starts_with("masking[0]")),
        "{errs:?}"
    );
    assert!(
        has("masking[1].connections[0]: no connection named `nope`"),
        "{errs:?}"
    );
    assert!(
        has("masking[1].detectors[0]: unknown detector `cards`"),
        "{errs:?}"
    );
    assert!(has("masking[1].columns[0]:"), "{errs:?}");
    assert!(has("masking[1].columns[1]:"), "{errs:?}");
    assert!(has("masking[1].strategies.email:"), "{errs:?}");
    assert!(has("masking[1].strategies.bogus:"), "{errs:?}");
    assert!(has("masking[2].connections: "), "{errs:?}");
    assert!(has("masking[2]: "), "{errs:?}");
    let bad =
        "[gateway]\nstate_dir='s'\npolicy='p'\n[[masking]]\nconnections=['x']\nstrategy='blur'\n";
    assert!(toml::from_str::<Config>(bad).is_err());
}

#[test]
fn ssh_connections_need_a_credential_and_a_host_key_pin() {
    let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[listeners]]
protocol = "ssh"
listen = "127.0.0.1:2222"
[[listeners]]
protocol = "ssh"
listen = "127.0.0.1:2223"
tls = { cert = "c", key = "k" }
[[connections]]
name = "ok"
protocol = "ssh"
target = "h:22"
user = "deploy"
users = ["www"]
password_env = "PATH"
host_key_fingerprint = "SHA256:oPCFnF9MBgb7B8QtjEIy0ipR9vWNlBdELBb5TMNcXFc"
[[connections]]
name = "bad+name"
protocol = "ssh"
target = "h:22"
[[connections]]
name = "both"
protocol = "ssh"
target = "h:22"
user = "u"
private_key_file = "/nonexistent/key"
password_env = "PATH"
known_hosts = "/nonexistent/kh"
host_key_fingerprint = "md5:x"
[[connections]]
name = "pg"
protocol = "postgres"
target = "h:5432"
user = "u"
known_hosts = "kh"
"#;
    let cfg: Config = toml::from_str(text).unwrap();
    let errs = cfg.validate();
    let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
    assert!(
        !errs.iter().any(|e| e.starts_with("connections[0]")),
        "{errs:?}"
    );
    assert!(!has("listeners[0]"), "{errs:?}");
    assert!(has("listeners[1].tls:"), "{errs:?}");
    // What an SSH connection needs is the SSH proxy's to check (proxy-ssh `check`); the
    // config only refuses SSH fields on other protocols.
    assert!(!has("connections[1]"), "{errs:?}");
    assert!(has("connections[3].known_hosts: only for ssh"), "{errs:?}");
    let bad = "[gateway]\nstate_dir='s'\npolicy='p'\n[[connections]]\nname='x'\nprotocol='ssh'\ntarget='h:22'\nhost_key='x'\n";
    assert!(toml::from_str::<Config>(bad).is_err());
}

#[test]
fn unknown_keys_are_refused() {
    let text = "[gateway]\nstate_dir='s'\npolicy='p'\nbogus=1\n";
    let err = toml::from_str::<Config>(text).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("bogus")));
}

fn with_approvals(section: &str) -> Result<Config, String> {
    let text = format!("[gateway]\nstate_dir='s'\npolicy='p'\n{section}");
    toml::from_str::<Config>(&text).map_err(|e| e.to_string())
}

#[test]
fn approvals_section_defaults_and_validation() {
    let cfg = with_approvals("").unwrap();
    assert_eq!(cfg.approvals.pending_ttl, "15m");
    assert_eq!(cfg.approvals.max_window, "8h");
    let mut errs = Vec::new();
    cfg.approvals.problems(&mut errs);
    assert!(errs.is_empty(), "{errs:?}");

    let cfg = with_approvals(
        "[approvals]\napprovers=['dba']\npending_ttl='0s'\nmax_window='8y'\n\
         [[approvals.webhooks]]\nurl='ftp://x'\n\
         [[approvals.webhooks]]\nformat='slack'\n\
         [[approvals.webhooks]]\nurl='https://h'\nsecret_env='PORTCULLIS_TEST_UNSET_SECRET'\n",
    )
    .unwrap();
    assert_eq!(cfg.approvals.webhooks[1].format, WebhookFormat::Slack);
    let mut errs = Vec::new();
    cfg.approvals.problems(&mut errs);
    assert_eq!(errs.len(), 4, "{errs:?}");
    assert!(errs[0].starts_with("approvals.pending_ttl:"), "{errs:?}");
    assert!(errs[1].starts_with("approvals.max_window:"), "{errs:?}");
    assert!(
        errs[2].starts_with("approvals.webhooks[0].url:"),
        "{errs:?}"
    );
    assert!(
        errs[3].starts_with("approvals.webhooks[1]: set one of"),
        "{errs:?}"
    );
    // The unset secret is a secret problem: serve and config check report it, the
    // verbs that only read the state directory do not need it.
    let mut secrets = Vec::new();
    cfg.approvals.secret_problems(&mut secrets);
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert!(
        secrets[0].starts_with("approvals.webhooks[2].secret_env:"),
        "{secrets:?}"
    );
}

#[test]
fn sslmode_defaults_and_validation() {
    let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[connections]]
name = "a"
protocol = "postgres"
target = "h:5432"
user = "u"
[[connections]]
name = "b"
protocol = "postgres"
target = "h:5432"
user = "u"
sslmode = "require"
sslrootcert = "missing.pem"
[[connections]]
name = "c"
protocol = "ssh"
target = "h:22"
user = "u"
sslmode = "verify-full"
encrypt = "strict"
[[connections]]
name = "d"
protocol = "tds"
target = "h:1433"
user = "u"
encrypt = "strict"
sslrootcert = "ca.pem"
"#;
    let cfg: Config = toml::from_str(text).unwrap();
    assert_eq!(cfg.connections[3].encrypt, Some(TdsEncrypt::Strict));
    assert_eq!(cfg.connections[0].sslmode(), SslMode::Disable);
    let mut with_ca = cfg.connections[1].clone();
    with_ca.sslmode = None;
    assert_eq!(with_ca.sslmode(), SslMode::VerifyFull);
    let errs = cfg.validate();
    let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
    // The CA file itself is the Postgres proxy's to check (proxy-postgres `check`).
    assert!(has("connections[2].sslmode: only for postgres"), "{errs:?}");
    assert!(has("connections[2].encrypt: only for tds"), "{errs:?}");
    assert!(!has("connections[3]"), "{errs:?}");
    assert!(!has("connections[0]"), "{errs:?}");
    let bad = text.replace("\"require\"", "\"prefer\"");
    assert!(toml::from_str::<Config>(&bad).is_err());
}

#[test]
fn approvals_unknown_keys_are_refused() {
    let err = with_approvals("[approvals]\nttl='1m'\n").err();
    assert!(err.is_some_and(|e| e.contains("ttl")));
    let err = with_approvals("[[approvals.webhooks]]\nurl='http://x'\nheaders=1\n").err();
    assert!(err.is_some_and(|e| e.contains("headers")));
}
