//! Masking throughput per core: mixed text rows (~10% sensitive values), clean text rows, and
//! a JSON document, each value masked through `ResultMask::mask` as the proxy calls it.

// Test code: a step that fails fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway_core::config::MaskingConfig;
use gateway_core::masking::{ColumnRef, MaskCounts, Masked, MaskingEngine, TypeHint};

const WORDS: &[&str] = &[
    "alpha",
    "order",
    "shipped",
    "customer",
    "delivery",
    "warehouse",
    "berlin",
    "invoice",
    "pending",
    "returned",
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "Main",
    "Street",
    "Suite",
    "Building",
    "North",
    "Gateway",
    "priority",
    "standard",
];

const SENSITIVE: &[&str] = &[
    "jane.doe@example.com",
    "4111 1111 1111 1111",
    "+49 151 12345678",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "password=hunter2",
];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 as usize
    }
}

/// Rows of six text columns: names, addresses, notes, dates, amounts, order ids.
fn rows(n: usize, sensitive_share: usize) -> Vec<Vec<Vec<u8>>> {
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    (0..n)
        .map(|i| {
            (0..6)
                .map(|c| {
                    if sensitive_share > 0 && r.next() % 100 < sensitive_share {
                        let s = SENSITIVE[r.next() % SENSITIVE.len()];
                        return format!("{} {}", WORDS[r.next() % WORDS.len()], s).into_bytes();
                    }
                    let v = match c {
                        0 => format!(
                            "{} {}",
                            WORDS[r.next() % WORDS.len()],
                            WORDS[r.next() % WORDS.len()]
                        ),
                        1 => format!(
                            "{} {} Street, {} Berlin",
                            r.next() % 200,
                            WORDS[r.next() % WORDS.len()],
                            10000 + r.next() % 9000
                        ),
                        2 => (0..8)
                            .map(|_| WORDS[r.next() % WORDS.len()])
                            .collect::<Vec<_>>()
                            .join(" "),
                        3 => format!(
                            "2024-{:02}-{:02} 12:{:02}:00",
                            1 + r.next() % 12,
                            1 + r.next() % 28,
                            r.next() % 60
                        ),
                        4 => format!("{}.{:02}", r.next() % 100_000, r.next() % 100),
                        _ => format!("ORD-2024-{:06}", i),
                    };
                    v.into_bytes()
                })
                .collect()
        })
        .collect()
}

fn json_doc() -> Vec<u8> {
    let mut r = Rng(7);
    let items: Vec<String> = (0..200)
        .map(|i| {
            let email = if r.next().is_multiple_of(10) { "jane@example.com" } else { "n/a" };
            format!(
                r#"{{"id":{i},"name":"{} {}","email":"{email}","password":"{}","tags":["{}","{}"],"total":{}.{:02},"created":"2024-01-02T10:00:00Z"}}"#,
                WORDS[r.next() % WORDS.len()],
                WORDS[r.next() % WORDS.len()],
                WORDS[r.next() % WORDS.len()],
                WORDS[r.next() % WORDS.len()],
                WORDS[r.next() % WORDS.len()],
                r.next() % 1000,
                r.next() % 100
            )
        })
        .collect();
    format!("[{}]", items.join(",")).into_bytes()
}

fn bench(c: &mut Criterion) {
    let block = MaskingConfig {
        connections: vec!["orders".into()],
        detectors: ["card", "email", "ssn", "iban", "phone", "secret"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        columns: vec!["customers.ssn".into(), "*.password".into()],
        ..Default::default()
    };
    let engine = MaskingEngine::new(&[block], [3; 32]).expect("valid block");
    let session = engine.for_session("orders", &[]).expect("applies");
    let names = ["name", "address", "notes", "created", "amount", "order_id"];
    let text_mask = session.columns(
        names.iter().map(|n| ColumnRef {
            table: Some("orders"),
            name: n,
            hint: TypeHint::Text,
        }),
        None,
    );
    let mut g = c.benchmark_group("masking");
    for (label, data) in [
        ("mixed_text_10pct", rows(2000, 10)),
        ("clean_text", rows(2000, 0)),
    ] {
        let bytes: usize = data.iter().flatten().map(Vec::len).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(label, |b| {
            let mut out = Vec::with_capacity(256);
            let mut counts = MaskCounts::new();
            b.iter(|| {
                let mut changed = 0usize;
                for row in &data {
                    for (i, v) in row.iter().enumerate() {
                        if text_mask.mask(i, v, &mut out, &mut counts) != Masked::Unchanged {
                            changed += 1;
                        }
                    }
                }
                std::hint::black_box(changed)
            });
        });
    }
    let doc = json_doc();
    let json_mask = session.columns(
        [ColumnRef {
            table: None,
            name: "json_agg",
            hint: TypeHint::Json,
        }],
        None,
    );
    g.throughput(Throughput::Bytes(doc.len() as u64));
    g.bench_function("json_document", |b| {
        let mut out = Vec::with_capacity(doc.len() + 1024);
        let mut counts = MaskCounts::new();
        b.iter(|| std::hint::black_box(json_mask.mask(0, &doc, &mut out, &mut counts)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
