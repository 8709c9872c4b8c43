//! Key wrapping: a data key sealed with AES-256-GCM under the master key, with the drive
//! header's identity fields as associated data, so that a wrap moved to another drive or
//! header fails to open.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use zeroize::Zeroize;

use super::{CryptoError, DataKey, MasterKey, random_bytes};

/// Bytes of the GCM nonce stored beside a wrapped key.
pub const WRAP_NONCE_LEN: usize = 12;
/// Bytes of a wrapped data key: the sealed 64-byte key followed by the 16-byte GCM tag.
pub const WRAPPED_KEY_LEN: usize = DataKey::LEN + 16;

/// A data key sealed under a master key. Not secret: it is stored on the drive.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedKey {
    /// The random nonce used for this wrap.
    pub nonce: [u8; WRAP_NONCE_LEN],
    /// Ciphertext of the data key, then the tag.
    pub sealed: [u8; WRAPPED_KEY_LEN],
}

/// Seals `key` under `master`, binding it to `associated_data`.
pub fn wrap_data_key(
    master: &MasterKey,
    associated_data: &[u8],
    key: &DataKey,
) -> Result<WrappedKey, CryptoError> {
    let cipher = Aes256Gcm::new(master.expose_secret().into());
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    random_bytes(&mut nonce)?;

    let mut sealed = [0u8; WRAPPED_KEY_LEN];
    let (body, tag_out) = sealed.split_at_mut(DataKey::LEN);
    body.copy_from_slice(key.expose_secret());
    let tag = cipher
        .encrypt_inout_detached(&Nonce::from(nonce), associated_data, body.into())
        .map_err(|_| CryptoError::UnwrapFailed)?;
    tag_out.copy_from_slice(&tag);
    Ok(WrappedKey { nonce, sealed })
}

/// Opens a wrapped key. Fails with [`CryptoError::UnwrapFailed`] when the master key is not
/// the one that wrapped it or when the wrap or its associated data changed.
pub fn unwrap_data_key(
    master: &MasterKey,
    associated_data: &[u8],
    wrapped: &WrappedKey,
) -> Result<DataKey, CryptoError> {
    let cipher = Aes256Gcm::new(master.expose_secret().into());
    let mut body = [0u8; DataKey::LEN];
    body.copy_from_slice(&wrapped.sealed[..DataKey::LEN]);
    let tag =
        Tag::try_from(&wrapped.sealed[DataKey::LEN..]).map_err(|_| CryptoError::UnwrapFailed)?;

    let opened = cipher.decrypt_inout_detached(
        &Nonce::from(wrapped.nonce),
        associated_data,
        (&mut body[..]).into(),
        &tag,
    );
    let result = match opened {
        Ok(()) => DataKey::from_bytes(&body),
        Err(_) => Err(CryptoError::UnwrapFailed),
    };
    body.zeroize();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_round_trip_and_binding() {
        let master = MasterKey::generate().unwrap();
        let key = DataKey::generate().unwrap();
        let w = wrap_data_key(&master, b"drive-1", &key).unwrap();
        let back = unwrap_data_key(&master, b"drive-1", &w).unwrap();
        assert_eq!(back.expose_secret(), key.expose_secret());

        assert!(unwrap_data_key(&master, b"drive-2", &w).is_err());
        let other = MasterKey::generate().unwrap();
        assert!(unwrap_data_key(&other, b"drive-1", &w).is_err());
        let mut bad = w.clone();
        bad.sealed[3] ^= 1;
        assert!(unwrap_data_key(&master, b"drive-1", &bad).is_err());
    }
}
