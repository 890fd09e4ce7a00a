//! What a Postgres connection in the config must hold, checked by the proxy that uses it.

use gateway_core::config::{Config, ConnectionConfig, SslMode};

/// Problems with Postgres connection `c`, each prefixed with its path `p`.
pub fn connection_problems(cfg: &Config, c: &ConnectionConfig, p: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if c.user.is_none() {
        errs.push(format!("{p}.user: required for a postgres connection"));
    }
    if let Some(f) = &c.sslrootcert {
        if matches!(c.sslmode(), SslMode::Disable | SslMode::Require) {
            errs.push(format!(
                "{p}.sslrootcert: has no effect unless sslmode is verify-ca or verify-full"
            ));
        }
        if !cfg.resolve(f).is_file() {
            errs.push(format!(
                "{p}.sslrootcert: {} does not exist",
                cfg.resolve(f).display()
            ));
        }
    }
    for param in &c.allow_startup_params {
        if matches!(param.as_str(), "user" | "database" | "replication") {
            errs.push(format!(
                "{p}.allow_startup_params: `{param}` is set by the gateway and cannot be passed through"
            ));
        }
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_connections_need_a_user_and_a_ca_only_where_it_counts() {
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
allow_startup_params = ["database"]
[[connections]]
name = "c"
protocol = "postgres"
target = "h:5432"
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
        assert!(has("connections[1].sslrootcert: has no effect"), "{errs:?}");
        assert!(
            errs.iter()
                .any(|e| e.contains("missing.pem does not exist")),
            "{errs:?}"
        );
        assert!(
            has("connections[1].allow_startup_params: `database`"),
            "{errs:?}"
        );
        assert!(has("connections[2].user: required"), "{errs:?}");
    }
}
