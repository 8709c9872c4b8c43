//! Cryptography: secret key types, XTS-AES-256 of one data unit, and key wrapping.
//!
//! This module owns every use of a cipher in the crate. It knows nothing of drives or files:
//! callers give it a data unit number (the tweak) and the bytes, or a wrapped key and the
//! associated data that binds it. It never logs, and its errors carry no key material.

mod secret;
mod wrap;
mod xts;

pub use secret::{DataKey, MasterKey, random_bytes};
pub use wrap::{WRAP_NONCE_LEN, WRAPPED_KEY_LEN, WrappedKey, unwrap_data_key, wrap_data_key};
pub use xts::{
    DataCipher, NULL_CIPHER, NULL_CIPHER_ENV, XtsAes256, ensure_cipher_allowed,
    hardware_accelerated,
};

/// Errors of the crypto layer. None of them carries key bytes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The authenticated unwrap failed: wrong master key, or the wrapped key or its associated
    /// data (the header fields) were changed.
    #[error("wrapped data key failed authentication (wrong master key, or header altered)")]
    UnwrapFailed,
    /// A key of the wrong length was given.
    #[error("key has {found} bytes, expected {expected}")]
    BadKeyLength {
        /// Bytes expected.
        expected: usize,
        /// Bytes found.
        found: usize,
    },
    /// An XTS data unit that is empty or not a whole number of 16-byte blocks (ciphertext
    /// stealing is not supported).
    #[error("XTS data unit of {len} bytes is not a non-zero multiple of 16 bytes")]
    BadDataUnitLength {
        /// Bytes given.
        len: usize,
    },
    /// This is a benchmark build with the null cipher and the environment does not allow it.
    #[error(
        "this build has the null cipher (benchmark only, data is not encrypted); \
         set ATREST_ALLOW_NULL_CIPHER_FOR_BENCHMARK=1 to use it anyway"
    )]
    NullCipherNotAllowed,
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
}
