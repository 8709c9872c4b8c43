//! Randomized robustness test of the TTLV decoder, bounded in count so that it runs in CI
//! (the open-ended run is the cargo-fuzz target `fuzz/fuzz_targets/ttlv_decode.rs`).
//!
//! Random well-formed trees are encoded, then mutated (bit flips, overwritten length fields,
//! truncation, splicing, random bytes); the decoder must never panic, and whatever it accepts
//! must encode back to exactly the bytes it was given.

use atrest::keystore::kmip::ttlv::{self, Ttlv, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zeroize::Zeroizing;

const ROUNDS: usize = 100_000;

fn random_tag(rng: &mut StdRng) -> u32 {
    let high = if rng.random_bool(0.9) { 0x42 } else { 0x54 };
    (high << 16) | rng.random_range(0..0x100u32)
}

fn random_item(rng: &mut StdRng, depth: usize) -> Ttlv {
    let tag = random_tag(rng);
    let kind = if depth >= 6 {
        rng.random_range(1..10)
    } else {
        rng.random_range(0..10)
    };
    let value = match kind {
        0 => {
            let n = rng.random_range(0..4);
            Value::Structure((0..n).map(|_| random_item(rng, depth + 1)).collect())
        }
        1 => Value::Integer(rng.random()),
        2 => Value::LongInteger(rng.random()),
        3 => {
            let len = 8 * rng.random_range(1..4);
            Value::BigInteger((0..len).map(|_| rng.random()).collect())
        }
        4 => Value::Enumeration(rng.random()),
        5 => Value::Boolean(rng.random()),
        6 => {
            let len = rng.random_range(0..20);
            Value::TextString((0..len).map(|_| rng.random_range('a'..='z')).collect())
        }
        7 => {
            let len = rng.random_range(0..40);
            Value::ByteString(Zeroizing::new((0..len).map(|_| rng.random()).collect()))
        }
        8 => Value::DateTime(rng.random()),
        _ => Value::Interval(rng.random()),
    };
    Ttlv::new(tag, value)
}

fn mutate(rng: &mut StdRng, bytes: &mut Vec<u8>) {
    for _ in 0..rng.random_range(1..4) {
        match rng.random_range(0..6) {
            0 if !bytes.is_empty() => {
                let i = rng.random_range(0..bytes.len());
                bytes[i] ^= 1 << rng.random_range(0..8);
            }
            1 if bytes.len() >= 8 => {
                // Overwrite a length field at an item-aligned offset with something hostile.
                let i = 8 * rng.random_range(0..bytes.len() / 8) + 4;
                let hostile = [0, 1, 7, 8, 0x7FFF_FFFF, 0xFFFF_FFF8, u32::MAX, rng.random()];
                let v: u32 = hostile[rng.random_range(0..hostile.len())];
                if i + 4 <= bytes.len() {
                    bytes[i..i + 4].copy_from_slice(&v.to_be_bytes());
                }
            }
            2 if !bytes.is_empty() => {
                let keep = rng.random_range(0..bytes.len());
                bytes.truncate(keep);
            }
            3 => {
                let at = rng.random_range(0..=bytes.len());
                let extra: Vec<u8> = (0..rng.random_range(1..16)).map(|_| rng.random()).collect();
                bytes.splice(at..at, extra);
            }
            4 if !bytes.is_empty() => {
                // Change a type byte.
                let i = (8 * rng.random_range(0..bytes.len().div_ceil(8)) + 3).min(bytes.len() - 1);
                bytes[i] = rng.random_range(0..16);
            }
            _ => {
                let len = rng.random_range(0..64);
                *bytes = (0..len).map(|_| rng.random()).collect();
            }
        }
    }
}

fn check(bytes: &[u8]) -> bool {
    match ttlv::decode(bytes) {
        Ok(item) => {
            let again = item.encode().expect("a decoded item encodes");
            assert_eq!(
                again, bytes,
                "decode/encode is not the identity for {item:?}"
            );
            true
        }
        Err(e) => {
            // Every error names an offset inside (or at the end of) the input, or a size.
            let _ = e.to_string();
            false
        }
    }
}

#[test]
fn well_formed_items_round_trip() {
    let mut rng = StdRng::seed_from_u64(0x7471_6c76);
    for _ in 0..ROUNDS / 4 {
        let item = random_item(&mut rng, 0);
        let bytes = item.encode().expect("encodes");
        let back = ttlv::decode(&bytes).expect("decodes its own encoding");
        assert_eq!(back.encode().expect("re-encodes"), bytes);
    }
}

#[test]
fn mutated_and_random_input_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x6b6d_6970);
    let mut accepted = 0;
    for _ in 0..ROUNDS {
        let mut bytes = random_item(&mut rng, 0).encode().expect("encodes");
        mutate(&mut rng, &mut bytes);
        if check(&bytes) {
            accepted += 1;
        }
    }
    // Some mutations keep the input valid; most must be rejected.
    assert!(
        accepted > 0 && accepted < ROUNDS,
        "accepted {accepted} of {ROUNDS}"
    );
}

#[test]
fn hostile_lengths_do_not_allocate_or_overrun() {
    // A header claiming the largest lengths, over a tiny buffer, for every type byte.
    for item_type in 0u8..=0x0B {
        for length in [0u32, 4, 8, 0x10_0000, 0x7FFF_FFF8, u32::MAX] {
            let mut bytes = vec![0x42, 0x00, 0x01, item_type];
            bytes.extend_from_slice(&length.to_be_bytes());
            bytes.extend_from_slice(&[0u8; 16]);
            let _ = check(&bytes);
        }
    }
    // Nesting one level past the limit, built by prefixing structure headers.
    let mut bytes = Vec::new();
    for _ in 0..=ttlv::MAX_DEPTH {
        let mut outer = vec![0x42, 0x00, 0x01, 0x01];
        outer.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        outer.extend_from_slice(&bytes);
        bytes = outer;
    }
    assert!(matches!(
        ttlv::decode(&bytes),
        Err(ttlv::TtlvError::TooDeep { .. })
    ));
}
