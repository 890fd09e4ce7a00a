//! The approvals service: creates requests, applies votes and cancels through the store with
//! optimistic retries, wakes held commands, keeps the open windows in memory, sweeps expiries,
//! and reports every change to audit and the webhooks.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::model::{ApprovalKind, ApprovalRequest, CancelBy, State, Vote, new_approval_id};
use super::notice;
use super::request::{NewKind, NewRequest, Outcome};
use super::settings::{ApprovalAudit, ApprovalSettings};
use super::webhook::{Notice, WebhookNotifier};
use super::{ApprovalError, ApprovalFilter, ApprovalStore};
use crate::audit::event::{AuditEvent, IdentityRecord};
use crate::identity::Identity;

/// Attempts at a read-modify-write before giving up on a request changed concurrently.
const MAX_ATTEMPTS: usize = 8;

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApprovalStats {
    /// Approval events audit did not take.
    pub audit_failures: u64,
    /// Store errors met by the background sweep.
    pub sweep_failures: u64,
}

/// A granted window, as cached for the hot path.
#[derive(Debug, Clone)]
struct Grant {
    principal: String,
    connection: String,
    action: String,
    id: String,
    until_us: i64,
}

/// Current time in µs since the epoch.
pub(crate) type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The approvals service; clones share one.
#[derive(Clone)]
pub struct Approvals {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ApprovalStore>,
    settings: ApprovalSettings,
    audit: Arc<dyn ApprovalAudit>,
    notifier: Option<WebhookNotifier>,
    /// Bumped on every change made here: held commands re-read their request.
    changes: watch::Sender<u64>,
    windows: RwLock<Arc<Vec<Grant>>>,
    clock: Clock,
    audit_failures: AtomicU64,
    sweep_failures: AtomicU64,
}

/// What a transition did besides (maybe) changing the state.
enum Step {
    Nothing,
    Voted(Box<(Vote, IdentityRecord)>),
    Changed,
}

impl Approvals {
    /// Start the service: abandon the one-time requests this node held before a restart, load
    /// the open windows, and sweep expiries every `poll_interval` in the background (for as
    /// long as a handle lives). Must run inside a tokio runtime.
    pub async fn start(
        store: Arc<dyn ApprovalStore>,
        settings: ApprovalSettings,
        audit: Arc<dyn ApprovalAudit>,
        notifier: Option<WebhookNotifier>,
    ) -> Result<Approvals, ApprovalError> {
        let clock: Clock = Arc::new(crate::util::now_micros);
        Approvals::start_with_clock(store, settings, audit, notifier, clock).await
    }

    pub(crate) async fn start_with_clock(
        store: Arc<dyn ApprovalStore>,
        settings: ApprovalSettings,
        audit: Arc<dyn ApprovalAudit>,
        notifier: Option<WebhookNotifier>,
        clock: Clock,
    ) -> Result<Approvals, ApprovalError> {
        let poll = settings.poll_interval.max(Duration::from_millis(10));
        let svc = Approvals {
            inner: Arc::new(Inner {
                store,
                settings,
                audit,
                notifier,
                changes: watch::Sender::new(0),
                windows: RwLock::new(Arc::new(Vec::new())),
                clock,
                audit_failures: AtomicU64::new(0),
                sweep_failures: AtomicU64::new(0),
            }),
        };
        svc.abandon_held().await?;
        svc.refresh_windows()?;
        let weak = Arc::downgrade(&svc.inner);
        tokio::spawn(sweeper(weak, poll));
        Ok(svc)
    }

    fn now(&self) -> i64 {
        (self.inner.clock)()
    }

    /// The settings in force.
    pub fn settings(&self) -> &ApprovalSettings {
        &self.inner.settings
    }

    /// Webhook delivery counters; `None` when no webhook is configured.
    pub fn webhook_stats(&self) -> Option<super::webhook::WebhookStats> {
        self.inner.notifier.as_ref().map(WebhookNotifier::stats)
    }

    /// Counters for metrics (webhook counters: [`Approvals::webhook_stats`]).
    pub fn stats(&self) -> ApprovalStats {
        ApprovalStats {
            audit_failures: self.inner.audit_failures.load(Ordering::Relaxed),
            sweep_failures: self.inner.sweep_failures.load(Ordering::Relaxed),
        }
    }

    /// Make a request for `requester`; it is stored, audited and announced.
    pub async fn request(
        &self,
        requester: &Identity,
        new: NewRequest,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let s = &self.inner.settings;
        if new.connection.is_empty() || new.action.is_empty() {
            return Err(ApprovalError::Invalid(
                "a connection and an action are required".into(),
            ));
        }
        if new.approvers.is_empty() && s.approvers.is_empty() {
            // Nobody could approve it: say so now rather than let it expire.
            return Err(ApprovalError::Invalid(
                "nobody may approve this request: the rule names no @approvers and \
                 [approvals] approvers is empty"
                    .into(),
            ));
        }
        let kind = match new.kind {
            NewKind::OneTime {
                fingerprint,
                statement,
                session,
                parameters,
                tables,
                grant,
            } => {
                if fingerprint.is_empty() || session.is_empty() {
                    return Err(ApprovalError::Invalid(
                        "a held command needs its fingerprint and session".into(),
                    ));
                }
                ApprovalKind::OneTime {
                    fingerprint,
                    statement,
                    parameters,
                    tables,
                    session,
                    // A grant holds nothing on this node: a restart leaves it usable.
                    node: if grant { String::new() } else { s.node.clone() },
                    grant,
                }
            }
            NewKind::Window { duration } => {
                let secs = duration.as_secs();
                if secs == 0 {
                    return Err(ApprovalError::Invalid(
                        "a window must last at least one second".into(),
                    ));
                }
                if duration > s.max_window {
                    return Err(ApprovalError::WindowTooLong {
                        asked_secs: secs,
                        max_secs: s.max_window.as_secs(),
                    });
                }
                ApprovalKind::Window { window_secs: secs }
            }
        };
        let now = self.now();
        let ttl = i64::try_from(s.pending_ttl.as_micros()).unwrap_or(i64::MAX);
        let req = ApprovalRequest {
            id: new_approval_id(),
            version: 0,
            kind,
            requester: IdentityRecord::from(requester),
            connection: new.connection,
            action: new.action,
            reason: new.reason,
            policies: new.policies,
            required: new.required.max(1),
            approver_groups: if new.approvers.is_empty() {
                s.approvers.clone()
            } else {
                new.approvers
            },
            votes: Vec::new(),
            state: State::Pending,
            created_us: now,
            expires_us: now.saturating_add(ttl),
            window_until_us: None,
            closed_us: None,
            closed_by: None,
            closed_reason: None,
            used_us: None,
            used_by: None,
        };
        self.inner.store.create_approval(&req)?;
        self.audit(notice::request_event(&req)).await;
        if let Some(n) = &self.inner.notifier {
            n.notify(Notice::new(&req));
        }
        Ok(req)
    }

    /// Approve (`approve = true`) or deny a pending request as `voter`.
    pub async fn vote(
        &self,
        id: &str,
        voter: &Identity,
        approve: bool,
        reason: Option<String>,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let voter = IdentityRecord::from(voter);
        self.transition(id, |req, now| {
            let vote = req.apply_vote(&voter, approve, reason.clone(), now)?;
            Ok(Step::Voted(Box::new((vote, voter.clone()))))
        })
        .await
    }

    /// Withdraw a pending request, or end a granted window early; requester only.
    pub async fn cancel(
        &self,
        id: &str,
        by: &Identity,
        reason: Option<String>,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let who = IdentityRecord::from(by);
        self.transition(id, |req, now| {
            req.cancel(CancelBy::Requester(&who), reason.clone(), now)?;
            Ok(Step::Changed)
        })
        .await
    }

    /// Withdraw a held command's request from the session holding it (the client cancelled
    /// the query or went away).
    pub async fn cancel_held(
        &self,
        id: &str,
        session: &str,
        reason: &str,
    ) -> Result<ApprovalRequest, ApprovalError> {
        self.transition(id, |req, now| {
            req.cancel(CancelBy::Session(session), Some(reason.to_string()), now)?;
            Ok(Step::Changed)
        })
        .await
    }

    /// The newest grant `identity` asked for `action` on `connection` with this
    /// `fingerprint` that is still pending, or approved and not yet used.
    pub async fn open_grant(
        &self,
        identity: &Identity,
        connection: &str,
        action: &str,
        fingerprint: &str,
    ) -> Result<Option<ApprovalRequest>, ApprovalError> {
        let now = self.now();
        let ttl = self.grant_ttl();
        let principal = identity.principal();
        let mut found = None;
        for state in [State::Approved, State::Pending] {
            let list = self.inner.store.list_approvals(&ApprovalFilter {
                state: Some(state),
                kind: Some("one_time"),
                connection: Some(connection.to_string()),
                requester: Some(principal.clone()),
                ..ApprovalFilter::default()
            })?;
            found = list.into_iter().rev().find(|r| {
                r.action == action
                    && r.requester.principal == principal
                    && r.grant_open(fingerprint, now, ttl)
            });
            if found.is_some() {
                break;
            }
        }
        Ok(found)
    }

    /// Use approved grant `id` for `session`: once only, across every gateway sharing the
    /// store.
    pub async fn use_grant(
        &self,
        id: &str,
        session: &str,
    ) -> Result<ApprovalRequest, ApprovalError> {
        let ttl = self.grant_ttl();
        self.transition(id, |req, now| {
            req.use_grant(session, now, ttl)?;
            Ok(Step::Changed)
        })
        .await
    }

    /// How long an approved grant stays usable: as long as a request may wait.
    fn grant_ttl(&self) -> i64 {
        i64::try_from(self.inner.settings.pending_ttl.as_micros()).unwrap_or(i64::MAX)
    }

    /// One request, with a due expiry applied.
    pub async fn get(&self, id: &str) -> Result<ApprovalRequest, ApprovalError> {
        self.transition(id, |_, _| Ok(Step::Nothing)).await
    }

    /// Requests matching `filter`, oldest first, with due expiries applied.
    pub async fn list(
        &self,
        filter: &ApprovalFilter,
    ) -> Result<Vec<ApprovalRequest>, ApprovalError> {
        self.sweep().await?;
        Ok(self.inner.store.list_approvals(filter)?)
    }

    /// Wait until request `id` is decided. Wakes on changes made through this service at
    /// once, and re-reads the store every `poll_interval` for votes cast on other replicas.
    /// Dropping the future does not cancel the request: call [`cancel_held`](Self::cancel_held).
    pub fn wait(&self, id: &str) -> impl Future<Output = Outcome> + Send + 'static {
        let svc = self.clone();
        let id = id.to_string();
        async move {
            let mut changes = svc.inner.changes.subscribe();
            let poll = svc
                .inner
                .settings
                .poll_interval
                .max(Duration::from_millis(10));
            loop {
                changes.mark_unchanged();
                let req = match svc.get(&id).await {
                    Ok(r) => r,
                    Err(e) => return Outcome::Failed(e),
                };
                match req.state {
                    State::Pending => {}
                    State::Approved => return Outcome::Approved(req),
                    _ => return Outcome::Refused(req),
                }
                let to_expiry =
                    u64::try_from(req.expires_us.saturating_sub(svc.now())).unwrap_or(0);
                let nap = poll.min(Duration::from_micros(to_expiry));
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = tokio::time::sleep(nap) => {}
                }
            }
        }
    }

    /// The id of a granted window letting `identity` do `action` on `connection` now.
    /// Reads memory only: refreshed on every change here and every `poll_interval` from the
    /// store. A window stands in for review only; the caller still refuses what policy denies.
    pub fn active_window(
        &self,
        identity: &Identity,
        connection: &str,
        action: &str,
    ) -> Option<String> {
        let grants = self
            .inner
            .windows
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if grants.is_empty() {
            return None;
        }
        let now = self.now();
        grants
            .iter()
            .filter(|g| {
                g.until_us > now
                    && g.connection == connection
                    && g.action == action
                    && g.subject_matches(identity)
            })
            .max_by_key(|g| g.until_us)
            .map(|g| g.id.clone())
    }

    /// Expire every pending request whose time is up and reload the open windows. Returns how
    /// many expired. The background sweeper calls this every `poll_interval`.
    pub async fn sweep(&self) -> Result<usize, ApprovalError> {
        let pending = self.inner.store.list_approvals(&ApprovalFilter {
            state: Some(State::Pending),
            ..ApprovalFilter::default()
        })?;
        let now = self.now();
        let mut expired = 0;
        for req in pending.iter().filter(|r| r.expires_us <= now) {
            if self.get(&req.id).await?.state == State::Expired {
                expired += 1;
            }
        }
        self.refresh_windows()?;
        Ok(expired)
    }

    /// Mark the one-time requests this node was holding as abandoned (start-up).
    async fn abandon_held(&self) -> Result<usize, ApprovalError> {
        let held = self.inner.store.list_approvals(&ApprovalFilter {
            state: Some(State::Pending),
            node: Some(self.inner.settings.node.clone()),
            ..ApprovalFilter::default()
        })?;
        for req in &held {
            self.transition(&req.id, |r, now| {
                Ok(if r.abandon(now) {
                    Step::Changed
                } else {
                    Step::Nothing
                })
            })
            .await?;
        }
        Ok(held.len())
    }

    fn refresh_windows(&self) -> Result<(), ApprovalError> {
        let open = self.inner.store.active_windows(self.now())?;
        let grants: Vec<Grant> = open
            .into_iter()
            .filter_map(|r| {
                Some(Grant {
                    until_us: r.window_until_us?,
                    principal: r.requester.principal,
                    connection: r.connection,
                    action: r.action,
                    id: r.id,
                })
            })
            .collect();
        *self
            .inner
            .windows
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(grants);
        Ok(())
    }

    /// Read, change with `step`, write back if the stored version is unchanged (else retry),
    /// then tell audit, webhooks, waiters and the window cache. A due expiry is applied first
    /// and kept even when `step` then refuses.
    async fn transition<F>(&self, id: &str, mut step: F) -> Result<ApprovalRequest, ApprovalError>
    where
        F: FnMut(&mut ApprovalRequest, i64) -> Result<Step, ApprovalError>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let current = self
                .inner
                .store
                .approval(id)?
                .ok_or_else(|| ApprovalError::NotFound(id.to_string()))?;
            let now = self.now();
            let mut next = current.clone();
            let expired = next.expire_if_due(now);
            let (done, refused) = match step(&mut next, now) {
                Ok(s) => (s, None),
                Err(e) if expired => (Step::Nothing, Some(e)),
                Err(e) => return Err(e),
            };
            if !expired && matches!(done, Step::Nothing) {
                return Ok(current);
            }
            if !self.inner.store.update_approval(&next)? {
                continue;
            }
            next.version += 1;
            self.after_change(&current, &next, done).await;
            return match refused {
                Some(e) => Err(e),
                None => Ok(next),
            };
        }
        Err(ApprovalError::Busy(id.to_string()))
    }

    async fn after_change(&self, before: &ApprovalRequest, after: &ApprovalRequest, step: Step) {
        if let Step::Voted(v) = &step {
            let (vote, voter) = &**v;
            self.audit(notice::vote_event(after, vote, voter)).await;
        }
        if before.state != after.state {
            self.audit(notice::outcome_event(after)).await;
            if let Some(n) = &self.inner.notifier {
                n.notify(Notice::new(after));
            }
            if matches!(after.kind, ApprovalKind::Window { .. })
                && let Err(e) = self.refresh_windows()
            {
                tracing::warn!(error = %e, "approval windows not reloaded; retrying at the next sweep");
            }
        }
        self.inner.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Record an approval event. The change it describes is already stored, so a failure is
    /// counted and logged rather than undoing it.
    async fn audit(&self, ev: AuditEvent) {
        if let Err(e) = self.inner.audit.record(ev).await {
            self.inner.audit_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "approval event not recorded in audit");
        }
    }
}

impl Grant {
    fn subject_matches(&self, identity: &Identity) -> bool {
        // Compare without allocating the principal: `issuer/subject`.
        self.principal
            .strip_prefix(identity.issuer.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            == Some(identity.subject.as_str())
    }
}

/// Sweep expiries and reload windows until the service is dropped.
async fn sweeper(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let svc = Approvals { inner };
        if let Err(e) = svc.sweep().await {
            svc.inner.sweep_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "approval sweep failed");
        }
    }
}
