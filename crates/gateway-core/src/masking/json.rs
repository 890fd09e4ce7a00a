//! JSON values: detectors run inside every string (and on bare numbers, whose replacement is
//! quoted so the document stays valid), and a field whose key matches a column rule's column
//! pattern, or names a secret, is replaced whole, whatever it holds. The walk is tolerant: on
//! text that is not JSON it degrades to the plain text scan, never to passing bytes unseen.

use super::Rewriter;

/// Why a field is masked whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    Column(usize),
    Secret,
}

/// Index just past the string starting with the quote at `i` (or the end when unterminated).
fn string_end(v: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < v.len() {
        match memchr::memchr2(b'"', b'\\', &v[j..]) {
            None => return v.len(),
            Some(p) if v[j + p] == b'\\' => j += p + 2,
            Some(p) => return j + p + 1,
        }
    }
    v.len()
}

/// Index just past the object or array opening at `i`.
fn close(v: &[u8], i: usize) -> usize {
    let mut depth = 0usize;
    let mut j = i;
    while j < v.len() {
        match v[j] {
            b'"' => {
                j = string_end(v, j);
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return j + 1;
                }
            }
            _ => {}
        }
        j += 1;
    }
    v.len()
}

fn literal_end(v: &[u8], mut j: usize) -> usize {
    while j < v.len() && !matches!(v[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
        j += 1;
    }
    j
}

fn skip_ws(v: &[u8], mut j: usize) -> usize {
    while j < v.len() && matches!(v[j], b' ' | b'\t' | b'\r' | b'\n') {
        j += 1;
    }
    j
}

/// Mask one JSON document into `w`.
pub(crate) fn walk(v: &[u8], w: &mut Rewriter<'_>) {
    let n = v.len();
    let (mut i, mut seg) = (0, 0);
    let mut pending: Option<Why> = None;
    while i < n {
        match v[i] {
            b'"' => {
                let end = string_end(v, i);
                w.scan_bare(v, seg, i);
                let content_end = if end > i + 1 && v[end - 1] == b'"' {
                    end - 1
                } else {
                    end
                };
                let k = skip_ws(v, end);
                if k < n && v[k] == b':' {
                    pending = w.session.field_rule(&v[i + 1..content_end]);
                    if pending.is_none() {
                        w.scan_string(v, i + 1, content_end);
                    }
                } else if let Some(why) = pending.take() {
                    w.field(i, end, why);
                } else {
                    w.scan_string(v, i + 1, content_end);
                }
                i = end;
                seg = end;
            }
            b'{' | b'[' if pending.is_some() => {
                let end = close(v, i);
                w.scan_bare(v, seg, i);
                if let Some(why) = pending.take() {
                    w.field(i, end, why);
                }
                i = end;
                seg = end;
            }
            b',' | b'}' | b']' => {
                pending = None;
                i += 1;
            }
            c if pending.is_some()
                && (c == b'-' || c.is_ascii_digit() || c == b't' || c == b'f') =>
            {
                let end = literal_end(v, i);
                w.scan_bare(v, seg, i);
                if let Some(why) = pending.take() {
                    w.field(i, end, why);
                }
                i = end;
                seg = end;
            }
            _ => i += 1,
        }
    }
    w.scan_bare(v, seg, n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_helpers() {
        assert_eq!(string_end(br#""a\"b" x"#, 0), 6);
        assert_eq!(string_end(br#""abc"#, 0), 4);
        assert_eq!(close(br#"{"a":[1,"]"],"b":{}} x"#, 0), 20);
        assert_eq!(close(b"[[1]", 0), 4);
        assert_eq!(literal_end(b"123, 4", 0), 3);
    }
}
