//! Which connection a request is for: a host name listed in a connection's `hosts`, else
//! the path prefix `/c/<connection>/`. Decided on the normalised path, so a prefix cannot be
//! spelled around.

use gateway_core::config::{Config, Protocol};

/// The connection a request names and the path below it.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'a> {
    pub connection: &'a str,
    /// The rest of the path (decoded), starting with `/`.
    pub decoded: &'a str,
    /// The same, encoded.
    pub encoded: &'a str,
}

/// The host part of a `Host` header or `:authority` (port and IPv6 brackets removed), lower
/// case.
pub fn host_name(authority: &str) -> String {
    let h = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    h.to_ascii_lowercase()
}

/// The host names that select connection `c` (`[connections.http] hosts` or
/// `[connections.kube] hosts`).
fn hosts(c: &gateway_core::config::ConnectionConfig) -> &[String] {
    match (&c.http, &c.kube) {
        (Some(h), _) => &h.hosts,
        (None, Some(k)) => &k.hosts,
        (None, None) => &[],
    }
}

/// Route a request of a `protocol` listener with normalised path (`decoded`, `encoded`) sent
/// to `host` (lower case).
pub fn route<'a>(
    cfg: &'a Config,
    protocol: Protocol,
    host: &str,
    decoded: &'a str,
    encoded: &'a str,
) -> Option<Route<'a>> {
    if let Some(c) = cfg
        .connections
        .iter()
        .find(|c| c.protocol == protocol && hosts(c).iter().any(|n| n.eq_ignore_ascii_case(host)))
    {
        return Some(Route {
            connection: &c.name,
            decoded,
            encoded,
        });
    }
    let (name, d) = split_prefix(decoded)?;
    // The connection name has no escapes the encoding would change: same split.
    let (_, e) = split_prefix(encoded)?;
    Some(Route {
        connection: name,
        decoded: d,
        encoded: e,
    })
}

/// `/c/<name>/rest` → (`name`, `/rest`); `/c/<name>` → (`name`, `/`).
fn split_prefix(p: &str) -> Option<(&str, &str)> {
    let rest = p.strip_prefix("/c/")?;
    match rest.find('/') {
        Some(i) => Some((&rest[..i], &rest[i..])),
        None if !rest.is_empty() => Some((rest, "/")),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_split_and_hosts_lose_ports() {
        assert_eq!(
            split_prefix("/c/arm/subscriptions"),
            Some(("arm", "/subscriptions"))
        );
        assert_eq!(split_prefix("/c/arm"), Some(("arm", "/")));
        assert_eq!(split_prefix("/c/"), None);
        assert_eq!(split_prefix("/x/arm/"), None);
        assert_eq!(host_name("Vault.Example:8443"), "vault.example");
        assert_eq!(host_name("[::1]:443"), "::1");
        assert_eq!(host_name("localhost"), "localhost");
    }
}
