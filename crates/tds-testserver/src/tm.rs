//! Transaction-manager requests (what drivers send for `BEGIN`/`COMMIT`/`ROLLBACK` when not
//! in autocommit), turned into the PostgreSQL statements they amount to.

use bytes::Bytes;
use proxy_tds::codec::request::{TransMgr, tm};

/// The SQL PostgreSQL runs for a transaction-manager request, or why there is none.
pub fn to_sql(payload: &[u8]) -> Result<String, String> {
    let req = TransMgr::parse(&Bytes::copy_from_slice(payload)).map_err(|e| e.to_string())?;
    match req.request {
        tm::BEGIN_XACT => Ok(begin(req.isolation_level.unwrap_or(0))),
        tm::COMMIT_XACT | tm::ROLLBACK_XACT => {
            let verb = if req.request == tm::COMMIT_XACT {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            // fBeginXact: a new transaction follows at once, with its isolation level.
            match req.begin_after {
                Some(next) => Ok(format!("{verb}; {}", begin(next.isolation_level))),
                None => Ok(verb.to_string()),
            }
        }
        tm::SAVE_XACT => {
            let n = req.name.unwrap_or_default();
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
    use proxy_tds::codec::text;

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
            to_sql(&request(tm::BEGIN_XACT, &[2, 0])),
            Ok("BEGIN ISOLATION LEVEL READ COMMITTED".into())
        );
        assert_eq!(
            to_sql(&request(tm::COMMIT_XACT, &[0, 0])),
            Ok("COMMIT".into())
        );
        assert_eq!(
            to_sql(&request(tm::ROLLBACK_XACT, &[0, 1, 0, 0])),
            Ok("ROLLBACK; BEGIN".into())
        );
        let mut save = vec![4u8]; // B_VARBYTE: the name's byte count
        save.extend(text::encode("s1"));
        assert_eq!(
            to_sql(&request(tm::SAVE_XACT, &save)),
            Ok("SAVEPOINT s1".into())
        );
        assert!(to_sql(&request(1, &[])).is_err());
    }
}
