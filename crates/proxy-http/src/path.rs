//! Request paths as policy sees them: percent-decoded, dot segments resolved, repeated
//! slashes collapsed, so `/a/%2e%2e/b`, `/a/./b` and `//b` are decided as the resource they
//! name. Spellings that could be read two ways by the gateway and the target (an encoded `/`
//! or `\`, a control byte, a double-encoded escape, bad escapes, text that is not UTF-8) are
//! refused. The target is sent the normalised path, re-encoded, so it acts on exactly what
//! was decided. Pure functions over strings.

/// Longest request path accepted (bytes, before decoding).
pub const MAX_PATH: usize = 8 * 1024;

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path does not start with `/`")]
    NotAbsolute,
    #[error("the path is longer than {MAX_PATH} bytes")]
    TooLong,
    #[error("the path has a malformed percent escape")]
    BadEscape,
    #[error("the path encodes a `/` or `\\` inside a segment (%2F, %5C)")]
    EncodedSeparator,
    #[error("the path holds a control character or NUL")]
    Control,
    #[error("the path is encoded twice (an escape decodes to another escape)")]
    DoubleEncoded,
    #[error("the path is not UTF-8 once decoded")]
    NotUtf8,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decode one segment into `out`.
fn decode_segment(seg: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let start = out.len();
    let mut i = 0;
    while i < seg.len() {
        let b = seg[i];
        let b = if b == b'%' {
            let (Some(h), Some(l)) = (
                seg.get(i + 1).copied().and_then(hex),
                seg.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            i += 3;
            let d = h << 4 | l;
            if d == b'/' || d == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            d
        } else {
            if b == b'\\' {
                return Err(PathError::EncodedSeparator);
            }
            i += 1;
            b
        };
        if b < 0x20 || b == 0x7f {
            return Err(PathError::Control);
        }
        out.push(b);
    }
    // `%25` followed by two hex digits: an escape of an escape, which a target that decodes
    // twice would read as something else than policy did.
    let decoded = &out[start..];
    if decoded
        .windows(3)
        .any(|w| w[0] == b'%' && hex(w[1]).is_some() && hex(w[2]).is_some())
    {
        return Err(PathError::DoubleEncoded);
    }
    Ok(())
}

/// A normalised path: the decoded form policy decides on, and the encoded form sent on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    /// Decoded, e.g. `/subscriptions/s 1/resourceGroups/rg`.
    pub decoded: String,
    /// The same, percent-encoded for the request line, e.g. `/subscriptions/s%201/...`.
    pub encoded: String,
}

/// Normalise the path of a request target (the part before `?`).
pub fn normalise(raw: &str) -> Result<Normalised, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(PathError::NotAbsolute);
    };
    let mut segments: Vec<Vec<u8>> = Vec::new();
    let mut trailing = false;
    for seg in rest.split('/') {
        let mut d = Vec::with_capacity(seg.len());
        decode_segment(seg.as_bytes(), &mut d)?;
        match d.as_slice() {
            b"" | b"." => trailing = true,
            b".." => {
                segments.pop();
                trailing = true;
            }
            _ => {
                segments.push(d);
                trailing = false;
            }
        }
    }
    let mut decoded = String::with_capacity(raw.len());
    let mut encoded = String::with_capacity(raw.len());
    for s in &segments {
        let text = std::str::from_utf8(s).map_err(|_| PathError::NotUtf8)?;
        decoded.push('/');
        decoded.push_str(text);
        encoded.push('/');
        encode_segment(s, &mut encoded);
    }
    if trailing || segments.is_empty() {
        decoded.push('/');
        encoded.push('/');
    }
    Ok(Normalised { decoded, encoded })
}

/// Normalise a query for policy: each `name=value` percent-decoded (`+` kept as written),
/// sorted, joined by `&`, so `comp=%61cl` and a reordered query read as what they say.
/// Malformed escapes and control bytes are refused as in paths.
pub fn normalise_query(raw: &str) -> Result<String, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let mut pairs = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let mut d = Vec::with_capacity(pair.len());
        for (i, part) in pair.splitn(2, '=').enumerate() {
            if i == 1 {
                d.push(b'=');
            }
            decode_query(part.as_bytes(), &mut d)?;
        }
        pairs.push(String::from_utf8(d).map_err(|_| PathError::NotUtf8)?);
    }
    pairs.sort();
    Ok(pairs.join("&"))
}

/// The query's parameters in order, each name and value percent-decoded and `+` read as a
/// space (as HTML forms and Go's `url.ParseQuery` read them). Malformed escapes and control
/// bytes are refused as in paths.
pub fn query_pairs(raw: &str) -> Result<Vec<(String, String)>, PathError> {
    if raw.len() > MAX_PATH {
        return Err(PathError::TooLong);
    }
    let mut pairs = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let mut text = [String::new(), String::new()];
        for (part, out) in [k, v].into_iter().zip(text.iter_mut()) {
            let spaced = part.replace('+', " ");
            let mut d = Vec::with_capacity(spaced.len());
            decode_query(spaced.as_bytes(), &mut d)?;
            *out = String::from_utf8(d).map_err(|_| PathError::NotUtf8)?;
        }
        let [k, v] = text;
        pairs.push((k, v));
    }
    Ok(pairs)
}

/// Percent-decode one query component into `out` (an encoded `/` is fine here).
fn decode_query(s: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    let mut i = 0;
    while i < s.len() {
        let b = if s[i] == b'%' {
            let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(PathError::BadEscape);
            };
            i += 3;
            h << 4 | l
        } else {
            i += 1;
            s[i - 1]
        };
        if b < 0x20 || b == 0x7f {
            return Err(PathError::Control);
        }
        out.push(b);
    }
    Ok(())
}

/// Percent-encode a decoded segment: RFC 3986 `pchar` stays, everything else is escaped.
fn encode_segment(s: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in s {
        let keep = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'@'
            );
        if keep {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
