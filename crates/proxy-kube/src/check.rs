//! What a Kubernetes connection in the config must hold, checked by the proxy that uses it.

use gateway_core::config::{Config, ConnectionConfig};

/// Problems with kube connection `c`, each prefixed with its path `p`.
pub fn connection_problems(cfg: &Config, c: &ConnectionConfig, p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    for (key, set) in [
        ("user", c.user.is_some()),
        ("password_env", c.password_env.is_some()),
        ("password_file", c.password_file.is_some()),
        ("database", c.database.is_some()),
        ("http", c.http.is_some()),
    ] {
        if set {
            errs.push(format!(
                "{p}.{key}: not for kube connections (`[connections.kube]` says what the \
                 gateway presents)"
            ));
        }
    }
    let k = c.kube.clone().unwrap_or_default();
    if k.token_env.is_some() && k.token_file.is_some() {
        errs.push(format!("{p}.kube: set token_env or token_file, not both"));
    }
    if k.client_cert.is_some() != k.client_key.is_some() {
        errs.push(format!("{p}.kube: client_cert and client_key go together"));
    }
    for (key, file) in [
        ("token_file", &k.token_file),
        ("client_cert", &k.client_cert),
        ("client_key", &k.client_key),
        ("sslrootcert", &c.sslrootcert),
    ] {
        if let Some(f) = file
            && !cfg.resolve(f).is_file()
        {
            let at = if key == "sslrootcert" {
                format!("{p}.{key}")
            } else {
                format!("{p}.kube.{key}")
            };
            errs.push(format!("{at}: {} does not exist", cfg.resolve(f).display()));
        }
    }
    let token = k.token_env.is_some() || k.token_file.is_some();
    if !token && k.client_cert.is_none() && c.oauth.is_none() {
        errs.push(format!(
            "{p}.kube: the gateway must hold a credential for the API server: token_env, \
             token_file, client_cert and client_key, or oauth"
        ));
    }
    if token && c.oauth.is_some() {
        errs.push(format!("{p}: set a kube token or oauth, not both"));
    }
    // AKS with Entra ID: the Azure Kubernetes Service AAD server's scope.
    let aks = "6dae42f8-4368-4678-94ff-3960e28e3630/.default";
    errs.extend(proxy_http::check::oauth_problems(cfg, c, p, aks));
    errs.extend(proxy_http::check::hosts_problems(
        &k.hosts,
        &format!("{p}.kube.hosts"),
    ));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kube_connection_must_hold_one_credential() {
        let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[connections]]
name = "a"
protocol = "kube"
target = "127.0.0.1:6443"
kube = { token_env = "T", impersonate = true }
[[connections]]
name = "b"
protocol = "kube"
target = "127.0.0.1:6443"
user = "u"
[[connections]]
name = "c"
protocol = "kube"
target = "127.0.0.1:6443"
kube = { token_env = "T", token_file = "t", client_cert = "c.pem", hosts = ["k:6443"] }
[[connections]]
name = "d"
protocol = "kube"
target = "aks.example:443"
oauth = { tenant = "contoso.onmicrosoft.com", client_id = "app", client_secret_env = "S" }
"#;
        let cfg: Config = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        let errs: Vec<String> = cfg
            .connections
            .iter()
            .enumerate()
            .flat_map(|(i, c)| connection_problems(&cfg, c, &format!("connections[{i}]")))
            .collect();
        let has = |prefix: &str| errs.iter().any(|e| e.starts_with(prefix));
        assert!(!has("connections[0]"), "{errs:?}");
        assert!(has("connections[1].user: not for kube"), "{errs:?}");
        assert!(
            has("connections[1].kube: the gateway must hold"),
            "{errs:?}"
        );
        assert!(
            has("connections[2].kube: set token_env or token_file"),
            "{errs:?}"
        );
        assert!(
            has("connections[2].kube: client_cert and client_key"),
            "{errs:?}"
        );
        assert!(has("connections[2].kube.token_file"), "{errs:?}");
        assert!(has("connections[2].kube.hosts[0]"), "{errs:?}");
        assert!(has("connections[3].oauth: set scope"), "{errs:?}");
    }
}
