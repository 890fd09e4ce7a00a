//! What an HTTP connection in the config must hold, checked by the proxy that uses it.

use gateway_core::config::{Config, ConnectionConfig, HttpScheme};

/// Problems with HTTP connection `c`, each prefixed with its path `p`.
pub fn connection_problems(cfg: &Config, c: &ConnectionConfig, p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    for (key, set) in [
        ("user", c.user.is_some()),
        ("password_env", c.password_env.is_some()),
        ("password_file", c.password_file.is_some()),
        ("database", c.database.is_some()),
    ] {
        if set {
            errs.push(format!(
                "{p}.{key}: not for http connections (a held header or oauth says what the \
                 gateway sends)"
            ));
        }
    }
    let settings = c.http.clone().unwrap_or_default();
    if settings.record_body_bytes > crate::exchange::MAX_RECORDED_BODY {
        errs.push(format!(
            "{p}.http.record_body_bytes: at most {} (a recording sits in each audit event)",
            crate::exchange::MAX_RECORDED_BODY
        ));
    }
    if settings.scheme == HttpScheme::Http && !gateway_core::util::is_loopback_target(&c.target) {
        errs.push(format!(
            "{p}.http.scheme: `http` sends the held credential in clear; it is allowed for \
             loopback targets only"
        ));
    }
    if let Some(h) = &settings.header {
        if c.oauth.is_some() {
            errs.push(format!("{p}: set http.header or oauth, not both"));
        }
        if hyper::header::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            errs.push(format!(
                "{p}.http.header.name: `{}` is not a header name",
                h.name
            ));
        }
        match (&h.value_env, &h.value_file) {
            (Some(_), Some(_)) | (None, None) => {
                errs.push(format!("{p}.http.header: set value_env or value_file"))
            }
            (None, Some(f)) if !cfg.resolve(f).is_file() => errs.push(format!(
                "{p}.http.header.value_file: {} does not exist",
                cfg.resolve(f).display()
            )),
            _ => {}
        }
    }
    if let Some(k) = &settings.shared_key {
        if settings.header.is_some() || c.oauth.is_some() {
            errs.push(format!(
                "{p}.http.shared_key: the connection holds one credential: a shared key, a \
                 header or oauth"
            ));
        }
        if k.account.is_empty() || !k.account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            errs.push(format!(
                "{p}.http.shared_key.account: `{}` is not a storage account name",
                k.account
            ));
        }
        match (&k.key_env, &k.key_file) {
            (Some(_), Some(_)) | (None, None) => {
                errs.push(format!("{p}.http.shared_key: set key_env or key_file"))
            }
            (None, Some(f)) if !cfg.resolve(f).is_file() => errs.push(format!(
                "{p}.http.shared_key.key_file: {} does not exist",
                cfg.resolve(f).display()
            )),
            _ => {}
        }
    }
    errs.extend(hosts_problems(&settings.hosts, &format!("{p}.http.hosts")));
    errs.extend(oauth_problems(
        cfg,
        c,
        p,
        "https://management.azure.com/.default",
    ));
    if let Some(f) = &c.sslrootcert
        && !cfg.resolve(f).is_file()
    {
        errs.push(format!(
            "{p}.sslrootcert: {} does not exist",
            cfg.resolve(f).display()
        ));
    }
    errs
}

/// Problems with host names listed at `at` (e.g. `connections[0].http.hosts`): each must
/// be a bare host name.
pub fn hosts_problems(hosts: &[String], at: &str) -> Vec<String> {
    hosts
        .iter()
        .enumerate()
        .filter(|(_, h)| h.is_empty() || h.contains([':', '/', ' ']))
        .map(|(i, h)| format!("{at}[{i}]: `{h}` is not a host name (no port, no path)"))
        .collect()
}

/// Problems with the `oauth` of API connection `c` at `p`: the client settings, and a scope
/// or resource (the default scope is Azure SQL's, no API's); `example` is a scope to suggest.
pub fn oauth_problems(cfg: &Config, c: &ConnectionConfig, p: &str, example: &str) -> Vec<String> {
    let Some(o) = &c.oauth else {
        return Vec::new();
    };
    let mut errs = o.problems(p, |f| cfg.resolve(f));
    if o.scope.is_none() && o.resource.is_none() {
        errs.push(format!("{p}.oauth: set scope (e.g. {example}) or resource"));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_connections_hold_one_credential_and_stay_encrypted_off_loopback() {
        let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[connections]]
name = "a"
protocol = "http"
target = "127.0.0.1:8080"
http = { scheme = "http", header = { name = "x-api-key", value_env = "K" } }
[[connections]]
name = "b"
protocol = "http"
target = "management.azure.com:443"
user = "u"
http = { scheme = "http", hosts = ["arm.gw:443"] }
[[connections]]
name = "c"
protocol = "http"
target = "management.azure.com:443"
oauth = { tenant = "contoso.onmicrosoft.com", client_id = "app", client_secret_env = "S" }
http = { header = { name = "bad name", value_env = "K" } }
[[connections]]
name = "d"
protocol = "http"
target = "management.azure.com:443"
oauth = { tenant = "contoso.onmicrosoft.com", client_id = "app", client_secret_env = "S", scope = "https://management.azure.com/.default" }
http = { record_headers = true, record_body_bytes = 65536 }
[[connections]]
name = "e"
protocol = "http"
target = "127.0.0.1:8080"
http = { scheme = "http", record_body_bytes = 65537, header = { name = "k", value_env = "K" } }
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
        assert!(has("connections[1].user: not for http"), "{errs:?}");
        assert!(has("connections[1].http.scheme: `http`"), "{errs:?}");
        assert!(has("connections[1].http.hosts[0]"), "{errs:?}");
        assert!(has("connections[2]: set http.header or oauth"), "{errs:?}");
        assert!(has("connections[2].http.header.name"), "{errs:?}");
        assert!(has("connections[2].oauth: set scope"), "{errs:?}");
        assert!(!has("connections[3]"), "{errs:?}");
        assert!(
            has("connections[4].http.record_body_bytes: at most"),
            "{errs:?}"
        );
    }
}
