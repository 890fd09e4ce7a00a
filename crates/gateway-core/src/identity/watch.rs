//! A live session's credential, looked at again while the session runs: an access key revoked
//! or expired ends what the session may do within [`RECHECK_EVERY`]. Every proxy uses this one
//! check, per command (Postgres) or on a timer (SSH, whose shells are one long request).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{AuthMethod, Identity, IdentityError, Verifier};

/// How often a session's access key is looked up again at most.
pub const RECHECK_EVERY: Duration = Duration::from_millis(500);

/// Why commands of a session whose access key no longer holds are refused.
pub const REVOKED: &str =
    "the session's access key was revoked or has expired; reconnect with a valid token";

/// What the last look at the credential found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialState {
    /// It still holds (or is a kind that is not looked up again: a JWT carries its expiry).
    Valid,
    /// Revoked or expired: for good.
    Revoked,
    /// The store could not say; ask again for the next command.
    Unknown(String),
}

/// The re-check state of one session; shared by its tasks.
#[derive(Debug)]
pub struct CredentialWatch {
    since: Instant,
    /// Microseconds after `since` of the last lookup that found it valid, plus one (0: never).
    checked: AtomicU64,
    revoked: AtomicBool,
}

impl Default for CredentialWatch {
    fn default() -> Self {
        CredentialWatch {
            since: Instant::now(),
            checked: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
        }
    }
}

impl CredentialWatch {
    /// The state of `identity`'s credential, looked up at most every [`RECHECK_EVERY`].
    pub fn state(&self, verifier: &Verifier, identity: &Identity) -> CredentialState {
        if identity.method != AuthMethod::AccessKey {
            return CredentialState::Valid;
        }
        if self.revoked.load(Ordering::Relaxed) {
            return CredentialState::Revoked;
        }
        let now = self.micros();
        let checked = self.checked.load(Ordering::Relaxed);
        if checked != 0 && now.saturating_sub(checked - 1) < RECHECK_EVERY.as_micros() as u64 {
            return CredentialState::Valid;
        }
        match verifier.still_valid(identity) {
            Ok(()) => {
                self.checked.store(now + 1, Ordering::Relaxed);
                CredentialState::Valid
            }
            Err(IdentityError::BadAccessKey) => {
                self.revoked.store(true, Ordering::Relaxed);
                CredentialState::Revoked
            }
            Err(e) => CredentialState::Unknown(e.to_string()),
        }
    }

    fn micros(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX - 1)
    }

    /// Why the next command must be refused, if it must: fail closed when the store cannot
    /// say.
    pub fn refusal(&self, verifier: &Verifier, identity: &Identity) -> Option<String> {
        match self.state(verifier, identity) {
            CredentialState::Valid => None,
            CredentialState::Revoked => Some(REVOKED.to_string()),
            CredentialState::Unknown(e) => {
                Some(format!("the session's access key cannot be checked: {e}"))
            }
        }
    }
}
