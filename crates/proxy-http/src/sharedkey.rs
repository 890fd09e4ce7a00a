//! Azure Storage Shared Key request signing: the gateway holds the account key and signs
//! every request it forwards (`Authorization: SharedKey <account>:<signature>`), as the
//! storage service defines it for Blob, Queue and File since version 2009-09-19: HMAC-SHA256
//! over the verb, the standard headers, the canonicalized `x-ms-` headers and the
//! canonicalized resource. Pure functions over the request's parts.

use aws_lc_rs::hmac;
use base64::Engine as _;
use hyper::HeaderMap;
use hyper::header::HeaderValue;

/// The storage service version sent when the client names none.
const DEFAULT_VERSION: &str = "2021-08-06";

/// An account and its key, ready to sign.
pub struct SharedKey {
    account: String,
    key: hmac::Key,
}

impl SharedKey {
    /// `key_b64` is the account key as the portal shows it (base64).
    pub fn new(account: &str, key_b64: &str) -> Result<SharedKey, String> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(key_b64.trim())
            .map_err(|_| "the account key is not base64".to_string())?;
        Ok(SharedKey {
            account: account.to_string(),
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        })
    }

    /// Sign a request: `x-ms-date` set to `now` (an RFC 9110 date), `x-ms-version` set if
    /// missing, `Authorization` set. `path` is the encoded path as sent, `query` the raw
    /// query string.
    pub fn sign(
        &self,
        method: &str,
        headers: &mut HeaderMap,
        path: &str,
        query: Option<&str>,
        now: &str,
    ) -> Result<(), String> {
        headers.insert(
            "x-ms-date",
            HeaderValue::from_str(now).map_err(|_| "bad date")?,
        );
        if !headers.contains_key("x-ms-version") {
            headers.insert("x-ms-version", HeaderValue::from_static(DEFAULT_VERSION));
        }
        let sts = string_to_sign(method, headers, &self.account, path, query);
        let sig = hmac::sign(&self.key, sts.as_bytes());
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.as_ref());
        let mut v = HeaderValue::from_str(&format!("SharedKey {}:{b64}", self.account))
            .map_err(|_| "the account name is not fit for a header")?;
        v.set_sensitive(true);
        headers.insert(hyper::header::AUTHORIZATION, v);
        Ok(())
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The string the signature is computed over.
pub fn string_to_sign(
    method: &str,
    h: &HeaderMap,
    account: &str,
    path: &str,
    query: Option<&str>,
) -> String {
    let length = match header(h, "content-length") {
        "0" => "",
        l => l,
    };
    let mut s = String::with_capacity(256);
    for part in [
        method,
        header(h, "content-encoding"),
        header(h, "content-language"),
        length,
        header(h, "content-md5"),
        header(h, "content-type"),
        // `Date` is empty when `x-ms-date` is set, which `sign` always does.
        "",
        header(h, "if-modified-since"),
        header(h, "if-match"),
        header(h, "if-none-match"),
        header(h, "if-unmodified-since"),
        header(h, "range"),
    ] {
        s.push_str(part);
        s.push('\n');
    }
    let mut ms: Vec<(String, String)> = h
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-ms-"))
        .map(|(n, v)| {
            let v = v.to_str().unwrap_or("");
            (
                n.as_str().to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect();
    ms.sort();
    for (n, v) in &ms {
        s.push_str(n);
        s.push(':');
        s.push_str(v);
        s.push('\n');
    }
    s.push('/');
    s.push_str(account);
    s.push_str(path);
    let mut params: Vec<(String, Vec<String>)> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        let n = decode(n).to_lowercase();
        let v = decode(v);
        match params.iter_mut().find(|(k, _)| *k == n) {
            Some((_, vs)) => vs.push(v),
            None => params.push((n, vec![v])),
        }
    }
    params.sort();
    for (n, mut vs) in params {
        vs.sort();
        s.push('\n');
        s.push_str(&n);
        s.push(':');
        s.push_str(&vs.join(","));
    }
    s
}

/// Percent-decode a query component (`+` stays `+`, as the service reads it); invalid
/// escapes are kept as written.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|c| (*c as char).to_digit(16)),
                b.get(i + 2).and_then(|c| (*c as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_string_to_sign_follows_the_service_definition() {
        let mut h = HeaderMap::new();
        h.insert("content-length", HeaderValue::from_static("11"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        h.insert("x-ms-version", HeaderValue::from_static("2021-08-06"));
        h.insert(
            "x-ms-date",
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        h.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        let s = string_to_sign(
            "PUT",
            &h,
            "devstoreaccount1",
            "/devstoreaccount1/box/a%20b.txt",
            Some("timeout=30&comp=block&blockid=YQ%3D%3D"),
        );
        assert_eq!(
            s,
            "PUT\n\n\n11\n\ntext/plain\n\n\n\n\n\n\n\
             x-ms-blob-type:BlockBlob\nx-ms-date:Sun, 06 Nov 1994 08:49:37 GMT\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/box/a%20b.txt\nblockid:YQ==\ncomp:block\ntimeout:30"
        );
    }

    #[test]
    fn signing_sets_the_headers() {
        // Azurite's well-known development key.
        let k = SharedKey::new(
            "devstoreaccount1",
            "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut h = HeaderMap::new();
        k.sign(
            "GET",
            &mut h,
            "/devstoreaccount1",
            Some("comp=list"),
            "Sun, 06 Nov 1994 08:49:37 GMT",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let auth = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        assert!(auth.starts_with("SharedKey devstoreaccount1:"), "{auth}");
        assert_eq!(
            h.get("x-ms-version").map(|v| v.as_bytes()),
            Some(&b"2021-08-06"[..])
        );
    }
}
