//! Where PostgreSQL is and how to log in to it: a `postgres://` URL or libpq-style
//! `key=value` pairs.

use crate::error::{Error, Result};

/// How the server reaches PostgreSQL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgConfig {
    /// A host name or address; a path (starting with `/`) is a Unix socket directory.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    /// Extra startup parameters (e.g. `options`, `search_path`), sent as given.
    pub params: Vec<(String, String)>,
}

impl PgConfig {
    /// Parse `postgres://user:pass@host:port/db?key=value` or `host=... port=... user=...`.
    pub fn parse(s: &str) -> Result<PgConfig> {
        let s = s.trim();
        let mut cfg = PgConfig {
            host: "127.0.0.1".into(),
            port: 5432,
            user: "postgres".into(),
            password: None,
            dbname: String::new(),
            params: Vec::new(),
        };
        if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            cfg.parse_url(rest)?;
        } else {
            cfg.parse_pairs(s)?;
        }
        if cfg.dbname.is_empty() {
            cfg.dbname = cfg.user.clone();
        }
        Ok(cfg)
    }

    fn parse_url(&mut self, rest: &str) -> Result<()> {
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, db) = main.split_once('/').unwrap_or((main, ""));
        let hostport = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (userinfo, None),
                };
                if !user.is_empty() {
                    self.user = percent_decode(user)?;
                }
                self.password = password.map(percent_decode).transpose()?;
                hostport
            }
            None => authority,
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // [v6]:port
            Some(v6) => match v6.split_once(']') {
                Some((h, p)) => (h, p.strip_prefix(':')),
                None => return Err(Error::Config(format!("bad host in {hostport:?}"))),
            },
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        if !host.is_empty() {
            self.host = percent_decode(host)?;
        }
        if let Some(p) = port {
            self.set("port", p)?;
        }
        if !db.is_empty() {
            self.dbname = percent_decode(db)?;
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            self.set(&percent_decode(k)?, &percent_decode(v)?)?;
        }
        Ok(())
    }

    fn parse_pairs(&mut self, s: &str) -> Result<()> {
        let mut rest = s;
        loop {
            rest = rest.trim_start();
            if rest.is_empty() {
                return Ok(());
            }
            let (key, after) = rest
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("expected key=value in {s:?}")))?;
            let after = after.trim_start();
            let (value, next) = if let Some(quoted) = after.strip_prefix('\'') {
                // 'a value with spaces', with \' and \\ escapes
                let mut v = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                v.push(n);
                            }
                        }
                        '\'' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => v.push(c),
                    }
                }
                let end = end.ok_or_else(|| Error::Config(format!("unclosed quote in {s:?}")))?;
                (v, &quoted[end..])
            } else {
                let end = after.find(char::is_whitespace).unwrap_or(after.len());
                (after[..end].to_string(), &after[end..])
            };
            self.set(key.trim(), &value)?;
            rest = next;
        }
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "host" | "hostaddr" => self.host = value.to_string(),
            "port" => {
                self.port = value
                    .parse()
                    .map_err(|_| Error::Config(format!("bad port {value:?}")))?
            }
            "user" => self.user = value.to_string(),
            "password" => self.password = Some(value.to_string()),
            "dbname" => self.dbname = value.to_string(),
            // This server speaks to PostgreSQL in clear only (a loopback test cluster).
            "sslmode" => {
                if !matches!(value, "disable" | "allow" | "prefer") {
                    return Err(Error::Config(format!(
                        "sslmode={value}: this test server connects to PostgreSQL without TLS"
                    )));
                }
            }
            "connect_timeout" => {}
            other => self.params.push((other.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// Whether `host` names a Unix socket directory.
    pub fn is_unix_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

fn percent_decode(s: &str) -> Result<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| Error::Config(format!("bad percent escape in {s:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Error::Config(format!("{s:?} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_and_key_value_pairs_give_the_same_settings() {
        let a = PgConfig::parse("postgres://app:p%40ss@127.0.0.1:5433/tds_pg?application_name=x")
            .unwrap();
        let b = PgConfig::parse(
            "host=127.0.0.1 port=5433 user=app password='p@ss' dbname=tds_pg application_name=x",
        )
        .unwrap();
        assert_eq!(a, b);
        assert_eq!(a.password.as_deref(), Some("p@ss"));
        assert_eq!(a.params, vec![("application_name".into(), "x".into())]);
        let c = PgConfig::parse("host=/tmp/pg port=6000 user=postgres").unwrap();
        assert!(c.is_unix_socket());
        assert_eq!(c.dbname, "postgres");
        assert!(PgConfig::parse("postgres://h/db?sslmode=require").is_err());
        assert!(PgConfig::parse("host=x port=notaport").is_err());
        assert!(PgConfig::parse("password='unclosed").is_err());
    }
}
