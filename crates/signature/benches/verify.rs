//! Verification cost per ~3 KB event next to the raw HMAC-SHA256 of the same
//! bytes (the floor: one MAC over `t.body`, keyed each time).
//!
//! Run with `cargo bench -p hookline-signature`. Prints ns per operation and
//! the ratio; several rounds, median reported, so noisy machines still give a
//! usable comparison.

use std::hint::black_box;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::Sha256;

fn body_3kb() -> Vec<u8> {
    let event = include_str!("../../../testdata/stripe-events/payment_intent.succeeded.json");
    let mut body = event.as_bytes().to_vec();
    // Pad the description to reach ~3 KB, still valid JSON.
    let pad = " ".repeat(3072usize.saturating_sub(body.len()));
    body.splice(1..1, pad.into_bytes());
    body
}

fn time_per_op(iters: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let secret = b"whsec_test_benchmarkSecretValue000000";
    let body = body_3kb();
    let t = 1_732_780_995i64;
    let header = hookline_signature::header_for(secret, t, &body);
    let verifier = hookline_signature::Verifier::new([secret]);
    let iters = 20_000;
    let (mut raw, mut ver) = (Vec::new(), Vec::new());
    for _ in 0..9 {
        raw.push(time_per_op(iters, || {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
            mac.update(black_box(t.to_string().as_bytes()));
            mac.update(b".");
            mac.update(black_box(&body));
            black_box(mac.finalize().into_bytes());
        }));
        ver.push(time_per_op(iters, || {
            let r = verifier.verify(black_box(&header), black_box(&body), t, 300);
            assert!(r.is_ok());
        }));
    }
    let (raw, ver) = (median(raw), median(ver));
    println!("body bytes:            {}", body.len());
    println!("raw HMAC-SHA256:       {raw:.0} ns/op");
    println!("Verifier::verify:      {ver:.0} ns/op");
    println!("ratio verify / raw:    {:.2}x (target <= 1.30x)", ver / raw);
}
