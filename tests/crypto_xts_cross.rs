//! Cross-check of `DataCipher` against an independent XTS-AES-256: OpenSSL's, through the
//! Python `cryptography` package in the project's venv (`tools/pyenv.sh`), driven by
//! `tools/xts_ref.py`. Random keys, unit numbers (below and above 2^32 and 2^64 - 1) and
//! plaintexts; runs of one unit and runs longer than one tweak batch. The test fails, and does
//! not skip, when the venv or the package is missing.
//!
//! The seed is random and printed; set `ATREST_XTS_CROSS_SEED` to replay a run.
#![cfg(not(feature = "null-cipher"))]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use atrest::BLOCK_SIZE;
use atrest::crypto::{DataCipher, DataKey};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{Value, json};

struct Case {
    key: Vec<u8>,
    first_unit: u64,
    plaintext: Vec<u8>,
}

fn venv_python() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run tools/pyenv.sh (or `make venv`) first; this test needs the \
         pinned `cryptography` package as an independent XTS implementation",
        python.display()
    );
    python
}

fn make_cases(rng: &mut StdRng) -> Vec<Case> {
    let mut units: Vec<(u64, usize)> = vec![
        (0, 1),
        (1, 2),
        (0xffff_ffff, 3),
        (1 << 32, 1),
        ((1 << 32) + 1, 2),
        (u64::MAX - 1, 3),
        (rng.random::<u32>() as u64, 70),
    ];
    for _ in 0..16 {
        let unit = match rng.random_range(0..3) {
            0 => rng.random::<u32>() as u64,
            1 => rng.random::<u64>(),
            _ => (1u64 << 32) + rng.random_range(0..1_000_000),
        };
        units.push((unit, rng.random_range(1..=4)));
    }
    units
        .into_iter()
        .map(|(first_unit, n)| {
            let mut key = vec![0u8; DataKey::LEN];
            rng.fill_bytes(&mut key);
            let mut plaintext = vec![0u8; n * BLOCK_SIZE];
            rng.fill_bytes(&mut plaintext);
            Case {
                key,
                first_unit,
                plaintext,
            }
        })
        .collect()
}

fn reference_ciphertexts(cases: &[Case]) -> (String, Vec<Vec<u8>>) {
    let request = json!({
        "unit_len": BLOCK_SIZE,
        "cases": cases.iter().map(|c| json!({
            "key": hex::encode(&c.key),
            "first_unit": c.first_unit,
            "plaintext": hex::encode(&c.plaintext),
        })).collect::<Vec<_>>(),
    });
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/xts_ref.py");
    let mut child = Command::new("timeout")
        .arg("120")
        .arg(venv_python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tools/xts_ref.py");
    let mut stdin = child.stdin.take().expect("stdin");
    let body = request.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(body.as_bytes()));
    let out = child.wait_with_output().expect("tools/xts_ref.py runs");
    writer
        .join()
        .expect("writer thread")
        .expect("request written");
    assert!(
        out.status.success(),
        "tools/xts_ref.py failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );

    let reply: Value = serde_json::from_slice(&out.stdout).expect("JSON from xts_ref.py");
    let backend = reply["backend"].as_str().unwrap_or("?").to_string();
    let cts = reply["ciphertexts"]
        .as_array()
        .expect("ciphertexts")
        .iter()
        .map(|v| hex::decode(v.as_str().expect("hex string")).expect("hex"))
        .collect();
    (backend, cts)
}

#[test]
fn data_cipher_matches_python_cryptography() {
    let seed = std::env::var("ATREST_XTS_CROSS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    println!("ATREST_XTS_CROSS_SEED={seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let cases = make_cases(&mut rng);

    let (backend, expected) = reference_ciphertexts(&cases);
    println!("reference: {backend}");
    assert_eq!(expected.len(), cases.len(), "one ciphertext per case");

    for (i, (case, want)) in cases.iter().zip(&expected).enumerate() {
        let key = DataKey::from_bytes(&case.key).unwrap();
        let cipher = DataCipher::new(&key);
        let mut buf = case.plaintext.clone();
        cipher.encrypt_units(case.first_unit, &mut buf);
        let units = buf.len() / BLOCK_SIZE;
        assert!(
            &buf == want,
            "case {i} (first unit {:#x}, {units} units): atrest's ciphertext differs from \
             the reference (seed {seed})",
            case.first_unit
        );
        assert_ne!(buf, case.plaintext, "case {i}: ciphertext equals plaintext");

        cipher.decrypt_units(case.first_unit, &mut buf);
        assert!(
            buf == case.plaintext,
            "case {i}: decrypting gives the plaintext back"
        );
    }
}
