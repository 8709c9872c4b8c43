//! XTS-AES-256 throughput: atrest's `DataCipher` against the `xts-mode` crate and OpenSSL's
//! aes-256-xts, in the same run, on one 4 KiB unit and on a 1 MiB run (256 units), encrypt
//! and decrypt. Every unit gets its own tweak (its unit number), as on a drive; for OpenSSL
//! that means a fresh IV per unit on a context keyed once. `openssl_same_iv` leaves the IV
//! alone, as `openssl speed -evp aes-256-xts` does: the bare cipher speed.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that other work on
//! a shared machine does not count; `ATREST_BENCH_WALL=1` measures wall time instead. After
//! the criterion groups, a table gives GB/s and the ratio atrest / OpenSSL, read from the
//! estimates criterion has just written.
//!
//! Run: `cargo bench --bench xts` (add `-- --quick` for a short run).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use aes::Aes256;
use aes::cipher::KeyInit;
use atrest::BLOCK_SIZE;
use atrest::crypto::{DataCipher, DataKey};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{Criterion, Throughput};
use nix::time::{ClockId, clock_gettime};
use openssl::cipher::Cipher;
use openssl::cipher_ctx::CipherCtx;
use xts_mode::{Xts128, get_tweak_default};

/// CPU time of the calling thread (or wall time), in nanoseconds.
struct ThreadTime {
    wall: bool,
    formatter: WallTime,
}

fn thread_cpu_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

impl Measurement for ThreadTime {
    type Intermediate = (Instant, u64);
    type Value = Duration;

    fn start(&self) -> Self::Intermediate {
        (Instant::now(), thread_cpu_ns())
    }

    fn end(&self, (wall, cpu): Self::Intermediate) -> Self::Value {
        if self.wall {
            wall.elapsed()
        } else {
            Duration::from_nanos(thread_cpu_ns().saturating_sub(cpu))
        }
    }

    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        self.formatter.formatter()
    }
}

/// A fixed test key (two different halves, as OpenSSL requires).
fn key_bytes() -> [u8; 64] {
    std::array::from_fn(|i| (i as u8).wrapping_mul(37).wrapping_add(11))
}

/// OpenSSL's aes-256-xts, keyed once, in place; each unit re-initialises only the IV.
struct OpenSslXts {
    enc: CipherCtx,
    dec: CipherCtx,
}

impl OpenSslXts {
    fn new(key: &[u8; 64]) -> Self {
        let mut enc = CipherCtx::new().unwrap();
        enc.encrypt_init(Some(Cipher::aes_256_xts()), Some(key), Some(&[0u8; 16]))
            .unwrap();
        let mut dec = CipherCtx::new().unwrap();
        dec.decrypt_init(Some(Cipher::aes_256_xts()), Some(key), Some(&[0u8; 16]))
            .unwrap();
        OpenSslXts { enc, dec }
    }

    fn run(&mut self, encrypt: bool, first_unit: u64, buf: &mut [u8], fresh_iv: bool) {
        let ctx = if encrypt {
            &mut self.enc
        } else {
            &mut self.dec
        };
        for (i, unit) in buf.chunks_exact_mut(BLOCK_SIZE).enumerate() {
            if fresh_iv {
                let iv = (u128::from(first_unit) + i as u128).to_le_bytes();
                if encrypt {
                    ctx.encrypt_init(None, None, Some(&iv)).unwrap();
                } else {
                    ctx.decrypt_init(None, None, Some(&iv)).unwrap();
                }
            }
            let n = ctx.cipher_update_inplace(unit, BLOCK_SIZE).unwrap();
            assert_eq!(n, BLOCK_SIZE, "OpenSSL XTS processes the whole unit");
        }
    }
}

const SIZES: [(&str, usize); 2] = [("4KiB", BLOCK_SIZE), ("1MiB", 1 << 20)];
const IMPLS: [&str; 4] = ["atrest", "xts_mode", "openssl", "openssl_same_iv"];

fn bench_xts(c: &mut Criterion<ThreadTime>) {
    let key = key_bytes();
    let atrest = DataCipher::new(&DataKey::from_bytes(&key).unwrap());
    let xts_mode = Xts128::new(
        Aes256::new_from_slice(&key[..32]).unwrap(),
        Aes256::new_from_slice(&key[32..]).unwrap(),
    );
    let mut openssl = OpenSslXts::new(&key);
    println!(
        "aes::hardware_accelerated() = {}",
        aes::hardware_accelerated()
    );

    for (label, len) in SIZES {
        for encrypt in [true, false] {
            let op = if encrypt { "encrypt" } else { "decrypt" };
            let mut group = c.benchmark_group(format!("xts_{op}_{label}"));
            group.throughput(Throughput::Bytes(len as u64));
            let mut buf = vec![0x5au8; len];
            let mut unit = 0x1_0000_0000u64;

            group.bench_function("atrest", |b| {
                b.iter(|| {
                    unit += 1;
                    if encrypt {
                        atrest.encrypt_units(unit, black_box(&mut buf));
                    } else {
                        atrest.decrypt_units(unit, black_box(&mut buf));
                    }
                })
            });
            group.bench_function("xts_mode", |b| {
                b.iter(|| {
                    unit += 1;
                    let buf = black_box(&mut buf[..]);
                    if encrypt {
                        xts_mode.encrypt_area(buf, BLOCK_SIZE, unit.into(), get_tweak_default);
                    } else {
                        xts_mode.decrypt_area(buf, BLOCK_SIZE, unit.into(), get_tweak_default);
                    }
                })
            });
            group.bench_function("openssl", |b| {
                b.iter(|| {
                    unit += 1;
                    openssl.run(encrypt, unit, black_box(&mut buf), true);
                })
            });
            group.bench_function("openssl_same_iv", |b| {
                b.iter(|| openssl.run(encrypt, 0, black_box(&mut buf), false))
            });
            group.finish();
        }
    }
}

/// Mean nanoseconds per iteration from criterion's estimates of this run.
fn mean_ns(group: &str, function: &str) -> Option<f64> {
    let home = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from);
            target
                .unwrap_or_else(|| PathBuf::from("target"))
                .join("criterion")
        });
    let path = home.join(group).join(function).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

fn print_summary() {
    let clock = if wall_clock() {
        "wall time"
    } else {
        "thread CPU time"
    };
    println!("\nXTS-AES-256 throughput, GB/s ({clock}, criterion means of this run)\n");
    println!(
        "| operation | atrest | xts-mode | OpenSSL | OpenSSL same IV | atrest/OpenSSL | \
         atrest/OpenSSL same IV |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (label, len) in SIZES {
        for op in ["encrypt", "decrypt"] {
            let group = format!("xts_{op}_{label}");
            let gbps: Vec<Option<f64>> = IMPLS
                .iter()
                .map(|f| mean_ns(&group, f).map(|ns| len as f64 / ns))
                .collect();
            let cell = |v: Option<f64>| v.map_or("?".into(), |g| format!("{g:.2}"));
            let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.2}", a / b),
                _ => "?".into(),
            };
            println!(
                "| {op} {label} | {} | {} | {} | {} | {} | {} |",
                cell(gbps[0]),
                cell(gbps[1]),
                cell(gbps[2]),
                cell(gbps[3]),
                ratio(gbps[0], gbps[2]),
                ratio(gbps[0], gbps[3]),
            );
        }
    }
}

fn wall_clock() -> bool {
    std::env::var("ATREST_BENCH_WALL").as_deref() == Ok("1")
}

fn main() {
    let measurement = ThreadTime {
        wall: wall_clock(),
        formatter: WallTime,
    };
    let mut c = Criterion::default()
        .with_measurement(measurement)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_xts(&mut c);
    c.final_summary();
    print_summary();
}
