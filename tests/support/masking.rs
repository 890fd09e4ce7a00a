//! The masking fixture: customers with sensitive values, a gateway masking them, and checks
//! that none of the originals shows anywhere.

use std::sync::OnceLock;

use super::{Gateway, GatewaySpec, pg};

pub const MASKING: &str = r#"
[[masking]]
connections = ["orders"]
detectors = ["card", "email", "ssn", "iban", "secret"]
columns = ["customers_pii.ssn"]
unmasked_groups = ["dpo"]
"#;

/// Every sensitive value of the fixture, as stored.
pub const ORIGINALS: &[&str] = &[
    "ada.lovelace@example.com",
    "alan.turing@example.org",
    "grace@navy.example.net",
    "grace.h@example.com",
    "orders@shop.example",
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "5500-0000-0000-0004",
    "3782-822463-10005",
    "078051120",
    "219099999",
    "457555462",
    "219-09-9999",
    "DE89 3704 0044 0532 0130 00",
    "GB82 WEST 1234 5698 7654 32",
    "FR1420041010050500013M02606",
    "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWprbG1ub3BxcnN0dXZ3eHl6QUJD",
    "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY3ODkwYWJjZGVm",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9",
    // base64 of the first SSN (`encode(convert_to(ssn, 'UTF8'), 'base64')`)
    "MDc4MDUxMTIw",
];

/// Card numbers and IBANs with separators removed: no re-formatting may reveal them.
pub const COMPACT: &[&str] = &[
    "4111111111111111",
    "5500000000000004",
    "378282246310005",
    "DE89370400440532013000",
    "GB82WEST12345698765432",
];

/// Load the fixture once per test binary.
pub fn fixture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let sql = std::fs::read_to_string(super::root().join("tests/fixtures/customers_pii.sql"))
            .expect("fixture");
        pg().admin_sql(&format!(
            "{sql}\nGRANT ALL ON customers_pii TO app; GRANT ALL ON SEQUENCE customers_pii_id_seq TO app;"
        ));
    });
}

pub fn gateway() -> Gateway {
    gateway_with(MASKING)
}

/// A gateway over the fixture with `masking` (a `[[masking]]` block) as its masking config.
pub fn gateway_with(masking: &'static str) -> Gateway {
    fixture();
    Gateway::start(GatewaySpec {
        extra: masking,
        ..Default::default()
    })
}

/// No original sensitive value appears anywhere in `text`.
pub fn assert_no_originals(what: &str, text: &str) {
    if let Some(o) = original_in(text) {
        panic!("{what}: `{o}` leaked in:\n{text}");
    }
}

/// The first original sensitive value that appears in `text`, if any (card numbers and
/// IBANs also with their separators removed).
pub fn original_in(text: &str) -> Option<&'static str> {
    let compact: String = text.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    ORIGINALS
        .iter()
        .find(|o| text.contains(*o))
        .or_else(|| COMPACT.iter().find(|o| compact.contains(*o)))
        .copied()
}

/// Run `sql` through psql; it must succeed and reveal nothing.
pub fn leak_attempt(gw: &Gateway, token: &str, sql: &str) -> String {
    let r = gw.psql(token, sql);
    assert!(r.ok, "{sql}: {}", r.stderr);
    assert_no_originals(sql, &format!("{}{}", r.stdout, r.stderr));
    r.stdout
}

/// The `command_end` event of the command whose statement is `sql`.
pub fn command_end(gw: &Gateway, sql: &str) -> serde_json::Value {
    let cmd = gw
        .audit(&["--kind", "command"])
        .into_iter()
        .rfind(|e| e["statement"] == sql)
        .unwrap_or_else(|| panic!("no command event for {sql}"));
    gw.audit(&[
        "--kind",
        "command_end",
        "--session",
        cmd["session"].as_str().unwrap(),
    ])
    .into_iter()
    .find(|e| e["command"] == cmd["command"])
    .unwrap_or_else(|| panic!("no command_end for {sql}"))
}
