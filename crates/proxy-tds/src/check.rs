//! What a TDS connection in the config must hold, checked by the proxy that uses it.

use gateway_core::config::{Config, ConnectionConfig, TdsEncrypt};
use gateway_core::util::is_loopback_target;

/// Problems with TDS connection `c`, each prefixed with its path `p`.
pub fn connection_problems(cfg: &Config, c: &ConnectionConfig, p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    match &c.oauth {
        Some(o) => {
            if c.user.is_some() || c.password_env.is_some() || c.password_file.is_some() {
                errs.push(format!(
                    "{p}: set a SQL login (user and password) or oauth, not both"
                ));
            }
            errs.extend(o.problems(p, |f| cfg.resolve(f)));
        }
        None => {
            if c.user.is_none() {
                errs.push(format!(
                    "{p}.user: required for a tds connection (the SQL login the gateway uses), \
                     unless it logs in with oauth"
                ));
            }
            if c.password_env.is_none() && c.password_file.is_none() {
                errs.push(format!(
                    "{p}: set password_env or password_file (the SQL login's password)"
                ));
            }
        }
    }
    let encrypt = c.encrypt.unwrap_or_default();
    if encrypt == TdsEncrypt::Off && !is_loopback_target(&c.target) {
        errs.push(format!(
            "{p}.encrypt: `off` sends the held password in clear; it is allowed for loopback \
             targets only"
        ));
    }
    if let Some(f) = &c.sslrootcert {
        if encrypt == TdsEncrypt::Off {
            errs.push(format!(
                "{p}.sslrootcert: has no effect with encrypt = \"off\""
            ));
        }
        if !cfg.resolve(f).is_file() {
            errs.push(format!(
                "{p}.sslrootcert: {} does not exist",
                cfg.resolve(f).display()
            ));
        }
    }
    if let Some(db) = &c.database
        && db.chars().count() > 128
    {
        errs.push(format!("{p}.database: longer than 128 characters"));
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tds_connections_need_a_login_and_encryption_off_loopback() {
        let text = r#"
[gateway]
state_dir = "s"
policy = "p"
[[connections]]
name = "a"
protocol = "tds"
target = "127.0.0.1:1433"
user = "u"
password_env = "PW"
encrypt = "off"
[[connections]]
name = "b"
protocol = "tds"
target = "sql.example.net:1433"
user = "u"
password_env = "PW"
encrypt = "off"
[[connections]]
name = "c"
protocol = "tds"
target = "sql.example.net:1433"
sslrootcert = "missing.pem"
[[connections]]
name = "d"
protocol = "tds"
target = "sql.example.net:1433"
oauth = { tenant = "contoso.onmicrosoft.com", client_id = "app", client_secret_env = "S" }
[[connections]]
name = "e"
protocol = "tds"
target = "sql.example.net:1433"
user = "u"
password_env = "PW"
oauth = { token_url = "http://idp.example.net/token", client_id = "app" }
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
        assert!(has("connections[1].encrypt: `off`"), "{errs:?}");
        assert!(has("connections[2].user: required"), "{errs:?}");
        assert!(has("connections[2]: set password_env"), "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("missing.pem does not exist")),
            "{errs:?}"
        );
        assert!(!has("connections[3]"), "{errs:?}");
        assert!(has("connections[4]: set a SQL login"), "{errs:?}");
        assert!(
            has("connections[4].oauth.token_url: must be https"),
            "{errs:?}"
        );
        for url in [
            "http://127.0.0.1/token",
            "http://localhost:8080/t",
            "http://[::1]:9/t",
        ] {
            assert!(gateway_core::util::is_loopback_url(url), "{url}");
        }
        assert!(!gateway_core::util::is_loopback_url(
            "http://idp.example.net/token"
        ));
        assert!(
            has("connections[4].oauth: set client_secret_env"),
            "{errs:?}"
        );
    }
}
