//! What an SSH connection in the config must hold, checked by the proxy that uses it.

use gateway_core::config::{Config, ConnectionConfig};

/// Problems with SSH connection `c`, each prefixed with its path `p`.
pub fn connection_problems(cfg: &Config, c: &ConnectionConfig, p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if c.user.is_none() {
        errs.push(format!("{p}.user: required for an ssh connection"));
    }
    for (i, u) in c.users.iter().enumerate() {
        if u.is_empty() || u.contains('+') {
            errs.push(format!(
                "{p}.users[{i}]: must be non-empty and contain no `+`"
            ));
        }
    }
    if c.name.contains('+') {
        errs.push(format!(
            "{p}.name: an ssh connection name cannot contain `+`"
        ));
    }
    let password = c.password_env.is_some() || c.password_file.is_some();
    match (&c.private_key_file, password) {
        (Some(_), true) => errs.push(format!(
            "{p}: set one of private_key_file and password_env/password_file, not both"
        )),
        (None, false) => errs.push(format!(
            "{p}: an ssh connection needs a credential: private_key_file, password_env or password_file"
        )),
        _ => {}
    }
    match (&c.known_hosts, &c.host_key_fingerprint) {
        (None, None) => errs.push(format!(
            "{p}: pin the target's host key with known_hosts or host_key_fingerprint"
        )),
        (Some(_), Some(_)) => errs.push(format!(
            "{p}: set one of known_hosts and host_key_fingerprint, not both"
        )),
        (Some(f), None) if !cfg.resolve(f).is_file() => errs.push(format!(
            "{p}.known_hosts: {} does not exist",
            cfg.resolve(f).display()
        )),
        (None, Some(fp)) if !fp.starts_with("SHA256:") || fp.len() < 20 => errs.push(format!(
            "{p}.host_key_fingerprint: `{fp}` is not a SHA256:<base64> fingerprint"
        )),
        _ => {}
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_connections_need_a_user_a_credential_and_a_pinned_host_key() {
        let text = r#"
[gateway]
state_dir = "s"
policy = "p"
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
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        let errs: Vec<String> = cfg
            .connections
            .iter()
            .enumerate()
            .flat_map(|(i, c)| connection_problems(&cfg, c, &format!("connections[{i}]")))
            .collect();
        let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
        assert!(!has("connections[0]"), "{errs:?}");
        assert!(has("connections[1].user: required"), "{errs:?}");
        assert!(has("connections[1].name:"), "{errs:?}");
        assert!(
            has("connections[1]: an ssh connection needs a credential"),
            "{errs:?}"
        );
        assert!(has("connections[1]: pin the target's host key"), "{errs:?}");
        assert!(
            has("connections[2]: set one of private_key_file"),
            "{errs:?}"
        );
        assert!(has("connections[2]: set one of known_hosts"), "{errs:?}");
    }
}
