//! The `null-cipher` feature (benchmarks only): in such a build `DataCipher` leaves bytes as
//! they are, says so once at error level, and `ensure_cipher_allowed` refuses unless
//! ATREST_ALLOW_NULL_CIPHER_FOR_BENCHMARK=1. In a normal build none of that happens.

use atrest::crypto::{DataCipher, DataKey, NULL_CIPHER, ensure_cipher_allowed};

#[cfg(not(feature = "null-cipher"))]
#[test]
fn normal_build_encrypts_and_allows() {
    const { assert!(!NULL_CIPHER) };
    assert!(ensure_cipher_allowed().is_ok());
    let cipher = DataCipher::new(&DataKey::generate().unwrap());
    let mut buf = vec![0u8; 8192];
    cipher.encrypt_units(3, &mut buf);
    assert_ne!(buf, vec![0u8; 8192], "a normal build encrypts");
}

#[cfg(feature = "null-cipher")]
#[test]
fn null_cipher_build_is_a_loud_no_op() {
    use atrest::crypto::NULL_CIPHER_ENV;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    const { assert!(NULL_CIPHER) };
    let allowed = std::env::var(NULL_CIPHER_ENV).as_deref() == Ok("1");
    match ensure_cipher_allowed() {
        Ok(()) => assert!(allowed, "refusal expected without {NULL_CIPHER_ENV}=1"),
        Err(e) => {
            assert!(!allowed);
            assert!(
                e.to_string().contains(NULL_CIPHER_ENV),
                "the error names the variable"
            );
        }
    }

    let log = Captured::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..3 {
            let cipher = DataCipher::new(&DataKey::generate().unwrap());
            let mut buf: Vec<u8> = (0..8192).map(|i| i as u8).collect();
            let before = buf.clone();
            cipher.encrypt_units(7, &mut buf);
            assert_eq!(buf, before, "the null cipher leaves bytes unchanged");
            cipher.decrypt_units(7, &mut buf);
            assert_eq!(buf, before);
        }
    });
    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("null cipher"));
    assert_eq!(
        warnings.count(),
        1,
        "exactly one error-level line, got:\n{text}"
    );
}
