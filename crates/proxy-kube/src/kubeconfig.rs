//! `portcullis kubeconfig`: a kubeconfig that points kubectl at the gateway for one
//! connection, with the caller's token from an environment variable (through an exec
//! credential plugin: `portcullis kubeconfig --print-credential`), from a file kubectl
//! re-reads, or not at all (set later with `kubectl config set-credentials`).

use base64::Engine as _;

/// Where kubectl's token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFrom {
    /// An environment variable, read at each kubectl run by the exec plugin.
    Env(String),
    /// A file (kubeconfig `tokenFile`).
    File(String),
    /// Left out.
    None,
}

/// What the kubeconfig says.
pub struct KubeconfigSpec<'a> {
    /// The connection's name (its context and cluster are `portcullis-<name>`).
    pub connection: &'a str,
    /// `https://gateway:port/c/<connection>` (or a host-routed URL).
    pub server: &'a str,
    /// PEM of the CA the gateway's certificate chains to, embedded.
    pub ca_pem: Option<&'a [u8]>,
    pub token: TokenFrom,
    /// The program kubectl runs as the exec plugin (this binary's path).
    pub program: &'a str,
}

/// A JSON string literal (valid YAML too).
fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The kubeconfig's text (YAML).
pub fn kubeconfig(spec: &KubeconfigSpec<'_>) -> String {
    let name = format!("portcullis-{}", spec.connection);
    let mut out = String::new();
    out.push_str("apiVersion: v1\nkind: Config\n");
    out.push_str(&format!("current-context: {}\n", q(&name)));
    out.push_str("clusters:\n");
    out.push_str(&format!("- name: {}\n  cluster:\n", q(&name)));
    out.push_str(&format!("    server: {}\n", q(spec.server)));
    if let Some(ca) = spec.ca_pem {
        let b64 = base64::engine::general_purpose::STANDARD.encode(ca);
        out.push_str(&format!("    certificate-authority-data: {b64}\n"));
    }
    out.push_str("contexts:\n");
    out.push_str(&format!(
        "- name: {n}\n  context:\n    cluster: {n}\n    user: {n}\n",
        n = q(&name)
    ));
    out.push_str("users:\n");
    out.push_str(&format!("- name: {}\n  user:", q(&name)));
    match &spec.token {
        TokenFrom::Env(var) => {
            out.push_str("\n    exec:\n");
            out.push_str("      apiVersion: client.authentication.k8s.io/v1\n");
            out.push_str(&format!("      command: {}\n", q(spec.program)));
            out.push_str(&format!(
                "      args: [\"kubeconfig\", \"--print-credential\", \"--token-env\", {}]\n",
                q(var)
            ));
            out.push_str("      interactiveMode: Never\n");
            out.push_str("      provideClusterInfo: false\n");
        }
        TokenFrom::File(path) => out.push_str(&format!("\n    tokenFile: {}\n", q(path))),
        TokenFrom::None => out.push_str(" {}\n"),
    }
    out
}

/// The `ExecCredential` an exec plugin prints for `token`.
pub fn exec_credential(token: &str) -> String {
    serde_json::json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": { "token": token },
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_names_the_gateway_and_the_token_source() {
        let text = kubeconfig(&KubeconfigSpec {
            connection: "prod",
            server: "https://gw.example:6443/c/prod",
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n"),
            token: TokenFrom::Env("CI_TOKEN".into()),
            program: "/usr/local/bin/portcullis",
        });
        assert!(
            text.contains("server: \"https://gw.example:6443/c/prod\""),
            "{text}"
        );
        assert!(text.contains("certificate-authority-data: LS0t"), "{text}");
        assert!(text.contains("\"--token-env\", \"CI_TOKEN\""), "{text}");
        assert!(
            text.contains("current-context: \"portcullis-prod\""),
            "{text}"
        );
        let v: serde_json::Value =
            serde_json::from_str(&exec_credential("t0k")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["status"]["token"], "t0k");
    }
}
