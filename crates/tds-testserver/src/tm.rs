//! Transaction-manager requests (what drivers send for `BEGIN`/`COMMIT`/`ROLLBACK` when not
//! in autocommit), turned into the PostgreSQL statements they amount to.

use proxy_tds::codec::request::{
    TM_BEGIN_XACT, TM_COMMIT_XACT, TM_ROLLBACK_XACT, TM_SAVE_XACT, all_headers,
};
use proxy_tds::codec::text;

/// The SQL PostgreSQL runs for a transaction-manager request, or why there is none.
pub fn to_sql(payload: &[u8]) -> Result<String, String> {
    let (_, at) = all_headers(payload).map_err(|e| e.to_string())?;
    let p = &payload[at..];
    let request = p
        .get(..2)
        .map(|r| u16::from_le_bytes([r[0], r[1]]))
        .ok_or("truncated transaction request")?;
    let rest = &p[2..];
    let name = |b: &[u8]| -> Result<(String, usize), String> {
        if b.is_empty() {
            return Ok((String::new(), 0));
        }
        text::b_varchar(b, "transaction name").map_err(|e| e.to_string())
    };
    match request {
        TM_BEGIN_XACT => {
            let level = rest.first().copied().unwrap_or(0);
            Ok(begin(level))
        }
        TM_COMMIT_XACT | TM_ROLLBACK_XACT => {
            let (_, used) = name(rest)?;
            let verb = if request == TM_COMMIT_XACT {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            // fBeginXact: a new transaction follows at once, with its isolation level.
            match rest.get(used) {
                Some(&1) => {
                    let level = rest.get(used + 1).copied().unwrap_or(0);
                    Ok(format!("{verb}; {}", begin(level)))
                }
                _ => Ok(verb.to_string()),
            }
        }
        TM_SAVE_XACT => {
            let (n, _) = name(rest)?;
            if n.is_empty() || !n.chars().all(|c| c.is_alphanumeric() || c == '_') {
                return Err(format!("savepoint name {n:?} is not supported"));
            }
            Ok(format!("SAVEPOINT {n}"))
        }
        other => Err(format!(
            "transaction-manager request {other} (distributed transactions) is not supported"
        )),
    }
}

/// BEGIN at a TDS isolation level (0 keeps the session's).
fn begin(level: u8) -> String {
    let iso = match level {
        1 => " ISOLATION LEVEL READ UNCOMMITTED",
        2 => " ISOLATION LEVEL READ COMMITTED",
        3 => " ISOLATION LEVEL REPEATABLE READ",
        4 | 5 => " ISOLATION LEVEL SERIALIZABLE",
        _ => "",
    };
    format!("BEGIN{iso}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(kind: u16, rest: &[u8]) -> Vec<u8> {
        let mut p = 22u32.to_le_bytes().to_vec();
        p.extend_from_slice(&18u32.to_le_bytes());
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&kind.to_le_bytes());
        p.extend_from_slice(rest);
        p
    }

    #[test]
    fn requests_become_the_statements_they_amount_to() {
        assert_eq!(
            to_sql(&request(TM_BEGIN_XACT, &[2, 0])),
            Ok("BEGIN ISOLATION LEVEL READ COMMITTED".into())
        );
        assert_eq!(to_sql(&request(TM_COMMIT_XACT, &[0])), Ok("COMMIT".into()));
        assert_eq!(
            to_sql(&request(TM_ROLLBACK_XACT, &[0, 1, 0, 0])),
            Ok("ROLLBACK; BEGIN".into())
        );
        let mut save = vec![2u8];
        save.extend(text::encode("s1"));
        assert_eq!(
            to_sql(&request(TM_SAVE_XACT, &save)),
            Ok("SAVEPOINT s1".into())
        );
        assert!(to_sql(&request(1, &[])).is_err());
    }
}
