//! Secret key types: zeroized on drop, locked in memory, never printed.

use zeroize::Zeroize;

use super::CryptoError;

/// Fills `out` from the operating system's random source.
pub fn random_bytes(out: &mut [u8]) -> Result<(), CryptoError> {
    getrandom::fill(out).map_err(|e| CryptoError::Random(e.to_string()))
}

/// A fixed-size secret on the heap (so that its address is stable while it is locked),
/// zeroized and unlocked on drop. It implements no `Debug`, `Display` or `Clone`.
struct SecretBytes<const N: usize> {
    bytes: Box<[u8; N]>,
    locked: bool,
}

impl<const N: usize> SecretBytes<N> {
    fn zeroed() -> Self {
        let bytes = Box::new([0u8; N]);
        let locked = crate::sys::lock_memory(&bytes[..]).is_ok();
        SecretBytes { bytes, locked }
    }

    fn random() -> Result<Self, CryptoError> {
        let mut s = Self::zeroed();
        random_bytes(&mut s.bytes[..])?;
        Ok(s)
    }

    fn from_slice(src: &[u8]) -> Result<Self, CryptoError> {
        if src.len() != N {
            return Err(CryptoError::BadKeyLength {
                expected: N,
                found: src.len(),
            });
        }
        let mut s = Self::zeroed();
        s.bytes.copy_from_slice(src);
        Ok(s)
    }
}

impl<const N: usize> Drop for SecretBytes<N> {
    fn drop(&mut self) {
        self.bytes.zeroize();
        if self.locked {
            crate::sys::unlock_memory(&self.bytes[..]);
        }
    }
}

/// The node's 256-bit master key. It wraps the drives' data keys.
pub struct MasterKey(SecretBytes<32>);

impl MasterKey {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// A new random master key from the operating system's random source.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(MasterKey(SecretBytes::random()?))
    }

    /// Takes a master key from raw bytes (a key file, a KMIP `Get`). The caller zeroizes its
    /// own copy.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(MasterKey(SecretBytes::from_slice(bytes)?))
    }

    /// The raw key, for the keystore to write into a root-only key file and for wrapping.
    pub fn expose_secret(&self) -> &[u8; 32] {
        &self.0.bytes
    }

    /// A duplicate held in its own locked allocation.
    pub fn duplicate(&self) -> Self {
        // Length is fixed, so this cannot fail.
        MasterKey(SecretBytes::from_slice(&self.0.bytes[..]).expect("same length"))
    }
}

/// One drive's 512-bit data key: two AES-256 keys for XTS (data key, tweak key).
pub struct DataKey(SecretBytes<64>);

impl DataKey {
    /// Length in bytes.
    pub const LEN: usize = 64;

    /// A new random data key from the operating system's random source.
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(DataKey(SecretBytes::random()?))
    }

    /// Takes a data key from raw bytes (an unwrap). The caller zeroizes its own copy.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        Ok(DataKey(SecretBytes::from_slice(bytes)?))
    }

    /// The raw key, for the cipher set-up and for wrapping.
    pub fn expose_secret(&self) -> &[u8; 64] {
        &self.0.bytes
    }
}
