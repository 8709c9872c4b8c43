//! XTS-AES-256 over 4 KiB data units (IEEE 1619), the tweak being the unit's number.

use aes::Aes256;
use aes::cipher::KeyInit;
use xts_mode::{Xts128, get_tweak_default};

use super::DataKey;
use crate::BLOCK_SIZE;

/// The cipher of one drive: XTS-AES-256 keyed with the drive's data key.
pub struct DataCipher {
    xts: Xts128<Aes256>,
}

impl DataCipher {
    /// Sets up the cipher from a data key (first half: data key, second half: tweak key).
    pub fn new(key: &DataKey) -> Self {
        let k = key.expose_secret();
        let c1 = Aes256::new_from_slice(&k[..32]).expect("32-byte key");
        let c2 = Aes256::new_from_slice(&k[32..]).expect("32-byte key");
        DataCipher {
            xts: Xts128::new(c1, c2),
        }
    }

    /// Encrypts `buf`, a whole number of 4 KiB units, in place; the first unit is number
    /// `first_unit` and the others follow it.
    pub fn encrypt_units(&self, first_unit: u64, buf: &mut [u8]) {
        assert_eq!(
            buf.len() % BLOCK_SIZE,
            0,
            "XTS buffer is not whole data units"
        );
        self.xts
            .encrypt_area(buf, BLOCK_SIZE, first_unit as u128, get_tweak_default);
    }

    /// Decrypts `buf`, a whole number of 4 KiB units, in place; see [`Self::encrypt_units`].
    pub fn decrypt_units(&self, first_unit: u64, buf: &mut [u8]) {
        assert_eq!(
            buf.len() % BLOCK_SIZE,
            0,
            "XTS buffer is not whole data units"
        );
        self.xts
            .decrypt_area(buf, BLOCK_SIZE, first_unit as u128, get_tweak_default);
    }
}
