//! SSH requests as policy sees them: exec lines decided per parsed command.

use std::sync::Arc;

use super::tests::ci;
use super::*;
use crate::action::{Action, SshKind, SshRequest};
use crate::config::Protocol;
use crate::identity::Identity;

pub(super) fn ssh(kind: SshKind, command: Option<&str>) -> Action {
    match (kind, command) {
        (SshKind::Exec, Some(line)) => SshRequest::exec(Arc::from(line)).remove(0),
        _ => Action::Ssh(SshRequest::new(kind, command.map(Arc::from))),
    }
}

#[test]
fn ssh_exec_command_is_context() {
    let e = PolicyEngine::from_text(
        r#"
@id("ops-exec")
permit (principal in Group::"ci", action in Action::"ssh", resource);
@id("no-rm")
@reason("no deleting")
forbid (principal, action == Action::"ssh.exec", resource)
when { context has command && context.command like "*rm *" };
"#,
        1,
    )
    .unwrap();
    let web = ConnectionRef {
        name: "web",
        protocol: Protocol::Ssh,
    };
    assert!(
        e.decide(&ci(), &web, &ssh(SshKind::Exec, Some("uptime")))
            .is_allowed()
    );
    assert!(
        e.decide(&ci(), &web, &ssh(SshKind::Shell, None))
            .is_allowed()
    );
    let d = e.decide(&ci(), &web, &ssh(SshKind::Exec, Some("sudo rm -rf /")));
    assert_eq!(d.verdict, Verdict::Deny);
    assert_eq!(d.reason.as_deref(), Some("no deleting"));
    assert_eq!(d.policies, vec!["no-rm"]);
    let other = Identity::for_tests("builtin", "x", &["guests"]);
    assert!(
        !e.decide(&other, &web, &ssh(SshKind::Sftp, None))
            .is_allowed()
    );
}

/// The shipped SSH example: an allow-list of programs, decided per simple command, that the
/// usual ways around a string rule do not get past.
#[test]
fn ssh_exec_allow_list_decides_each_program() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/ssh.cedar"),
    )
    .unwrap();
    let e = PolicyEngine::from_text(&text, 1).unwrap();
    let ops = Identity::for_tests("builtin", "alice", &["ops"]);
    let web = ConnectionRef {
        name: "web",
        protocol: Protocol::Ssh,
    };
    let decide = |line: &str| e.decide_all(&ops, &web, &SshRequest::exec(Arc::from(line)));
    for line in [
        "ls -la /var/log",
        "df -h && uptime",
        "ps aux | grep nginx",
        "systemctl status nginx",
        "/bin/systemctl status nginx",
        "tail -n 5 /var/log/syslog 2>/dev/null",
    ] {
        let d = decide(line);
        assert!(d.is_allowed(), "{line}: {d:?}");
    }
    for line in [
        "rm -rf /tmp/x",
        "rm -fr /tmp/x",
        "rm -r -f /tmp/x",
        "\\rm -rf /tmp/x",
        "/bin/rm -rf /tmp/x",
        "find / -name x -delete",
        "ls && id -un; rm -rf /",
        "ls $(rm -rf /)",
        "ls > /etc/passwd",
        "sh -c 'rm -rf /'",
        "/usr/bin/env rm -rf /",
        "$SHELL -c id",
        "eval ls",
        "cat <<EOF\nx\nEOF",
        " systemctl stop nginx",
        "systemctl restart nginx; rm -rf /",
    ] {
        let d = decide(line);
        assert_eq!(d.verdict, Verdict::Deny, "{line}: {d:?}");
    }
    let d = decide("ls && rm -rf /");
    assert!(
        d.reason
            .as_deref()
            .is_some_and(|r| r.contains("it runs rm")),
        "{d:?}"
    );
    let d = decide("ls $(id)");
    assert!(
        d.reason
            .as_deref()
            .is_some_and(|r| r.contains("command substitution")),
        "{d:?}"
    );
    // Restarting one unit is held for approval, however the program is spelled.
    for line in [
        "systemctl restart nginx",
        "  /usr/bin/systemctl restart nginx",
    ] {
        assert!(
            matches!(decide(line).verdict, Verdict::Review { .. }),
            "{line}"
        );
    }
    assert_eq!(
        decide("systemctl restart nginx sshd").verdict,
        Verdict::Deny
    );
}
