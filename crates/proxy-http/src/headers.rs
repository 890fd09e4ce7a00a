//! Header handling between client and target: hop-by-hop headers (RFC 9110 §7.6.1) are the
//! gateway's own and never forwarded, in either direction; the caller's credential is never
//! forwarded; the target's `Host` is the gateway's to set. Pure functions over header maps.

use hyper::header::{self, HeaderMap, HeaderName};

/// Headers that belong to one hop and are never forwarded, in both directions.
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Named hop-by-hop by long practice rather than by the standard's list.
const LEGACY_HOP: &[&str] = &["keep-alive", "proxy-connection"];

/// Remove the hop-by-hop headers of `h`: the fixed list, and every header its `Connection`
/// names (a client naming `authorization` there does not thereby get it forwarded: it is
/// removed like the rest).
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
    for n in LEGACY_HOP {
        h.remove(*n);
    }
}

/// Prepare the client's request headers for the target: hop-by-hop removed, the caller's
/// credential removed, `Host` and `Expect` left to the gateway (it answers `100 Continue`
/// itself, once the request is admitted and its body is read).
pub fn for_target(h: &mut HeaderMap) {
    strip_hop_by_hop(h);
    h.remove(header::AUTHORIZATION);
    h.remove(header::HOST);
    h.remove(header::EXPECT);
}

/// The caller's bearer token, if `Authorization` holds exactly one `Bearer` credential.
pub fn bearer(h: &HeaderMap) -> Option<&str> {
    let mut values = h.get_all(header::AUTHORIZATION).iter();
    let v = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let v = v.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert("x-ms-version", HeaderValue::from_static("2021-08-06"));
        for_target(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-ms-version"]);
    }

    #[test]
    fn only_one_bearer_credential_is_taken() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  xyz "),
        );
        assert_eq!(bearer(&h), Some("xyz"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        h.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert_eq!(bearer(&h), None);
    }
}
