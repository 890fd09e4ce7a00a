//! Hot reload: the policy in force lives in a `tokio::sync::watch` channel. A new file
//! replaces it only if it passes every check; otherwise the old policy stays in force and
//! the refusal is logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::engine::PolicyEngine;

/// How often the watcher looks at the file's modification time and length.
const POLL: Duration = Duration::from_secs(1);

/// What the watcher compares to notice a changed file without reading it.
type FileStamp = (Option<SystemTime>, u64);

/// The policy in force, and how to replace it.
pub struct PolicyHandle {
    path: PathBuf,
    tx: watch::Sender<Arc<PolicyEngine>>,
    /// Serialises reloads so versions only go up, and remembers the file last read.
    last: Mutex<Option<FileStamp>>,
}

impl std::fmt::Debug for PolicyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHandle")
            .field("path", &self.path)
            .field("version", &self.tx.borrow().version())
            .finish()
    }
}

impl PolicyHandle {
    /// Load the policy file at `path` as version 1.
    pub fn load(path: &Path) -> Result<PolicyHandle, Vec<String>> {
        let stamp = file_stamp(path);
        let engine = read_policy(path, 1)?;
        for w in engine.warnings() {
            warn!(path = %path.display(), "policy warning: {w}");
        }
        let (tx, _rx) = watch::channel(Arc::new(engine));
        Ok(PolicyHandle {
            path: path.to_path_buf(),
            tx,
            last: Mutex::new(stamp),
        })
    }

    /// The policy file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The policy in force. Cheap: a reference count.
    pub fn current(&self) -> Arc<PolicyEngine> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every policy put in force from now on.
    pub fn subscribe(&self) -> watch::Receiver<Arc<PolicyEngine>> {
        self.tx.subscribe()
    }

    /// Read the file again. If it passes every check it is put in force with the next
    /// version, which is returned; otherwise the errors are returned and logged and the
    /// previous policy stays in force.
    pub fn reload(&self) -> Result<u64, Vec<String>> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // Stamp before reading: a write racing with the read shows up as a later change.
        *last = file_stamp(&self.path);
        let version = self.tx.borrow().version() + 1;
        match read_policy(&self.path, version) {
            Ok(engine) => {
                for w in engine.warnings() {
                    warn!(path = %self.path.display(), "policy warning: {w}");
                }
                self.tx.send_replace(Arc::new(engine));
                info!(path = %self.path.display(), version, "policy reloaded");
                Ok(version)
            }
            Err(errors) => {
                error!(
                    path = %self.path.display(),
                    "policy reload refused: {}, the previous policy stays in force",
                    errors.join("; ")
                );
                Err(errors)
            }
        }
    }

    /// Whether the file's modification time or length differs from the last read.
    pub fn changed_on_disk(&self) -> bool {
        let now = file_stamp(&self.path);
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        // A file that disappeared is not a new policy; keep the old one quietly.
        now.is_some() && now != *last
    }

    /// Reload on SIGHUP and whenever the file changes (polled every second). The task
    /// ends when the last `Arc` of this handle is dropped. Must run inside a Tokio runtime.
    pub fn spawn_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(watch_loop(weak))
    }
}

async fn watch_loop(weak: Weak<PolicyHandle>) {
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            error!("cannot listen for SIGHUP, policy reloads only on file change: {e}");
            None
        }
    };
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            Some(()) = next_hangup(&mut hangup) => true,
        };
        let Some(handle) = weak.upgrade() else {
            return;
        };
        if by_signal || handle.changed_on_disk() {
            if by_signal {
                info!(path = %handle.path.display(), "SIGHUP: reloading policy");
            }
            // Reading and validating is blocking work; keep it off the runtime's workers.
            // The outcome is logged by `reload`.
            let _ = tokio::task::spawn_blocking(move || handle.reload()).await;
        }
    }
}

async fn next_hangup(hangup: &mut Option<Signal>) -> Option<()> {
    match hangup {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn file_stamp(path: &Path) -> Option<FileStamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok(), m.len()))
}

fn read_policy(path: &Path, version: u64) -> Result<PolicyEngine, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("cannot read policy file {}: {e}", path.display())])?;
    PolicyEngine::from_text(&text, version).map_err(|errors| {
        errors
            .into_iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::Action;
    use crate::config::Protocol;
    use crate::identity::Identity;
    use crate::policy::ConnectionRef;

    const GOOD: &str = r#"@id("ci-connect")
permit (principal in Group::"ci", action == Action::"connect", resource);
"#;
    const GOOD_TOO: &str = r#"@id("anyone-connect")
permit (principal, action == Action::"connect", resource);
"#;
    const BAD: &str = r#"@id("typo")
permit (principal, action == Action::"conect", resource);
"#;

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "portcullis-policy-{}-{name}.cedar",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reload_keeps_old_policy_on_bad_file_and_bumps_version_on_good() {
        let path = temp_file("reload", GOOD);
        let handle = PolicyHandle::load(&path).unwrap();
        assert_eq!(handle.current().version(), 1);
        let rx = handle.subscribe();

        std::fs::write(&path, BAD).unwrap();
        let errors = handle.reload().unwrap_err();
        assert!(errors.iter().any(|e| e.contains("conect")), "{errors:?}");
        assert_eq!(handle.current().version(), 1);
        assert_eq!(handle.current().policy_ids(), vec!["ci-connect"]);
        assert!(!rx.has_changed().unwrap());

        std::fs::write(&path, GOOD_TOO).unwrap();
        assert_eq!(handle.reload().unwrap(), 2);
        assert!(rx.has_changed().unwrap());
        let engine = handle.current();
        assert_eq!(engine.version(), 2);
        let nobody = Identity::for_tests("builtin", "eve", &[]);
        let conn = ConnectionRef {
            name: "orders",
            protocol: Protocol::Postgres,
        };
        assert!(engine.decide(&nobody, &conn, &Action::Connect).is_allowed());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn load_refuses_a_bad_file() {
        let path = temp_file("load-bad", BAD);
        let errors = PolicyHandle::load(&path).unwrap_err();
        assert!(
            errors[0].contains(&path.display().to_string()),
            "{errors:?}"
        );
        std::fs::remove_file(&path).unwrap();
        let missing = PolicyHandle::load(&path).unwrap_err();
        assert!(missing[0].contains("cannot read"), "{missing:?}");
    }

    #[test]
    fn change_on_disk_is_noticed_until_reloaded() {
        let path = temp_file("stamp", GOOD);
        let handle = PolicyHandle::load(&path).unwrap();
        assert!(!handle.changed_on_disk());
        // A different length is a change whatever the clock's resolution.
        std::fs::write(&path, GOOD_TOO).unwrap();
        assert!(handle.changed_on_disk());
        handle.reload().unwrap();
        assert!(!handle.changed_on_disk());
        // A refused file is not retried until it changes again.
        std::fs::write(&path, BAD).unwrap();
        assert!(handle.changed_on_disk());
        assert!(handle.reload().is_err());
        assert!(!handle.changed_on_disk());
        std::fs::remove_file(&path).unwrap();
    }
}
