//! Real PostgreSQL drivers driven as processes: asyncpg and psycopg 3 (from PyPI, installed
//! into `tests/clients/pylib` by `deploy/setup.sh`), node-postgres (npm, in
//! `tests/clients/node_modules`) and PgJDBC (Debian's `libpostgresql-jdbc-java`, run by the
//! JDK's single-file source launcher). Each runs a probe script that prints its results as JSON,
//! against the gateway or directly against PostgreSQL, so the two can be compared.

use std::process::Command;
use std::sync::OnceLock;

use super::masking::fixture;
use super::{Gateway, GatewaySpec, pg, root};

/// The masking block of these tests: the fixture's, with rules on an integer column, an
/// enum column and a field of a composite type.
pub const CLIENTS_MASKING: &str = r#"
[[masking]]
connections = ["orders"]
detectors = ["card", "email", "ssn", "iban", "secret"]
columns = ["customers_pii.ssn", "customer_profiles.pin", "customer_profiles.risk", "postal_contact.ssn"]
unmasked_groups = ["dpo"]
"#;

/// A driver with its probe script.
#[derive(Clone, Copy, Debug)]
pub enum Driver {
    Asyncpg,
    Psycopg,
    NodePg,
    Jdbc,
}

/// Where a probe connects.
pub struct Target {
    pub port: u16,
    pub user: String,
    pub password: String,
}

impl Target {
    /// PostgreSQL itself, as the gateway's held credential.
    pub fn direct() -> Target {
        Target {
            port: pg().port,
            user: "app".into(),
            password: pg().password.clone(),
        }
    }

    /// The gateway, with a token of `groups`.
    pub fn gateway(gw: &Gateway, sub: &str, groups: &[&str]) -> Target {
        Target {
            port: gw.pg_port,
            user: "ci".into(),
            password: gw.token(sub, groups),
        }
    }
}

/// Load the structured-types fixture (after the customers one) once per test binary.
pub fn profiles_fixture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    fixture();
    ONCE.get_or_init(|| {
        let sql =
            std::fs::read_to_string(root().join("tests/fixtures/customer_profiles.sql")).unwrap();
        pg().admin_sql(&format!("{sql}\nGRANT ALL ON customer_profiles TO app;"));
    });
}

/// A gateway over both fixtures with [`CLIENTS_MASKING`].
pub fn gateway() -> Gateway {
    profiles_fixture();
    Gateway::start(GatewaySpec {
        extra: CLIENTS_MASKING,
        ..Default::default()
    })
}

/// Run `driver`'s probe against `target`; its JSON output.
pub fn probe(driver: Driver, target: &Target) -> serde_json::Value {
    let dir = root().join("tests/clients");
    let mut cmd = match driver {
        Driver::Asyncpg | Driver::Psycopg => {
            let mut c = Command::new("python3");
            c.arg(dir.join(match driver {
                Driver::Asyncpg => "asyncpg_probe.py",
                _ => "psycopg_probe.py",
            }))
            .env("PYTHONPATH", dir.join("pylib"));
            c
        }
        Driver::NodePg => {
            let mut c = Command::new("node");
            c.arg(dir.join("pg_probe.mjs"));
            c
        }
        Driver::Jdbc => {
            let mut c = Command::new("java");
            c.args(["-cp", "/usr/share/java/postgresql.jar"])
                .arg(dir.join("JdbcProbe.java"));
            c
        }
    };
    let out = cmd
        .args(["127.0.0.1", &target.port.to_string(), &target.user])
        .arg(&target.password)
        .arg("orders")
        .output()
        .expect("run the driver's probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{driver:?} probe failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{driver:?} probe printed no JSON ({e}): {stdout}"))
}

/// Every entry of a probe's output that is an error, as `name: error`.
pub fn errors(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| v.get("error").map(|e| format!("{k}: {e}")))
                .collect()
        })
        .unwrap_or_default()
}
