//! Access keys (`token exchange`): a short opaque credential standing for a verified JWT,
//! for clients that cap the password length (TDS allows 128 characters; JWTs are longer).
//!
//! A key is `pcx_<id>_<secret>`: 16 hex characters of public id and 192 random bits of
//! secret, 53 characters in all. Only the SHA-256 of the whole key is stored, so the store
//! cannot give a key back; lookup is by that hash. A key lives no longer than the token it
//! was exchanged for, the requested ttl and the configured maximum, can be revoked, and
//! cannot itself be exchanged again.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use super::{AuthMethod, Identity, IdentityError, Verifier};
use crate::audit::event::IdentityRecord;
use crate::error::Error;
use crate::store::{AccessKeyRecord, Store};

/// Every access key starts with this.
pub const ACCESS_KEY_PREFIX: &str = "pcx_";
/// Prefix of the stored record id.
const RECORD_ID_PREFIX: &str = "ak_";
/// Hex characters of the public id (64 bits).
const ID_HEX_LEN: usize = 16;
/// Random bytes of the secret (192 bits).
const SECRET_BYTES: usize = 24;
/// Length of the base64url secret.
const SECRET_LEN: usize = SECRET_BYTES * 4 / 3;
/// Length of a whole key.
pub const ACCESS_KEY_LEN: usize = ACCESS_KEY_PREFIX.len() + ID_HEX_LEN + 1 + SECRET_LEN;
// Keys must fit password fields of clients that cap them (checked at compile time).
const _: () = assert!(ACCESS_KEY_LEN <= 64 && SECRET_BYTES * 8 >= 128);

/// Verify `jwt` and mint an access key for its identity. The key expires at the earliest of
/// the token's expiry, now + `ttl` and now + `max_ttl`. Returns the key (shown once) and the
/// stored record.
pub async fn exchange(
    verifier: &Verifier,
    store: &dyn Store,
    jwt: &str,
    ttl: Duration,
    max_ttl: Duration,
) -> Result<(String, AccessKeyRecord), Error> {
    if jwt.trim().starts_with(ACCESS_KEY_PREFIX) {
        return Err(IdentityError::Malformed(
            "an access key cannot be exchanged for another; present a JWT".into(),
        )
        .into());
    }
    let identity = verifier.verify_jwt(jwt).await?;
    if identity.method != AuthMethod::Jwt {
        return Err(IdentityError::Malformed("only a JWT can be exchanged".into()).into());
    }
    let now = crate::util::now_secs();
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let expires_at = identity
        .expires_at
        .min(now.saturating_add(secs(ttl)))
        .min(now.saturating_add(secs(max_ttl)));
    if expires_at <= now {
        return Err(Error::Config(
            "access key lifetime must be at least one second".into(),
        ));
    }
    let id = crate::util::random_hex(ID_HEX_LEN / 2);
    let mut secret = [0u8; SECRET_BYTES];
    aws_lc_rs::rand::fill(&mut secret)
        .map_err(|_| Error::Config("system random number generator unavailable".into()))?;
    let key = format!("{ACCESS_KEY_PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    let record = AccessKeyRecord {
        id: format!("{RECORD_ID_PREFIX}{id}"),
        secret_hash: hash_key(&key),
        identity: IdentityRecord::from(&identity),
        created_us: crate::util::now_micros(),
        expires_at,
        revoked: false,
    };
    store.put_access_key(&record)?;
    Ok((key, record))
}

/// Revoke an access key by its record id (`ak_…`); false if there is none.
pub fn revoke(store: &dyn Store, id: &str) -> Result<bool, Error> {
    store.revoke_access_key(id)
}

impl Verifier {
    /// [`exchange`] against this verifier's store and configured maximum lifetime.
    pub async fn exchange(
        &self,
        jwt: &str,
        ttl: Duration,
    ) -> Result<(String, AccessKeyRecord), Error> {
        exchange(self, self.store.as_ref(), jwt, ttl, self.access_key_max_ttl).await
    }
}

/// Hex SHA-256 of a whole key, as stored.
fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The public id in a well-formed key, if it is one.
fn key_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(ACCESS_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let ok = id.len() == ID_HEX_LEN
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && secret.len() == SECRET_LEN
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(id)
}

/// Look an access key up and turn its record into an identity.
pub(crate) fn verify_access_key(verifier: &Verifier, key: &str) -> Result<Identity, IdentityError> {
    let id = key_id(key).ok_or(IdentityError::BadAccessKey)?;
    let record = verifier
        .store
        .access_key_by_hash(&hash_key(key))
        .map_err(|e| IdentityError::IssuerUnavailable {
            issuer: "access keys".into(),
            reason: e.to_string(),
        })?
        .ok_or(IdentityError::BadAccessKey)?;
    let now = crate::util::now_secs();
    if record.id != format!("{RECORD_ID_PREFIX}{id}")
        || record.revoked
        || record.expires_at <= now
        // An issuer removed from the configuration takes its access keys with it.
        || !verifier.has_issuer(&record.identity.issuer)
    {
        return Err(IdentityError::BadAccessKey);
    }
    let who = record.identity;
    let mut identity = Identity::verified(
        who.issuer,
        who.subject,
        who.display_name,
        who.groups,
        who.claims,
        AuthMethod::AccessKey,
        record.expires_at,
    );
    identity.credential = Some(hash_key(key));
    Ok(identity)
}

/// Whether the access key behind `identity` is still good: present, not revoked, not
/// expired, its issuer still trusted. Identities of other kinds pass (their expiry is
/// checked by the caller on every command).
pub(crate) fn still_valid(verifier: &Verifier, identity: &Identity) -> Result<(), IdentityError> {
    let Some(hash) = identity.credential.as_deref() else {
        return Ok(());
    };
    let record = verifier
        .store
        .access_key_by_hash(hash)
        .map_err(|e| IdentityError::IssuerUnavailable {
            issuer: "access keys".into(),
            reason: e.to_string(),
        })?
        .ok_or(IdentityError::BadAccessKey)?;
    if record.revoked
        || record.expires_at <= crate::util::now_secs()
        || !verifier.has_issuer(&record.identity.issuer)
    {
        return Err(IdentityError::BadAccessKey);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::audit::event::{AuditEvent, EventFilter};
    use crate::store::ChainReport;

    /// An in-memory store holding only access keys.
    #[derive(Default)]
    pub(crate) struct MemStore {
        pub(crate) keys: Mutex<Vec<AccessKeyRecord>>,
    }

    impl Store for MemStore {
        fn append_events(&self, _: &mut [AuditEvent], _: bool) -> crate::error::Result<()> {
            Ok(())
        }
        fn query_events(&self, _: &EventFilter) -> crate::error::Result<Vec<AuditEvent>> {
            Ok(Vec::new())
        }
        fn verify_chain(&self) -> crate::error::Result<ChainReport> {
            Ok(ChainReport {
                events: 0,
                problem: None,
            })
        }
        fn put_access_key(&self, key: &AccessKeyRecord) -> crate::error::Result<()> {
            self.keys.lock().unwrap().push(key.clone());
            Ok(())
        }
        fn access_key_by_hash(&self, h: &str) -> crate::error::Result<Option<AccessKeyRecord>> {
            Ok(self
                .keys
                .lock()
                .unwrap()
                .iter()
                .find(|k| k.secret_hash == h)
                .cloned())
        }
        fn revoke_access_key(&self, id: &str) -> crate::error::Result<bool> {
            let mut keys = self.keys.lock().unwrap();
            let found = keys.iter_mut().find(|k| k.id == id);
            Ok(found.map(|k| k.revoked = true).is_some())
        }
    }

    #[test]
    fn key_shape_is_checked_before_lookup() {
        let good = format!("pcx_{}_{}", "0123456789abcdef", "A".repeat(SECRET_LEN));
        assert_eq!(good.len(), ACCESS_KEY_LEN);
        assert_eq!(key_id(&good), Some("0123456789abcdef"));
        assert_eq!(key_id("pcx_0123_AAAA"), None);
        assert_eq!(key_id(&good.replace('A', "%")), None);
        assert_eq!(key_id(&format!("{good}x")), None);
    }
}
