//! `sp_executesql` as PostgreSQL runs it: the statement's `@name` parameters become `$1..`
//! in the order of the declaration list, and the values are sent in PostgreSQL's text form.
//! Other procedures are refused.

use proxy_tds::codec::rpc::{Rpc, RpcParam, SpecialProc};
use proxy_tds::codec::rpc_types::ParamValue;

/// An RPC this server can run: the statement for PostgreSQL and its parameter values.
#[derive(Debug, PartialEq, Eq)]
pub struct Prepared {
    pub sql: String,
    pub params: Vec<Option<String>>,
}

/// The PostgreSQL statement and parameters for `rpc`, or why it cannot run here.
pub fn prepare(rpc: &Rpc) -> Result<Prepared, String> {
    let is_executesql = matches!(rpc.special(), Ok(Some(SpecialProc::ExecuteSql)));
    if !is_executesql {
        return Err(format!(
            "procedure {:?} is not supported by this test server (only sp_executesql)",
            rpc.proc
        ));
    }
    let text = |p: Option<&RpcParam>| match p.map(|p| &p.value) {
        Some(ParamValue::Text(t)) => Some(t.clone()),
        _ => None,
    };
    let statement = text(rpc.params.first()).ok_or("sp_executesql without a statement")?;
    let declared = text(rpc.params.get(1)).unwrap_or_default();
    let names = declared_names(&declared);
    let values = rpc.params.get(2..).unwrap_or(&[]);
    let mut params = vec![None; names.len()];
    for (i, p) in values.iter().enumerate() {
        // Named values go to their name; unnamed ones by position.
        let slot = if p.name.is_empty() {
            Some(i)
        } else {
            names.iter().position(|n| n.eq_ignore_ascii_case(&p.name))
        };
        let slot = slot
            .filter(|s| *s < names.len())
            .ok_or_else(|| format!("parameter {:?} is not declared", p.name))?;
        params[slot] = param_text(p)?;
    }
    Ok(Prepared {
        sql: rewrite(&crate::tsql::translate(&statement), &names),
        params,
    })
}

/// `@a int, @b nvarchar(10)` → `["@a", "@b"]`.
fn declared_names(decl: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    let mut push = |part: &str| {
        if let Some(name) = part
            .split_whitespace()
            .next()
            .filter(|n| n.starts_with('@'))
        {
            names.push(name.to_string());
        }
    };
    for (i, c) in decl.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                push(&decl[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&decl[start..]);
    names
}

/// A parameter's value as PostgreSQL reads it in text form.
fn param_text(p: &RpcParam) -> Result<Option<String>, String> {
    Ok(match &p.value {
        ParamValue::Null => None,
        ParamValue::Text(t) => Some(t.clone()),
        ParamValue::Int(i) => Some(i.to_string()),
        ParamValue::Other(raw) => Some(match (p.type_code(), raw.len()) {
            // FLTN
            (0x6D, 4) => f32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]).to_string(),
            (0x6D, 8) => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw[..]);
                f64::from_le_bytes(b).to_string()
            }
            // BITN
            (0x68, 1) => (raw[0] != 0).to_string(),
            // GUID, first three groups little-endian
            (0x24, 16) => format!(
                "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{}",
                raw[3],
                raw[2],
                raw[1],
                raw[0],
                raw[5],
                raw[4],
                raw[7],
                raw[6],
                hex(&raw[8..10]) + "-" + &hex(&raw[10..])
            ),
            // VARBINARY
            (0xA5 | 0xAD, _) => format!("\\x{}", hex(raw)),
            (ty, _) => {
                return Err(format!(
                    "parameter {:?} of type {ty:#04x} is not supported by this test server",
                    p.name
                ));
            }
        }),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Replace each `@name` in `sql` that is a declared parameter with `$n`, outside string
/// literals, quoted identifiers, dollar quotes and comments.
pub fn rewrite(sql: &str, names: &[String]) -> String {
    let b = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut i = 0;
    let mut copied = 0;
    let ident = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'@' | b'#' | b'$');
    while i < b.len() {
        let skip_to = match b[i] {
            b'\'' | b'"' => closing(b, i + 1, b[i]),
            b'-' if b.get(i + 1) == Some(&b'-') => find(b, i, b"\n").unwrap_or(b.len()),
            b'/' if b.get(i + 1) == Some(&b'*') => block_comment_end(b, i + 2),
            b'$' => dollar_quote_end(b, i),
            b'@' if i == 0 || !ident(b[i - 1]) => {
                let end = (i + 1..b.len()).find(|&j| !ident(b[j])).unwrap_or(b.len());
                if let Some(n) = names
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(&sql[i..end]))
                {
                    out.push_str(&sql[copied..i]);
                    out.push_str(&format!("${}", n + 1));
                    copied = end;
                }
                end
            }
            _ => i + 1,
        };
        i = skip_to.max(i + 1);
    }
    out.push_str(&sql[copied..]);
    out
}

fn find(b: &[u8], from: usize, what: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(what.len())
        .position(|w| w == what)
        .map(|p| from + p)
}

/// Past the quote closing a literal opened just before `from` (a doubled quote escapes).
fn closing(b: &[u8], mut from: usize, q: u8) -> usize {
    while from < b.len() {
        if b[from] == q {
            if b.get(from + 1) == Some(&q) {
                from += 2;
                continue;
            }
            return from + 1;
        }
        from += 1;
    }
    b.len()
}

fn block_comment_end(b: &[u8], mut at: usize) -> usize {
    let mut depth = 1;
    while at < b.len() {
        if b[at..].starts_with(b"/*") {
            depth += 1;
            at += 2;
        } else if b[at..].starts_with(b"*/") {
            depth -= 1;
            at += 2;
            if depth == 0 {
                return at;
            }
        } else {
            at += 1;
        }
    }
    b.len()
}

/// Past a `$tag$ ... $tag$` quote starting at `at`; just past `$` when it starts none.
fn dollar_quote_end(b: &[u8], at: usize) -> usize {
    let tag_end = (at + 1..b.len()).find(|&j| !(b[j].is_ascii_alphanumeric() || b[j] == b'_'));
    match tag_end {
        Some(e) if b[e] == b'$' && !b.get(at + 1).is_some_and(u8::is_ascii_digit) => {
            let tag = &b[at..=e];
            find(b, e + 1, tag).map_or(b.len(), |p| p + tag.len())
        }
        _ => at + 1,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]
    use super::*;

    #[test]
    fn parameters_become_positional_outside_quotes_and_comments() {
        let names = declared_names("@P1 int, @p2 nvarchar(10), @P3 decimal(10,2)");
        assert_eq!(names, ["@P1", "@p2", "@P3"]);
        assert_eq!(
            rewrite(
                "select @p1, '@P1', \"@P2\", @P2 -- @P1\n, $$ @P3 $$, @P3, a@P1, @P10 /* @P1 */",
                &names
            ),
            "select $1, '@P1', \"@P2\", $2 -- @P1\n, $$ @P3 $$, $3, a@P1, @P10 /* @P1 */"
        );
        assert_eq!(
            rewrite("select 'it''s @P1', @P1", &names),
            "select 'it''s @P1', $1"
        );
    }

    #[test]
    fn values_are_sent_in_text_form_and_unknown_procedures_refused() {
        use bytes::Bytes;
        use proxy_tds::codec::rpc::ProcRef;
        use proxy_tds::codec::rpc_types::{Framing, TypeInfo};
        let p = |name: &str, code: u8, value: ParamValue| RpcParam {
            name: name.into(),
            status: 0,
            type_info: TypeInfo {
                code,
                framing: Framing::ByteLen,
                max_len: 8,
                precision: 0,
                scale: 0,
                collation: None,
                xml_schema: None,
            },
            value,
        };
        let rpc = Rpc {
            proc: ProcRef::Id(SpecialProc::ExecuteSql.id()),
            flags: 0,
            params: vec![
                p(
                    "",
                    0xE7,
                    ParamValue::Text("select @P1 + @P2, @P3, @P4".into()),
                ),
                p(
                    "",
                    0xE7,
                    ParamValue::Text("@P1 int,@P2 float,@P3 nvarchar(4),@P4 bit".into()),
                ),
                p("@P1", 0x26, ParamValue::Int(-7)),
                p(
                    "@P2",
                    0x6D,
                    ParamValue::Other(Bytes::copy_from_slice(&1.5f64.to_le_bytes())),
                ),
                p("@P3", 0xE7, ParamValue::Null),
                p("@P4", 0x68, ParamValue::Other(Bytes::from_static(&[1]))),
            ],
        };
        let prepared = prepare(&rpc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(prepared.sql, "select $1 + $2, $3, $4");
        assert_eq!(
            prepared.params,
            [
                Some("-7".into()),
                Some("1.5".into()),
                None,
                Some("true".into())
            ]
        );
        let other = Rpc {
            proc: ProcRef::Name("dbo.report".into()),
            ..rpc
        };
        assert!(prepare(&other).is_err());
    }
}
