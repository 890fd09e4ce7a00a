//! Text-form arrays (`{a,"b c",NULL}`, with `[l:u]=` bounds) and composites / records
//! (`(1,"a b",)`), as PostgreSQL writes them: elements and fields unquoted, masked by their
//! types, and quoted again when replaced, so the literal stays one a client can parse.

use gateway_core::masking::Masked;

use super::shape::Shape;
use super::{Splice, Unreadable, Walker};

/// One element or field: where it is in the literal, and its value's bytes (`inner`), which
/// need unescaping when `escaped`. `None` inner: SQL NULL.
struct Item {
    start: usize,
    end: usize,
    inner: Option<(usize, usize)>,
    escaped: bool,
}

/// The items of a record literal `(a,"b",)`; `Err` when it is not one.
fn record_items(v: &[u8], mut each: impl FnMut(Item)) -> Result<(), Unreadable> {
    if v.first() != Some(&b'(') {
        return Err(Unreadable);
    }
    let mut i = 1;
    loop {
        let start = i;
        let mut escaped = false;
        let inner = match v.get(i) {
            Some(b',' | b')') => None,
            Some(b'"') => {
                i += 1;
                loop {
                    match v.get(i) {
                        None => return Err(Unreadable),
                        Some(b'\\') => {
                            escaped = true;
                            i += 2;
                        }
                        Some(b'"') if v.get(i + 1) == Some(&b'"') => {
                            escaped = true;
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                Some((start + 1, i - 1))
            }
            Some(_) => {
                while !matches!(v.get(i), Some(b',' | b')') | None) {
                    escaped |= v[i] == b'\\';
                    i += 1;
                }
                Some((start, i))
            }
            None => return Err(Unreadable),
        };
        if i > v.len() {
            return Err(Unreadable);
        }
        each(Item {
            start,
            end: i,
            inner,
            escaped,
        });
        match v.get(i) {
            Some(b',') => i += 1,
            Some(b')') if i + 1 == v.len() => return Ok(()),
            _ => return Err(Unreadable),
        }
    }
}

/// The elements of an array literal, at any depth; `Err` when it is not one.
fn array_items(v: &[u8], delim: u8, mut each: impl FnMut(Item)) -> Result<(), Unreadable> {
    let mut i = 0;
    if v.first() == Some(&b'[') {
        i = memchr::memchr(b'=', v).ok_or(Unreadable)? + 1;
    }
    if v.get(i) != Some(&b'{') {
        return Err(Unreadable);
    }
    let mut level = 0usize;
    while i < v.len() {
        match v[i] {
            b'{' => {
                level += 1;
                i += 1;
            }
            b'}' => {
                level = level.checked_sub(1).ok_or(Unreadable)?;
                i += 1;
                if level == 0 {
                    break;
                }
            }
            c if c == delim => i += 1,
            b'"' => {
                let start = i;
                let mut escaped = false;
                i += 1;
                loop {
                    match v.get(i) {
                        None => return Err(Unreadable),
                        Some(b'\\') => {
                            escaped = true;
                            i += 2;
                        }
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
                i += 1;
                each(Item {
                    start,
                    end: i,
                    inner: Some((start + 1, i - 1)),
                    escaped,
                });
            }
            _ => {
                let start = i;
                let mut escaped = false;
                while i < v.len() && v[i] != delim && v[i] != b'}' && v[i] != b'{' {
                    escaped |= v[i] == b'\\';
                    i += 1;
                }
                let token = &v[start..i];
                let inner = (!token.eq_ignore_ascii_case(b"NULL")).then_some((start, i));
                each(Item {
                    start,
                    end: i,
                    inner,
                    escaped,
                });
            }
        }
    }
    if level != 0 || i != v.len() {
        return Err(Unreadable);
    }
    Ok(())
}

/// `raw` with backslash escapes (and, in records, doubled quotes) undone.
fn unescape(raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut i = 0;
    while i < raw.len() {
        match raw[i] {
            b'\\' if i + 1 < raw.len() => {
                out.push(raw[i + 1]);
                i += 2;
            }
            b'"' if raw.get(i + 1) == Some(&b'"') => {
                out.push(b'"');
                i += 2;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
}

/// `value` quoted for an array (`\"`, `\\`) or a record (`""`, `\\`).
fn quote(value: &[u8], record: bool, out: &mut Vec<u8>) {
    out.push(b'"');
    for &b in value {
        match b {
            b'"' if record => out.extend_from_slice(b"\"\""),
            b'"' | b'\\' => {
                out.push(b'\\');
                out.push(b);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Items gathered before masking (the count must be known first for row types).
pub(super) type Items = Vec<(usize, usize, Option<(usize, usize)>, bool)>;

impl Walker<'_> {
    pub(super) fn text_array(
        &mut self,
        elem: &Shape,
        delim: u8,
        whole: Option<usize>,
        v: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<Masked, Unreadable> {
        let mut items = self.pool.take_items(depth);
        let parsed = array_items(v, delim, |it| {
            items.push((it.start, it.end, it.inner, it.escaped))
        });
        let m = parsed.map(|()| self.text_items(&items, v, out, depth, false, |_| (elem, whole)));
        self.pool.put_items(depth, items);
        m
    }

    pub(super) fn text_row(
        &mut self,
        shape: &Shape,
        whole: Option<usize>,
        v: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Result<Masked, Unreadable> {
        let mut items = self.pool.take_items(depth);
        if let Err(e) = record_items(v, |it| items.push((it.start, it.end, it.inner, it.escaped))) {
            self.pool.put_items(depth, items);
            return Err(e);
        }
        let fields = match shape {
            Shape::Row(f) => Some(f),
            _ => None,
        };
        // Fields other than the catalog named (the table changed since): all covered.
        let whole = match fields {
            Some(f) if f.len() != items.len() => whole.or(Some(usize::MAX)),
            _ => whole,
        };
        let m = self.text_items(&items, v, out, depth, true, |i| {
            match fields.and_then(|f| f.get(i)) {
                Some(f) => (&*f.shape, f.rule.or(whole)),
                None => (&Shape::Text, whole),
            }
        });
        self.pool.put_items(depth, items);
        Ok(m)
    }

    fn text_items<'s>(
        &mut self,
        items: &Items,
        v: &[u8],
        out: &mut Vec<u8>,
        depth: usize,
        record: bool,
        shape_of: impl Fn(usize) -> (&'s Shape, Option<usize>),
    ) -> Masked {
        let mut child = self.pool.take(2 * depth + 2);
        let mut plain = self.pool.take(2 * depth + 3);
        let mut splice = Splice::new(v);
        for (i, &(start, end, inner, escaped)) in items.iter().enumerate() {
            let Some((a, b)) = inner else { continue };
            let value = if escaped {
                unescape(&v[a..b], &mut plain);
                &plain[..]
            } else {
                &v[a..b]
            };
            let (shape, rule) = shape_of(i);
            match self.walk(shape, false, rule, value, &mut child, depth + 1) {
                Masked::Unchanged => {}
                Masked::Null => {
                    splice.cut(out, start, end);
                    if !record {
                        out.extend_from_slice(b"NULL");
                    }
                }
                Masked::Replaced => {
                    splice.cut(out, start, end);
                    quote(&child, record, out);
                }
            }
        }
        self.pool.put(2 * depth + 2, child);
        self.pool.put(2 * depth + 3, plain);
        splice.finish(out)
    }
}

/// The elements of a one-level array literal, unquoted (for tests).
#[cfg(test)]
pub(super) fn array_items_for_tests(v: &[u8], out: &mut Vec<String>) {
    let _ = array_items(v, b',', |it| {
        if let Some((a, b)) = it.inner {
            let mut buf = Vec::new();
            if it.escaped {
                unescape(&v[a..b], &mut buf);
            } else {
                buf.extend_from_slice(&v[a..b]);
            }
            out.push(String::from_utf8_lossy(&buf).into_owned());
        }
    });
}
