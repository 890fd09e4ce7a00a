//! Precision: how often the detectors fire on data that only looks sensitive.

use super::tests::{ALL, block, luhn_complete, masked, session};
use super::*;

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn digits(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b'0' + (self.next() % 10) as u8))
            .collect()
    }
}

#[test]
fn precision_on_lookalike_data() {
    let s = session(&[block(ALL, &[])]);
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    const N: usize = 100_000;
    type Gen = fn(&mut XorShift) -> String;
    let gens: [(&str, Gen, f64); 10] = [
        ("random 9-digit numbers", |r| r.digits(9), 0.0),
        ("random 16-digit numbers", |r| r.digits(16), 0.06),
        (
            "random 13-19 digit numbers",
            |r| {
                let n = 13 + (r.next() % 7) as usize;
                r.digits(n)
            },
            0.06,
        ),
        (
            "order ids ORD-YYYY-NNNNNN",
            |r| format!("ORD-20{}-{}", r.digits(2), r.digits(6)),
            0.0,
        ),
        (
            "national phone-like 555-123-4567 / (555) 123 4567",
            |r| {
                if r.next() % 2 == 0 {
                    format!("{}-{}-{}", r.digits(3), r.digits(3), r.digits(4))
                } else {
                    format!("({}) {} {}", r.digits(3), r.digits(3), r.digits(4))
                }
            },
            0.0,
        ),
        (
            "dates and times",
            |r| {
                format!(
                    "20{}-{}-{} {}:{}:{}",
                    r.digits(2),
                    r.digits(2),
                    r.digits(2),
                    r.digits(2),
                    r.digits(2),
                    r.digits(2)
                )
            },
            0.0,
        ),
        (
            "UUIDs",
            |r| {
                format!(
                    "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                    r.next() as u32,
                    r.next() as u16,
                    r.next() % 4096,
                    r.next() % 4096,
                    r.next() % (1 << 48)
                )
            },
            0.0,
        ),
        (
            "IPv4 and versions",
            |r| {
                format!(
                    "{}.{}.{}.{} v{}.{}.{}",
                    r.next() % 256,
                    r.next() % 256,
                    r.next() % 256,
                    r.next() % 256,
                    r.next() % 20,
                    r.next() % 50,
                    r.next() % 100
                )
            },
            0.0,
        ),
        (
            "IBAN-shaped DE + 20 random digits",
            |r| format!("DE{}", r.digits(20)),
            0.02,
        ),
        (
            "amounts and quantities",
            |r| format!("{}.{} EUR x{}", r.digits(7), r.digits(2), r.digits(3)),
            0.0,
        ),
    ];
    for (name, generate, bound) in gens {
        let mut hits = [0u64; KIND_COUNT];
        let mut any = 0u64;
        for _ in 0..N {
            let v = generate(&mut rng);
            let mut out = Vec::new();
            let mut c = MaskCounts::new();
            if s.mask_value(v.as_bytes(), TypeHint::Text, &mut out, &mut c) != Masked::Unchanged {
                any += 1;
            }
            for k in [
                Kind::Card,
                Kind::Email,
                Kind::Ssn,
                Kind::Iban,
                Kind::Phone,
                Kind::Pair,
            ] {
                hits[k as usize] += c.kind(k);
            }
        }
        let rate = any as f64 / N as f64;
        println!(
            "false positives, {name}: {:.3}% (card {}, ssn {}, iban {}, phone {}, email {}, secret {})",
            rate * 100.0,
            hits[Kind::Card as usize],
            hits[Kind::Ssn as usize],
            hits[Kind::Iban as usize],
            hits[Kind::Phone as usize],
            hits[Kind::Email as usize],
            hits[Kind::Pair as usize],
        );
        assert!(rate <= bound, "{name}: {rate} > {bound}");
    }
    // Recall on the same scale: every generated valid card, with any separator, is found.
    let mut missed = 0;
    for _ in 0..N {
        let body = format!("4{}", rng.digits(14));
        let c = luhn_complete(body.as_bytes());
        let v = match rng.next() % 3 {
            0 => c.clone(),
            1 => format!("{}-{}-{}-{}", &c[..4], &c[4..8], &c[8..12], &c[12..]),
            _ => format!(
                "paid with {} {} {} {} today",
                &c[..4],
                &c[4..8],
                &c[8..12],
                &c[12..]
            ),
        };
        if masked(&s, &v).is_none() {
            missed += 1;
        }
    }
    println!("recall, generated valid cards: {} of {N} missed", missed);
    assert_eq!(missed, 0);
}
