//! The gate against real services (SQLite in memory, the journal in a temporary directory,
//! the approvals service): what it admits, holds and refuses, and what it puts on record.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::action::{SshKind, SshRequest};
use crate::approvals::Outcome;
use crate::approvals::{ApprovalSettings, Approvals};
use crate::audit::AuditLog;
use crate::audit::tail::journal_tail;
use crate::config::{Config, Durability};
use crate::identity::Verifier;
use crate::metrics::Metrics;
use crate::policy::PolicyHandle;
use crate::sql::Classifier;
use crate::store::SqliteStore;
use crate::store::sqlite::tests::TempDir;

const POLICY: &str = r#"
@id("ops-connect")
permit(principal in Group::"ops", action == Action::"connect", resource);

@id("ops-exec")
permit(principal in Group::"ops", action == Action::"ssh.exec", resource)
when { ["ls", "id"].contains(context.program) };

@id("restart")
@approval("1")
@approvers("dba")
permit(principal in Group::"ops", action == Action::"ssh.exec", resource)
when { context.program == "systemctl" };
"#;

struct Fixture {
    dir: TempDir,
    services: Arc<Services>,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = TempDir::new("gate");
        std::fs::write(dir.path().join("policy.cedar"), POLICY).unwrap();
        let mut cfg: Config = toml::from_str(&format!(
            "[gateway]\nstate_dir = \"{}\"\npolicy = \"policy.cedar\"\n\
             [[connections]]\nname = \"web\"\nprotocol = \"ssh\"\ntarget = \"127.0.0.1:22\"\n\
             [[connections]]\nname = \"orders\"\nprotocol = \"postgres\"\ntarget = \"127.0.0.1:5432\"\n",
            dir.path().display()
        ))
        .unwrap();
        cfg.base_dir = dir.path().to_path_buf();
        let store = Arc::new(SqliteStore::open_in_memory().unwrap());
        let audit = AuditLog::start(
            store.clone(),
            Durability::Process,
            dir.path().join("journal"),
            None,
        )
        .unwrap();
        let settings = ApprovalSettings {
            approvers: vec!["dba".into()],
            pending_ttl: Duration::from_secs(900),
            max_window: Duration::from_secs(3600),
            node: "n1".into(),
            poll_interval: Duration::from_secs(1),
        };
        let approvals = Approvals::start(store.clone(), settings, Arc::new(audit.clone()), None)
            .await
            .unwrap();
        let services = Services {
            verifier: Verifier::new(&cfg.identity, None, store.clone()).unwrap(),
            policy: Arc::new(PolicyHandle::load(&dir.path().join("policy.cedar")).unwrap()),
            classifier: Classifier::new(16),
            audit,
            approvals,
            store,
            metrics: Arc::new(Metrics::default()),
            masking: None,
            config: Arc::new(cfg),
        };
        Fixture {
            dir,
            services: Arc::new(services),
        }
    }

    fn gate(&self, identity: Identity) -> SessionGate {
        SessionGate::new(self.services.clone(), "s1", identity, "web", Protocol::Ssh)
    }

    /// The `command` events on record, in order.
    fn commands(&self) -> Vec<AuditEvent> {
        self.events(EventKind::Command)
    }

    fn events(&self, kind: EventKind) -> Vec<AuditEvent> {
        journal_tail(&self.dir.path().join("journal"), 0)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }
}

fn exec(line: &str) -> Command {
    Command {
        actions: SshRequest::exec(Arc::from(line)),
        action: SshKind::Exec.cedar_id().into(),
        text: line.into(),
        tables: Vec::new(),
        parameters: Vec::new(),
        fingerprint: None,
        detail: None,
        waiting: Waiting::Hold,
    }
}

fn ops() -> Identity {
    Identity::for_tests("builtin", "alice", &["ops"])
}

#[tokio::test]
async fn allowed_commands_are_admitted_after_their_event_is_on_record() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let Gated::Forward(a) = gate.admit(exec("ls -la && id")).await else {
        panic!("not admitted");
    };
    assert_eq!(a.number(), 1);
    assert_eq!(a.policies(), ["ops-exec"]);
    let evs = f.commands();
    assert_eq!(evs.len(), 1);
    let ev = &evs[0];
    assert_eq!(ev.verdict, Some(AuditVerdict::Allow));
    assert_eq!(ev.command, Some(1));
    assert_eq!(ev.connection.as_deref(), Some("web"));
    assert_eq!(ev.protocol.as_deref(), Some("ssh"));
    assert_eq!(
        ev.identity.as_ref().map(|i| i.subject.as_str()),
        Some("alice")
    );
    assert_eq!(ev.statement.as_deref(), Some("ls -la && id"));
}

#[tokio::test]
async fn denied_commands_are_refused_with_the_reason_and_recorded() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let Gated::Refuse(r) = gate.admit(exec("ls && rm -rf /")).await else {
        panic!("not refused");
    };
    assert_eq!(r.number, 1);
    assert!(
        r.message.starts_with("ssh.exec denied by policy:"),
        "{}",
        r.message
    );
    assert!(r.message.contains("it runs rm"), "{}", r.message);
    let evs = f.commands();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].verdict, Some(AuditVerdict::Deny));
    // Numbers go on across outcomes.
    assert!(matches!(gate.admit(exec("id")).await, Gated::Forward(a) if a.number() == 2));
}

#[tokio::test]
async fn held_commands_get_one_event_when_their_wait_ends() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let Gated::Hold(held) = gate.admit(exec("systemctl restart nginx")).await else {
        panic!("not held");
    };
    assert!(held.notice("ssh.exec").contains("members of dba"));
    let id = held.request.id.clone();
    // Nothing on record as a command yet: the wait is on record as the approval request.
    assert!(f.commands().is_empty());
    let admitted = gate
        .resolve(
            held,
            &Outcome::Approved(f.services.approvals.get(&id).await.unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(admitted.approval(), Some(id.as_str()));
    let evs = f.commands();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].verdict, Some(AuditVerdict::Allow));
    assert_eq!(evs[0].approval.as_deref(), Some(id.as_str()));

    let Gated::Hold(held) = gate.admit(exec("systemctl stop nginx")).await else {
        panic!("not held");
    };
    let request = held.request.clone();
    let refusal = gate
        .resolve(held, &Outcome::Refused(request))
        .await
        .unwrap_err();
    assert_eq!(refusal.number, 2);
    let evs = f.commands();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[1].verdict, Some(AuditVerdict::Deny));
    assert_eq!(evs[1].command, Some(2));
}

#[tokio::test]
async fn nothing_is_admitted_without_a_record_or_a_valid_credential() {
    let f = Fixture::new().await;
    // An expired token admits nothing.
    let mut expired = ops();
    expired.expires_at = crate::util::now_secs() - 1;
    let Gated::Refuse(r) = f.gate(expired).admit(exec("id")).await else {
        panic!("admitted on an expired token");
    };
    assert!(r.message.contains("expired"), "{}", r.message);
    // Audit gone: refused, never forwarded.
    f.services.audit.shutdown().await;
    let Gated::Refuse(r) = f.gate(ops()).admit(exec("id")).await else {
        panic!("admitted without a record");
    };
    assert!(
        r.message.starts_with("audit is unavailable"),
        "{}",
        r.message
    );
    assert_eq!(
        f.services
            .metrics
            .audit_failures_total
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn sessions_open_only_on_their_own_protocol_and_only_when_allowed() {
    let f = Fixture::new().await;
    let opening = Opening::new(f.services.clone(), Protocol::Ssh, "10.0.0.7:50000".into());
    // A Postgres connection is no SSH connection.
    assert_eq!(
        opening.admit(&ops(), "orders").await.err(),
        Some(OpenRefusal::UnknownConnection("orders".into()))
    );
    let stranger = Identity::for_tests("builtin", "eve", &["guests"]);
    assert!(matches!(
        opening.admit(&stranger, "web").await,
        Err(OpenRefusal::Denied(_))
    ));
    // Refusals are written with the next batch, within milliseconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let failed = loop {
        let failed = f.events(EventKind::AuthFailed);
        if failed.len() >= 2 || std::time::Instant::now() > deadline {
            break failed;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|e| e.protocol.as_deref() == Some("ssh")
        && e.client.as_deref() == Some("10.0.0.7:50000")
        && e.session == opening.session_id()));
    assert!(f.events(EventKind::SessionStart).is_empty());

    let admission = opening.admit(&ops(), "web").await.unwrap();
    let id = opening.session_id().to_string();
    let gate = opening.start(ops(), &admission, None).await.unwrap();
    let starts = f.events(EventKind::SessionStart);
    assert_eq!(starts.len(), 1);
    assert_eq!(starts[0].session, id);
    assert_eq!(starts[0].connection.as_deref(), Some("web"));
    let counters = f.services.metrics.protocol(Protocol::Ssh);
    assert_eq!(counters.sessions_active.load(Ordering::Relaxed), 1);
    assert_eq!(counters.auth_failures_total.load(Ordering::Relaxed), 2);
    // Its commands are recorded under the same session.
    assert!(matches!(gate.admit(exec("id")).await, Gated::Forward(_)));
    assert_eq!(f.commands()[0].session, id);
}

#[tokio::test]
async fn a_batch_is_admitted_only_once_all_its_events_are_on_record() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let mut batch = Batch::default();
    let mut staged = Vec::new();
    for line in ["id", "rm -rf /", "ls"] {
        let cmd = exec(line);
        let decision = gate.decide(&cmd.actions);
        staged.push(gate.stage(cmd, &decision, &mut batch));
    }
    // Decided, numbered, but nothing written until the commit.
    assert!(f.commands().is_empty());
    assert!(matches!(&staged[1], Staged::Refuse(r) if r.number == 2 && r.action == "ssh.exec"));
    let on_record = gate.commit(&mut batch).unwrap();
    assert!(batch.is_empty());
    let evs = f.commands();
    assert_eq!(evs.len(), 3);
    assert_eq!(on_record.seq(), Some(evs[2].seq));
    let verdicts: Vec<_> = evs.iter().map(|e| e.verdict.unwrap()).collect();
    assert_eq!(
        verdicts,
        [AuditVerdict::Allow, AuditVerdict::Deny, AuditVerdict::Allow]
    );
    assert!(evs.iter().all(|e| e.connection.as_deref() == Some("web")
        && e.identity.as_ref().is_some_and(|i| i.subject == "alice")));
    let numbers: Vec<u64> = staged
        .into_iter()
        .filter_map(|s| match s {
            Staged::Forward(p) => Some(p.admit(&on_record).number()),
            _ => None,
        })
        .collect();
    assert_eq!(numbers, [1, 3]);
}

#[tokio::test]
async fn a_batch_that_cannot_be_recorded_admits_nothing() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let mut batch = Batch::default();
    let cmd = exec("id");
    let decision = gate.decide(&cmd.actions);
    let Staged::Forward(pending) = gate.stage(cmd, &decision, &mut batch) else {
        panic!("not allowed");
    };
    f.services.audit.shutdown().await;
    let err = gate.commit(&mut batch).unwrap_err();
    assert!(err.starts_with("audit is unavailable"), "{err}");
    assert_eq!(pending.unrecorded(err).number, 1);
}

#[tokio::test]
async fn a_held_command_the_client_withdraws_is_recorded_as_refused() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let mut batch = Batch::default();
    let cmd = exec("systemctl restart nginx");
    let decision = gate.decide(&cmd.actions);
    let Staged::Review(review) = gate.stage(cmd, &decision, &mut batch) else {
        panic!("not sent to review");
    };
    // Review writes nothing to the batch: the command's event waits for the outcome.
    assert!(batch.is_empty());
    let Gated::Hold(held) = gate.hold(review).await else {
        panic!("not held");
    };
    assert_eq!(held.action(), "ssh.exec");
    assert_eq!(held.policies(), ["restart"]);
    let id = held.request.id.clone();
    let r = gate.withdraw(held, "cancelled by the client").await;
    assert!(r.withdrawn);
    assert!(r.reason.contains("cancelled by the client"), "{}", r.reason);
    let evs = f.commands();
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0].verdict, Some(AuditVerdict::Deny));
    assert_eq!(evs[0].approval.as_deref(), Some(id.as_str()));
    // The request is no longer pending: approving it now admits nothing.
    let req = f.services.approvals.get(&id).await.unwrap();
    assert_ne!(req.state, crate::approvals::State::Pending);
}

#[tokio::test]
async fn completions_and_ends_name_their_connection_and_protocol() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let done = gate.complete(7);
    assert_eq!(done.kind, EventKind::CommandEnd);
    assert_eq!(done.command, Some(7));
    assert_eq!(done.connection.as_deref(), Some("web"));
    assert_eq!(done.protocol.as_deref(), Some("ssh"));
    let end = gate.end();
    assert_eq!(end.kind, EventKind::SessionEnd);
    assert_eq!(end.session, "s1");
    assert!(end.identity.is_some_and(|i| i.subject == "alice"));
}

#[tokio::test]
async fn a_request_that_cannot_wait_runs_once_on_its_approved_grant() {
    let f = Fixture::new().await;
    let gate = f.gate(ops());
    let retry = |line: &str| Command {
        waiting: Waiting::Retry,
        ..exec(line)
    };
    // First: a grant is requested, the request refused with its id. Nothing held.
    let Gated::Refuse(first) = gate.admit(retry("systemctl restart nginx")).await else {
        panic!("not refused");
    };
    let id = first.approval.clone().expect("a grant was requested");
    assert!(
        first.message.contains("send the same request again"),
        "{}",
        first.message
    );
    // Again while pending: the same grant, not a second request.
    let Gated::Refuse(again) = gate.admit(retry("systemctl restart nginx")).await else {
        panic!("not refused");
    };
    assert_eq!(again.approval.as_deref(), Some(id.as_str()));
    assert!(
        again.message.contains("is waiting for approval"),
        "{}",
        again.message
    );
    // Another command is another grant.
    let Gated::Refuse(other) = gate.admit(retry("systemctl stop nginx")).await else {
        panic!("not refused");
    };
    assert_ne!(other.approval.as_deref(), Some(id.as_str()));

    let dba = Identity::for_tests("builtin", "bob", &["dba"]);
    f.services
        .approvals
        .vote(&id, &dba, true, None)
        .await
        .unwrap();
    // Someone else sending the same command gets no use of it.
    let mut mallory = ops();
    mallory.subject = "mallory".into();
    let Gated::Refuse(theirs) = f
        .gate(mallory)
        .admit(retry("systemctl restart nginx"))
        .await
    else {
        panic!("another identity used the grant");
    };
    assert_ne!(theirs.approval.as_deref(), Some(id.as_str()));
    // The requester's retry runs, once.
    let Gated::Forward(a) = gate.admit(retry("systemctl restart nginx")).await else {
        panic!("approved grant not used");
    };
    assert_eq!(a.approval(), Some(id.as_str()));
    let req = f.services.approvals.get(&id).await.unwrap();
    assert!(req.used_us.is_some() && req.used_by.as_deref() == Some("s1"));
    let Gated::Refuse(next) = gate.admit(retry("systemctl restart nginx")).await else {
        panic!("a grant ran twice");
    };
    assert_ne!(next.approval.as_deref(), Some(id.as_str()));
    // On record: every attempt, the run carrying the grant.
    let evs = f.commands();
    let allowed: Vec<_> = evs
        .iter()
        .filter(|e| e.verdict == Some(AuditVerdict::Allow))
        .collect();
    assert_eq!(allowed.len(), 1);
    assert_eq!(allowed[0].approval.as_deref(), Some(id.as_str()));
    assert_eq!(evs.len(), 6);
}
