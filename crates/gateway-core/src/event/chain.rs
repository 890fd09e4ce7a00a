//! The audit hash chain, shared by every store backend so that a chain written by one can be
//! verified by any other: `hash = hex(SHA-256(prev_hash || "\n" || seq || "\n" || body))`
//! where `body` is the event's canonical JSON (the event with `seq`, `prev_hash` and `hash`
//! blanked).

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::AuditEvent;
use crate::error::{Error, Result};

/// `prev_hash` of the first event in a chain.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The canonical JSON of `ev`: what is stored as the event's body and what its hash covers.
/// serde_json writes struct fields in declaration order, so this is deterministic.
pub fn canonical_body(ev: &AuditEvent) -> Result<String> {
    let ev: Cow<'_, AuditEvent> = if ev.seq == 0 && ev.prev_hash.is_empty() && ev.hash.is_empty() {
        Cow::Borrowed(ev)
    } else {
        let mut blank = ev.clone();
        blank.seq = 0;
        blank.prev_hash.clear();
        blank.hash.clear();
        Cow::Owned(blank)
    };
    // Most events fit: one allocation rather than growing from serde_json's default.
    let mut out = Vec::with_capacity(1024);
    serde_json::to_writer(&mut out, ev.as_ref())
        .map_err(|e| Error::Audit(format!("cannot serialise event: {e}")))?;
    String::from_utf8(out).map_err(|e| Error::Audit(format!("cannot serialise event: {e}")))
}

/// The hash of the event at `seq` with canonical `body`, following `prev_hash`.
pub fn chain_hash(prev_hash: &str, seq: u64, body: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(itoa::Buffer::new().format(seq).as_bytes());
    h.update(b"\n");
    h.update(body.as_bytes());
    crate::util::hex_lower(&h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventKind;

    #[test]
    fn canonical_body_ignores_chain_fields() {
        let ev = AuditEvent::new(EventKind::Command, "s1");
        let mut chained = ev.clone();
        chained.seq = 9;
        chained.prev_hash = GENESIS_HASH.to_string();
        chained.hash = "ab".repeat(32);
        assert_eq!(
            canonical_body(&ev).unwrap(),
            canonical_body(&chained).unwrap()
        );
    }

    #[test]
    fn hash_is_lower_case_hex_of_the_digest() {
        // Known answer: SHA-256 of "0…0\n1\n{}" (the genesis hash, seq 1, an empty body).
        let mut h = Sha256::new();
        h.update(format!("{GENESIS_HASH}\n1\n{{}}").as_bytes());
        assert_eq!(chain_hash(GENESIS_HASH, 1, "{}"), hex::encode(h.finalize()));
        assert_eq!(
            crate::util::hex_lower(&[0x00, 0x9f, 0xa0, 0xff]),
            "009fa0ff"
        );
    }

    #[test]
    fn hash_depends_on_every_input() {
        let h = chain_hash(GENESIS_HASH, 1, "{}");
        assert_eq!(h.len(), 64);
        assert_ne!(h, chain_hash(GENESIS_HASH, 2, "{}"));
        assert_ne!(h, chain_hash(&"1".repeat(64), 1, "{}"));
        assert_ne!(h, chain_hash(GENESIS_HASH, 1, "{ }"));
    }
}
