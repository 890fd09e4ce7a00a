//! An SSH gateway in front of the test sshd, and how tests reach it with the OpenSSH client.

use std::process::{Command, Output, Stdio};

use super::{Gateway, current_user, free_port, sshd};

pub const POLICY: &str = r#"
@id("connect")
permit(principal in Group::"ops", action == Action::"connect", resource);

@id("ops-ssh")
permit(principal in Group::"ops",
       action in [Action::"ssh.exec", Action::"ssh.shell", Action::"ssh.sftp"], resource)
unless { context has command && context.command like "reboot*" };

@id("no-rm")
@reason("deleting files is not allowed through the gateway")
forbid(principal, action == Action::"ssh.exec", resource)
when { context has command && context.command like "*rm *" };

@id("tunnels")
permit(principal in Group::"tunnel", action == Action::"ssh.forward", resource);

@id("reboot-needs-approval")
@approval("1")
@approvers("ops")
permit(principal in Group::"ops", action == Action::"ssh.exec", resource)
when { context has command && context.command like "reboot*" };
"#;

pub struct SshGw {
    pub gw: Gateway,
    pub port: u16,
}

pub fn start() -> SshGw {
    start_with("")
}

/// A gateway with `extra` TOML appended to its config.
pub fn start_with(extra: &str) -> SshGw {
    start_with_policy(POLICY, extra)
}

/// A gateway deciding by `policy`, with `extra` TOML appended to its config.
pub fn start_with_policy(policy: &str, extra: &str) -> SshGw {
    let sshd = sshd();
    let port = free_port();
    let user = current_user();
    let gw = Gateway::start_config(port, policy, |_dir, admin| {
        format!(
            r#"
[gateway]
state_dir = "state"
admin_listen = "127.0.0.1:{admin}"
policy = "policy.cedar"

[[identity.issuers]]
name = "builtin"

[[listeners]]
protocol = "ssh"
listen = "127.0.0.1:{port}"

[[connections]]
name = "web"
protocol = "ssh"
target = "127.0.0.1:{sshd_port}"
user = "{user}"
private_key_file = "{key}"
known_hosts = "{known}"

[[connections]]
name = "pinned"
protocol = "ssh"
target = "127.0.0.1:{sshd_port}"
user = "{user}"
private_key_file = "{key}"
host_key_fingerprint = "{fp}"

[[connections]]
name = "impostor"
protocol = "ssh"
target = "127.0.0.1:{sshd_port}"
user = "{user}"
private_key_file = "{key}"
host_key_fingerprint = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

[audit]
jsonl = "audit.jsonl"
{extra}
"#,
            sshd_port = sshd.port,
            key = sshd.client_key().display(),
            known = sshd.known_hosts().display(),
            fp = sshd.fingerprint(),
        )
    });
    SshGw { gw, port }
}

impl SshGw {
    /// ssh options towards the gateway: token by password, no host key bookkeeping.
    pub fn ssh_command(&self, prog: &str, token: &str) -> Command {
        let mut cmd = Command::new("sshpass");
        cmd.args(["-p", token, prog])
            .args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "PubkeyAuthentication=no"])
            .args([
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
            ])
            .args(["-o", "ConnectTimeout=10"])
            .stdin(Stdio::null());
        cmd
    }

    pub fn ssh(&self, token: &str, target: &str, command: &str) -> Output {
        self.ssh_command("ssh", token)
            .args([
                "-p",
                &self.port.to_string(),
                &format!("{target}@127.0.0.1"),
                command,
            ])
            .output()
            .expect("ssh")
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
