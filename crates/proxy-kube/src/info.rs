//! What a Kubernetes API request asks for, from its method, path and query, derived the way
//! the API server derives it: `/api/v1/…` (the core group) and `/apis/<group>/<version>/…`,
//! `namespaces/<ns>/…`, then resource, name and subresource; the `watch` and `proxy` path
//! verbs; `get` without a name read as `list`, or `watch` with `watch=true`; a name given
//! by `fieldSelector=metadata.name=…`; `delete` without a name as `deletecollection`. The
//! `exec`, `attach`, `portforward` and `proxy` subresources are verbs of their own for
//! policy. Any other path (discovery, `/version`, `/openapi/…`) is a non-resource request,
//! decided on its path. Pure functions over strings.

use gateway_core::action::{KubeRequest, KubeVerb};

/// Why a request is refused before policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InfoError {
    /// `…/watch` or `…/proxy` with nothing after it.
    MissingResource(&'static str),
    /// A method the API server has no verb for.
    Method(String),
    /// A query the gateway cannot read (a bad escape, a control byte).
    Query(String),
}

impl std::fmt::Display for InfoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InfoError::MissingResource(v) => write!(f, "`{v}` needs a resource after it"),
            InfoError::Method(m) => write!(f, "the method {m} is not a Kubernetes API verb"),
            InfoError::Query(e) => write!(f, "the query: {e}"),
        }
    }
}

/// Subresources of a namespace itself (`/namespaces/<ns>/status`), not resources in it.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The request info of `method` on normalised, decoded `path` with parameters `query`
/// (decoded, in order).
pub fn request_info(
    method: &str,
    path: &str,
    query: &[(String, String)],
) -> Result<KubeRequest, InfoError> {
    let trimmed = path.trim_matches('/');
    let mut parts: Vec<&str> = if trimmed.is_empty() {
        Vec::new()
    } else {
        trimmed.split('/').collect()
    };
    let method_verb = verb_of_method(method)?;
    let non_resource = || KubeRequest {
        verb: method_verb,
        resource: None,
        subresource: None,
        namespace: None,
        name: None,
        group: None,
        path: Some(if path.is_empty() {
            "/".into()
        } else {
            path.into()
        }),
        command: None,
    };
    let group = match parts.first().copied() {
        Some("api") if parts.len() >= 3 => {
            parts.drain(..2);
            String::new()
        }
        Some("apis") if parts.len() >= 4 => {
            let g = parts[1].to_string();
            parts.drain(..3);
            g
        }
        _ => return Ok(non_resource()),
    };
    let mut verb = method_verb;
    let mut special = None;
    if let Some(&v @ ("watch" | "proxy")) = parts.first() {
        if parts.len() < 2 {
            return Err(InfoError::MissingResource(if v == "watch" {
                "watch"
            } else {
                "proxy"
            }));
        }
        verb = if v == "watch" {
            KubeVerb::Watch
        } else {
            KubeVerb::Proxy
        };
        special = Some(v);
        parts.remove(0);
    }
    let mut namespace = None;
    if parts.first() == Some(&"namespaces")
        && let Some(ns) = parts.get(1)
    {
        namespace = Some(ns.to_string());
        if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
            parts.drain(..2);
        }
    }
    let resource = parts.first().map(|s| s.to_string());
    let mut name = parts.get(1).map(|s| s.to_string());
    let subresource = if special == Some("proxy") {
        None
    } else {
        parts.get(2).map(|s| s.to_string())
    };
    if name.is_none() && verb == KubeVerb::Get {
        verb = if first(query, "watch").is_some_and(go_bool) {
            KubeVerb::Watch
        } else {
            KubeVerb::List
        };
    }
    if name.is_none()
        && matches!(verb, KubeVerb::List | KubeVerb::Watch)
        && let Some(sel) = first(query, "fieldSelector")
    {
        name = exact_name(sel);
    }
    if name.is_none() && verb == KubeVerb::Delete {
        verb = KubeVerb::DeleteCollection;
    }
    let mut command = None;
    match subresource.as_deref() {
        Some("exec") => {
            verb = KubeVerb::Exec;
            let argv = query
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.as_str());
            command = Some(shell_join(argv));
        }
        Some("attach") => verb = KubeVerb::Attach,
        Some("portforward") => verb = KubeVerb::PortForward,
        Some("proxy") => verb = KubeVerb::Proxy,
        _ => {}
    }
    Ok(KubeRequest {
        verb,
        resource,
        subresource,
        namespace,
        name,
        group: Some(group),
        path: None,
        command,
    })
}

/// The verb a method means before the path says more.
fn verb_of_method(method: &str) -> Result<KubeVerb, InfoError> {
    Ok(match method {
        "GET" | "HEAD" => KubeVerb::Get,
        "POST" => KubeVerb::Create,
        "PUT" => KubeVerb::Update,
        "PATCH" => KubeVerb::Patch,
        "DELETE" => KubeVerb::Delete,
        other => return Err(InfoError::Method(other.to_string())),
    })
}

/// The first value of parameter `name`, as the API server's parameter decoding takes it.
fn first<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A query boolean as the API server's parameter conversion reads it: false only for `0`
/// and `false` (any case); anything else, an empty value included, is true.
fn go_bool(v: &str) -> bool {
    !(v == "0" || v.eq_ignore_ascii_case("false"))
}

/// The name a field selector requires exactly (`metadata.name=x` or `metadata.name==x`), when
/// it is a valid path segment.
fn exact_name(sel: &str) -> Option<String> {
    let mut found = None;
    for term in sel.split(',') {
        let term = term.trim();
        if let Some(value) = term
            .strip_prefix("metadata.name==")
            .or_else(|| term.strip_prefix("metadata.name="))
        {
            if found.is_some() {
                // Two requirements on the name: not one exact name.
                return None;
            }
            found = Some(value);
        }
    }
    let name = found?;
    let valid = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%']);
    valid.then(|| name.to_string())
}

#[cfg(test)]
#[path = "info_tests.rs"]
mod tests;

/// An argv as a shell would read it back: words joined by spaces, a word holding anything
/// but letters, digits and `-_./=:,@%+` single-quoted (so `sh -c 'rm -rf /'` is not read as
/// five words).
fn shell_join<'a>(argv: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for word in argv {
        if !out.is_empty() {
            out.push(' ');
        }
        let plain = !word.is_empty()
            && word
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b));
        if plain {
            out.push_str(word);
        } else {
            out.push('\'');
            out.push_str(&word.replace('\'', "'\\''"));
            out.push('\'');
        }
    }
    out
}
