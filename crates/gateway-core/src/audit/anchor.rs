//! Anchors: the chain's head (count and hash), signed by the gateway's own key and written to
//! a second sink that can be kept elsewhere — the way CloudTrail's digest files vouch for its
//! log files. A chain cut at its tail, a missing segment or a rewritten stretch still links up
//! on its own; it no longer matches the last anchor written before the damage.
//!
//! An anchor is one JSON line:
//! `{"seq":N,"hash":"…","time_us":T,"key":"<key id>","sig":"<base64 Ed25519 signature>"}`,
//! the signature over `portcullis-audit-anchor/1\n<seq>\n<hash>\n<time_us>\n`. The key id is
//! the first 16 hex digits of SHA-256 over the raw public key; the public key itself is in
//! `<state_dir>/audit-anchor.pub` (base64), to copy wherever anchors are checked.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The private key's file under the state directory.
pub const KEY_FILE: &str = "audit-anchor.key";
/// The public key's file under the state directory (base64 of the raw key, one line).
pub const PUBLIC_KEY_FILE: &str = "audit-anchor.pub";
/// Where anchors go when the config names no other place.
pub const DEFAULT_ANCHORS_FILE: &str = "audit-anchors.jsonl";
/// Longest anchors file read; far beyond years of anchors at the shortest interval.
const MAX_ANCHORS_BYTES: u64 = 256 << 20;

/// One signed chain head.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anchor {
    /// Events in the chain (the seq of the last).
    pub seq: u64,
    /// Hash of event `seq`.
    pub hash: String,
    /// When it was signed, microseconds since the epoch.
    pub time_us: i64,
    /// Id of the signing key.
    pub key: String,
    /// Base64 Ed25519 signature.
    pub sig: String,
}

impl Anchor {
    fn message(seq: u64, hash: &str, time_us: i64) -> String {
        format!("portcullis-audit-anchor/1\n{seq}\n{hash}\n{time_us}\n")
    }

    /// Whether the signature is `key`'s (a raw Ed25519 public key) over this anchor.
    pub fn signed_by(&self, key: &[u8]) -> bool {
        let Ok(sig) = STANDARD.decode(&self.sig) else {
            return false;
        };
        key_id(key) == self.key
            && UnparsedPublicKey::new(&ED25519, key)
                .verify(
                    Anchor::message(self.seq, &self.hash, self.time_us).as_bytes(),
                    &sig,
                )
                .is_ok()
    }
}

/// The id of a raw public key.
pub fn key_id(public: &[u8]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// The gateway's anchor signing key.
pub struct AnchorKey {
    pair: Ed25519KeyPair,
    id: String,
}

impl std::fmt::Debug for AnchorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnchorKey").field("id", &self.id).finish()
    }
}

impl AnchorKey {
    /// Load the key from the state directory, creating it (0600) and its public half on
    /// first use.
    pub fn load_or_create(state_dir: &Path) -> Result<AnchorKey> {
        let path = state_dir.join(KEY_FILE);
        let pkcs8 = crate::util::load_or_create_private(&path, "audit anchor key", || {
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                .map(|doc| doc.as_ref().to_vec())
                .map_err(|_| Error::Audit("cannot generate the audit anchor key".into()))
        })?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| {
            Error::Audit(format!(
                "{}: not an Ed25519 PKCS#8 private key: {e}",
                path.display()
            ))
        })?;
        let key = AnchorKey {
            id: key_id(pair.public_key().as_ref()),
            pair,
        };
        let public = state_dir.join(PUBLIC_KEY_FILE);
        let line = format!("{}\n", key.public_b64());
        if std::fs::read_to_string(&public).ok().as_deref() != Some(line.as_str()) {
            std::fs::write(&public, line)?;
        }
        Ok(key)
    }

    /// The raw public key.
    pub fn public(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// The public key, base64.
    pub fn public_b64(&self) -> String {
        STANDARD.encode(self.public())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sign the head `seq`/`hash` as of `time_us`.
    pub fn sign(&self, seq: u64, hash: &str, time_us: i64) -> Anchor {
        let sig = self
            .pair
            .sign(Anchor::message(seq, hash, time_us).as_bytes());
        Anchor {
            seq,
            hash: hash.to_string(),
            time_us,
            key: self.id.clone(),
            sig: STANDARD.encode(sig.as_ref()),
        }
    }
}

/// Read a public key file: base64 of the raw key, as [`PUBLIC_KEY_FILE`] holds it.
pub fn read_public_key(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Audit(format!("{}: {e}", path.display())))?;
    let key = STANDARD.decode(text.trim()).map_err(|_| {
        Error::Audit(format!(
            "{}: not a base64 Ed25519 public key",
            path.display()
        ))
    })?;
    if key.len() != 32 {
        return Err(Error::Audit(format!(
            "{}: an Ed25519 public key is 32 bytes, this is {}",
            path.display(),
            key.len()
        )));
    }
    Ok(key)
}

/// The anchors in `path`, in file order; none if it does not exist. A torn last line (a
/// write cut short) is left out; any other line that is not an anchor is an error.
pub fn read_anchors(path: &Path) -> Result<Vec<Anchor>> {
    let data = match std::fs::metadata(path) {
        Ok(m) if m.len() > MAX_ANCHORS_BYTES => {
            return Err(Error::Audit(format!(
                "{}: larger than {} MiB; rotate it",
                path.display(),
                MAX_ANCHORS_BYTES >> 20
            )));
        }
        Ok(_) => std::fs::read(path)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::Audit(format!("{}: {e}", path.display()))),
    };
    let mut out = Vec::new();
    for (n, line) in data.split_inclusive(|b| *b == b'\n').enumerate() {
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let anchor = serde_json::from_slice(line).map_err(|e| {
            Error::Audit(format!(
                "{} line {}: not an anchor: {e}",
                path.display(),
                n + 1
            ))
        })?;
        out.push(anchor);
    }
    Ok(out)
}

/// The file anchors are appended to.
#[derive(Debug)]
pub struct AnchorFile {
    path: PathBuf,
}

impl AnchorFile {
    pub fn new(path: PathBuf) -> AnchorFile {
        AnchorFile { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append `anchor` as one line and sync it.
    pub fn append(&self, anchor: &Anchor) -> Result<()> {
        let mut line = serde_json::to_vec(anchor)
            .map_err(|e| Error::Audit(format!("cannot serialise an anchor: {e}")))?;
        line.push(b'\n');
        let written = (|| -> std::io::Result<()> {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            f.write_all(&line)?;
            f.sync_data()
        })();
        written.map_err(|e| {
            Error::Audit(format!(
                "cannot write the audit anchor to {}: {e}",
                self.path.display()
            ))
        })
    }
}

/// What a chain head must satisfy against the anchors signed by `key`: none of them covers
/// events the chain does not have, and the one at the head (if any) has the head's hash.
/// Returns a message for an operator when not. Anchors of other keys are not this
/// gateway's and are left to `audit verify`.
pub fn check_head(anchors: &[Anchor], key: &[u8], head: (u64, &str)) -> Option<String> {
    let id = key_id(key);
    let last = anchors
        .iter()
        .filter(|a| a.key == id && a.signed_by(key))
        .max_by_key(|a| a.seq)?;
    if last.seq > head.0 {
        return Some(format!(
            "the audit chain ends at event {} but an anchor signed at {} covers {} events: \
             events {} to {} are missing (cut from the journal or the store); \
             run `portcullis audit verify`",
            head.0,
            crate::timefmt::rfc3339_micros(last.time_us),
            last.seq,
            head.0 + 1,
            last.seq
        ));
    }
    if last.seq == head.0 && last.hash != head.1 {
        return Some(format!(
            "event {} does not match the anchor signed at {} (the chain was rewritten); \
             run `portcullis audit verify`",
            head.0,
            crate::timefmt::rfc3339_micros(last.time_us),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::sqlite::tests::TempDir;

    #[test]
    fn signs_and_verifies_and_detects_any_change() {
        let tmp = TempDir::new("anchor");
        let d = tmp.path().to_path_buf();
        let key = AnchorKey::load_or_create(&d).unwrap();
        let a = key.sign(7, &"ab".repeat(32), 1_700_000_000_000_000);
        assert!(a.signed_by(key.public()));
        for changed in [
            Anchor {
                seq: 8,
                ..a.clone()
            },
            Anchor {
                hash: "cd".repeat(32),
                ..a.clone()
            },
            Anchor {
                time_us: a.time_us + 1,
                ..a.clone()
            },
        ] {
            assert!(!changed.signed_by(key.public()));
        }
        // Same key on the next load; the public file holds it.
        let again = AnchorKey::load_or_create(&d).unwrap();
        assert_eq!(again.public(), key.public());
        assert_eq!(
            read_public_key(&d.join(PUBLIC_KEY_FILE)).unwrap(),
            key.public()
        );
        let other = AnchorKey::load_or_create(TempDir::new("anchor").path()).unwrap();
        assert!(!a.signed_by(other.public()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn file_round_trip_skips_a_torn_line_and_rejects_garbage() {
        let tmp = TempDir::new("anchor");
        let d = tmp.path().to_path_buf();
        let key = AnchorKey::load_or_create(&d).unwrap();
        let file = AnchorFile::new(d.join("a/anchors.jsonl"));
        let a1 = key.sign(1, &"11".repeat(32), 1);
        let a2 = key.sign(5, &"22".repeat(32), 2);
        file.append(&a1).unwrap();
        file.append(&a2).unwrap();
        let mut f = OpenOptions::new().append(true).open(file.path()).unwrap();
        f.write_all(b"{\"seq\":9,").unwrap();
        assert_eq!(read_anchors(file.path()).unwrap(), vec![a1, a2]);
        f.write_all(b"\n").unwrap();
        let err = read_anchors(file.path()).unwrap_err().to_string();
        assert!(err.contains("line 3: not an anchor"), "{err}");
        assert!(read_anchors(&d.join("none")).unwrap().is_empty());
    }

    #[test]
    fn head_behind_or_off_its_anchor_is_reported() {
        let key = AnchorKey::load_or_create(TempDir::new("anchor").path()).unwrap();
        let h = "11".repeat(32);
        let anchors = vec![key.sign(3, &"00".repeat(32), 1), key.sign(5, &h, 2)];
        assert_eq!(check_head(&anchors, key.public(), (5, &h)), None);
        assert_eq!(check_head(&anchors, key.public(), (9, "x")), None);
        let behind = check_head(&anchors, key.public(), (4, "x")).unwrap();
        assert!(behind.contains("events 5 to 5 are missing"), "{behind}");
        let off = check_head(&anchors, key.public(), (5, "x")).unwrap();
        assert!(off.contains("event 5 does not match"), "{off}");
        // Another key's anchors are not this gateway's to enforce.
        let other = AnchorKey::load_or_create(TempDir::new("anchor").path()).unwrap();
        assert_eq!(check_head(&anchors, other.public(), (1, "x")), None);
    }
}
