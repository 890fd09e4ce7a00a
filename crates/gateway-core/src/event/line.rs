//! An event as one JSON line: the form the journal, the store's blocks and the JSON-lines
//! sink all hold, built from the canonical body by splicing in the chain fields.

use super::AuditEvent;
use super::chain::{canonical_body, chain_hash};
use crate::error::{Error, Result};

/// What a canonical body starts and ends with: the chain fields blanked. A journal line is
/// the body with those three fields filled in, so it is built from the body by splicing
/// rather than by serialising the event a second time.
const BODY_HEAD: &str = "{\"seq\":0,";
const BODY_TAIL: &str = ",\"prev_hash\":\"\",\"hash\":\"\"}";
const LINE_HEAD: &str = "{\"seq\":";
const LINE_PREV: &str = ",\"prev_hash\":\"";

/// Append `ev` (chain fields set) as one JSON line, built from its canonical `body`.
pub(crate) fn push_line(buf: &mut Vec<u8>, ev: &AuditEvent, body: &str) -> Result<()> {
    match body
        .strip_prefix(BODY_HEAD)
        .and_then(|b| b.strip_suffix(BODY_TAIL))
    {
        // Hashes are hex, so they need no escaping.
        Some(middle) => {
            buf.reserve(middle.len() + ev.prev_hash.len() + ev.hash.len() + 64);
            buf.extend_from_slice(LINE_HEAD.as_bytes());
            buf.extend_from_slice(itoa::Buffer::new().format(ev.seq).as_bytes());
            buf.push(b',');
            buf.extend_from_slice(middle.as_bytes());
            buf.extend_from_slice(LINE_PREV.as_bytes());
            buf.extend_from_slice(ev.prev_hash.as_bytes());
            buf.extend_from_slice(b"\",\"hash\":\"");
            buf.extend_from_slice(ev.hash.as_bytes());
            buf.extend_from_slice(b"\"}");
        }
        // Not the expected shape (cannot happen with the derived serialiser): say it in full.
        None => serde_json::to_writer(&mut *buf, ev)
            .map_err(|e| Error::Audit(format!("cannot serialise event {}: {e}", ev.seq)))?,
    }
    buf.push(b'\n');
    Ok(())
}

/// The canonical body inside a journal line: the inverse of [`push_line`].
pub(crate) fn splice_body(line: &str) -> Option<String> {
    let rest = line.strip_prefix(LINE_HEAD)?;
    let rest = &rest[rest.find(',')? + 1..];
    // The last `,"prev_hash":"` is the event's own: the chain fields come last, and inside
    // strings a quote is escaped.
    let middle = &rest[..rest.rfind(LINE_PREV)?];
    Some(format!("{BODY_HEAD}{middle}{BODY_TAIL}"))
}

/// Parse one journal line (without its newline) and check it against its own hash.
pub(crate) fn parse_line(line: &[u8]) -> Result<AuditEvent> {
    let event: AuditEvent = serde_json::from_slice(line)
        .map_err(|e| Error::Audit(format!("not an audit event: {e}")))?;
    let matches = |body: &String| chain_hash(&event.prev_hash, event.seq, body) == event.hash;
    let intact = std::str::from_utf8(line)
        .ok()
        .and_then(splice_body)
        .filter(matches)
        .or_else(|| canonical_body(&event).ok().filter(matches))
        .is_some();
    if !intact {
        return Err(Error::Audit(format!(
            "event {}: content does not match its hash",
            event.seq
        )));
    }
    Ok(event)
}
