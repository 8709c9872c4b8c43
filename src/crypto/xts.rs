//! XTS-AES-256 (IEEE 1619-2007, NIST SP 800-38E) over whole data units.
//!
//! [`XtsAes256`] is the mode itself: one data unit of any whole number of 16-byte blocks, with
//! a 128-bit tweak. [`DataCipher`] is what the drive layer uses: runs of 4 KiB units whose
//! tweak is the unit's (physical block's) number.
//!
//! Speed comes from the `aes` crate's parallel block interface, never from AES code of our own:
//! for each batch of blocks that the crate's backend encrypts at once (64 with VAES and
//! AVX-512, 8 with AES-NI), the tweaks are computed in GF(2^128) as eight independent chains
//! that step by alpha^8, which the compiler turns into vector code; they are XORed in before
//! and after the batch. Ciphertext stealing is not implemented: a data unit that is not a
//! whole number of blocks is refused with an error.

use aes::cipher::array::Array;
use aes::cipher::consts::U16;
use aes::cipher::{
    BlockCipherDecBackend, BlockCipherDecClosure, BlockCipherDecrypt, BlockCipherEncBackend,
    BlockCipherEncClosure, BlockCipherEncrypt, BlockSizeUser, KeyInit, ParBlocksSizeUser,
};
use aes::{Aes256, Aes256Enc, Block};

use super::{CryptoError, DataKey};
use crate::BLOCK_SIZE;

/// Bytes of one AES block.
const AES_BLOCK: usize = 16;

/// Units whose tweaks are encrypted together in one call (a stack array of this many blocks).
const TWEAK_BATCH: usize = 64;

/// Independent tweak chains per batch; each steps by alpha^8, a shift of one byte.
const CHAINS: usize = 8;

/// XTS-AES-256 keyed with a 512-bit key: the first half encrypts the data, the second the
/// tweak. The AES round keys are zeroized when it is dropped (the `aes` crate's `zeroize`
/// feature).
pub struct XtsAes256 {
    data: Aes256,
    tweak: Aes256Enc,
}

impl XtsAes256 {
    /// Sets up the two AES-256 key schedules from a data key.
    pub fn new(key: &DataKey) -> Self {
        let k = key.expose_secret();
        let (data_key, tweak_key) = k.split_at(32);
        XtsAes256 {
            data: Aes256::new(data_key.try_into().expect("first half of a 64-byte key")),
            tweak: Aes256Enc::new(tweak_key.try_into().expect("second half of a 64-byte key")),
        }
    }

    /// Encrypts one data unit in place. `tweak` is the 128-bit tweak value read as a
    /// little-endian number (IEEE 1619's encoding of the data unit sequence number; NIST CAVP's
    /// `i` bytes are `u128::from_le_bytes(i)`). `unit` must be a non-zero multiple of 16 bytes.
    pub fn encrypt_data_unit(&self, tweak: u128, unit: &mut [u8]) -> Result<(), CryptoError> {
        self.one_unit(tweak, unit, true)
    }

    /// Decrypts one data unit in place; see [`Self::encrypt_data_unit`].
    pub fn decrypt_data_unit(&self, tweak: u128, unit: &mut [u8]) -> Result<(), CryptoError> {
        self.one_unit(tweak, unit, false)
    }

    /// One data unit of any whole number of blocks, its tweak encrypted first.
    fn one_unit(&self, tweak: u128, unit: &mut [u8], encrypt: bool) -> Result<(), CryptoError> {
        check_unit(unit)?;
        let tweaks = [Block::from(self.encrypted_tweak(tweak).to_le_bytes())];
        let unit_len = unit.len();
        self.units(unit, unit_len, &tweaks, encrypt);
        Ok(())
    }

    /// Encrypts (or decrypts) consecutive units of `unit_len` bytes in one call of the AES
    /// backend, the first tweak of unit `i` being the encrypted `tweaks[i]`.
    fn units(&self, units: &mut [u8], unit_len: usize, tweaks: &[Block], encrypt: bool) {
        if encrypt {
            self.data.encrypt_with_backend(EncryptUnits {
                units,
                unit_len,
                tweaks,
            });
        } else {
            self.data.decrypt_with_backend(DecryptUnits {
                units,
                unit_len,
                tweaks,
            });
        }
    }

    /// Encrypts (or decrypts) `buf`, consecutive data units of `unit_len` bytes numbered from
    /// `first_tweak`. The tweaks of up to [`TWEAK_BATCH`] units are encrypted in one call, and
    /// those units are then processed in one call of the AES backend (which sets up its round
    /// keys once per call).
    #[cfg_attr(feature = "null-cipher", allow(dead_code))]
    fn process_run(&self, first_tweak: u128, unit_len: usize, buf: &mut [u8], encrypt: bool) {
        let mut next = first_tweak;
        for group in buf.chunks_mut(unit_len * TWEAK_BATCH) {
            let units = group.len() / unit_len;
            let mut tweaks = [Block::default(); TWEAK_BATCH];
            for (i, t) in tweaks[..units].iter_mut().enumerate() {
                *t = Block::from(next.wrapping_add(i as u128).to_le_bytes());
            }
            self.tweak.encrypt_blocks(&mut tweaks[..units]);
            next = next.wrapping_add(units as u128);

            self.units(group, unit_len, &tweaks[..units], encrypt);
        }
    }

    /// The first block's tweak of a unit: the tweak value encrypted under the tweak key.
    fn encrypted_tweak(&self, tweak: u128) -> u128 {
        let mut block = Block::from(tweak.to_le_bytes());
        self.tweak.encrypt_block(&mut block);
        u128::from_le_bytes(block.0)
    }
}

/// Refuses an empty data unit or one with a partial block.
fn check_unit(unit: &[u8]) -> Result<(), CryptoError> {
    if unit.is_empty() || !unit.len().is_multiple_of(AES_BLOCK) {
        return Err(CryptoError::BadDataUnitLength { len: unit.len() });
    }
    Ok(())
}

/// Multiplies a tweak by alpha (x) in GF(2^128) mod x^128 + x^7 + x^2 + x + 1, the tweak read
/// as a little-endian number as IEEE 1619 section 5.2 does.
#[inline(always)]
fn mul_alpha(t: u128) -> u128 {
    let carry = ((t as i128) >> 127) as u128;
    (t << 1) ^ (carry & 0x87)
}

/// The reduction of the bits `c` shifted out above bit 127: c * (x^7 + x^2 + x + 1).
#[inline(always)]
fn fold(c: u64) -> u64 {
    c ^ (c << 1) ^ (c << 2) ^ (c << 7)
}

/// The tweaks of one batch of blocks, low and high halves in separate arrays so that the
/// alpha^8 steps of the eight chains are plain lane-wise arithmetic.
struct BatchTweaks<N: aes::cipher::array::ArraySize> {
    lo: Array<u64, N>,
    hi: Array<u64, N>,
}

impl<N: aes::cipher::array::ArraySize> BatchTweaks<N> {
    fn new() -> Self {
        BatchTweaks {
            lo: Array::default(),
            hi: Array::default(),
        }
    }

    /// Fills the batch with `t, t*alpha, t*alpha^2, ...` and returns the tweak that follows it.
    #[inline(always)]
    fn fill(&mut self, mut t: u128) -> u128 {
        let n = self.lo.len();
        if !n.is_multiple_of(CHAINS) {
            for i in 0..n {
                (self.lo[i], self.hi[i]) = (t as u64, (t >> 64) as u64);
                t = mul_alpha(t);
            }
            return t;
        }

        for i in 0..CHAINS {
            (self.lo[i], self.hi[i]) = (t as u64, (t >> 64) as u64);
            t = mul_alpha(t);
        }
        // Tweak i+8 is tweak i times alpha^8: shift by a byte, fold the byte shifted out.
        for i in CHAINS..n {
            let (lo, hi) = (self.lo[i - CHAINS], self.hi[i - CHAINS]);
            self.lo[i] = (lo << 8) ^ fold(hi >> 56);
            self.hi[i] = (hi << 8) | (lo >> 56);
        }
        let mut next = (self.lo[n - 1] as u128) | ((self.hi[n - 1] as u128) << 64);
        next = mul_alpha(next);
        next
    }

    /// XORs the tweaks into the blocks of the batch.
    #[inline(always)]
    fn xor_into(&self, batch: &mut [Block]) {
        let bytes = Block::slice_as_flattened_mut(batch);
        let halves = self.lo.iter().zip(self.hi.iter());
        for (block, (lo, hi)) in bytes.chunks_exact_mut(AES_BLOCK).zip(halves) {
            let (a, b) = block.split_at_mut(8);
            let x = u64::from_le_bytes(a.try_into().expect("8 bytes")) ^ lo;
            let y = u64::from_le_bytes(b.try_into().expect("8 bytes")) ^ hi;
            a.copy_from_slice(&x.to_le_bytes());
            b.copy_from_slice(&y.to_le_bytes());
        }
    }
}

/// XORs a single tweak into a single block.
#[inline(always)]
fn xor_block(block: &mut Block, t: u128) {
    block.0 = (u128::from_le_bytes(block.0) ^ t).to_le_bytes();
}

/// Runs XTS over the blocks of one unit with `batch` applied to each full backend batch and
/// `single` to each block left over, the tweaks XORed in before and after.
#[inline(always)]
fn xts_unit<N: aes::cipher::array::ArraySize>(
    blocks: &mut [Block],
    first_tweak: u128,
    mut batch: impl FnMut(&mut Array<Block, N>),
    mut single: impl FnMut(&mut Block),
) {
    let (batches, rest) = Array::<Block, N>::slice_as_chunks_mut(blocks);
    let mut tweaks = BatchTweaks::<N>::new();
    let mut t = first_tweak;
    for b in batches {
        t = tweaks.fill(t);
        tweaks.xor_into(b);
        batch(b);
        tweaks.xor_into(b);
    }
    for block in rest {
        xor_block(block, t);
        single(block);
        xor_block(block, t);
        t = mul_alpha(t);
    }
}

/// Runs XTS over each unit of `units` (consecutive units of `unit_len` bytes, a whole number
/// of blocks each), with the first tweak of unit `i` taken from the encrypted `tweaks[i]`.
#[inline(always)]
fn xts_units<N: aes::cipher::array::ArraySize>(
    units: &mut [u8],
    unit_len: usize,
    tweaks: &[Block],
    mut batch: impl FnMut(&mut Array<Block, N>),
    mut single: impl FnMut(&mut Block),
) {
    for (unit, t) in units.chunks_exact_mut(unit_len).zip(tweaks) {
        let (blocks, _) = Block::slice_as_chunks_mut(unit);
        xts_unit(blocks, u128::from_le_bytes(t.0), &mut batch, &mut single);
    }
}

/// The encryption of a run of units, run inside the `aes` crate's backend (so that it is
/// compiled with the backend's CPU features, and the backend's round keys are set up once).
struct EncryptUnits<'a> {
    units: &'a mut [u8],
    unit_len: usize,
    tweaks: &'a [Block],
}

impl BlockSizeUser for EncryptUnits<'_> {
    type BlockSize = U16;
}

impl BlockCipherEncClosure for EncryptUnits<'_> {
    #[inline(always)]
    fn call<B: BlockCipherEncBackend<BlockSize = U16>>(self, backend: &B) {
        xts_units::<<B as ParBlocksSizeUser>::ParBlocksSize>(
            self.units,
            self.unit_len,
            self.tweaks,
            |b| backend.encrypt_par_blocks(b.into()),
            |b| backend.encrypt_block(b.into()),
        );
    }
}

/// The decryption of a run of units; see [`EncryptUnits`].
struct DecryptUnits<'a> {
    units: &'a mut [u8],
    unit_len: usize,
    tweaks: &'a [Block],
}

impl BlockSizeUser for DecryptUnits<'_> {
    type BlockSize = U16;
}

impl BlockCipherDecClosure for DecryptUnits<'_> {
    #[inline(always)]
    fn call<B: BlockCipherDecBackend<BlockSize = U16>>(self, backend: &B) {
        xts_units::<<B as ParBlocksSizeUser>::ParBlocksSize>(
            self.units,
            self.unit_len,
            self.tweaks,
            |b| backend.decrypt_par_blocks(b.into()),
            |b| backend.decrypt_block(b.into()),
        );
    }
}

/// True when this build replaces XTS with a no-op (`--features null-cipher`, benchmarks
/// only). The node must refuse to format or mount in such a build unless
/// [`NULL_CIPHER_ENV`] is `1`; see [`ensure_cipher_allowed`].
pub const NULL_CIPHER: bool = cfg!(feature = "null-cipher");

/// The environment variable that lets a null-cipher build format and mount.
pub const NULL_CIPHER_ENV: &str = "ATREST_ALLOW_NULL_CIPHER_FOR_BENCHMARK";

/// Refuses a null-cipher build unless [`NULL_CIPHER_ENV`] is set to `1`. Always `Ok` in a
/// normal build.
pub fn ensure_cipher_allowed() -> Result<(), CryptoError> {
    if NULL_CIPHER && std::env::var(NULL_CIPHER_ENV).as_deref() != Ok("1") {
        return Err(CryptoError::NullCipherNotAllowed);
    }
    Ok(())
}

/// True when AES runs on the processor's AES instructions rather than in constant-time
/// software (which is about ten times slower).
pub fn hardware_accelerated() -> bool {
    aes::hardware_accelerated()
}

/// The cipher of one drive: XTS-AES-256 keyed with the drive's data key, over 4 KiB units
/// whose tweak is the unit's number. In a `null-cipher` build it leaves the bytes unchanged.
pub struct DataCipher {
    #[cfg(not(feature = "null-cipher"))]
    xts: XtsAes256,
}

impl DataCipher {
    /// Sets up the cipher from a data key (first half: data key, second half: tweak key).
    pub fn new(key: &DataKey) -> Self {
        warn_once_about_build();
        #[cfg(not(feature = "null-cipher"))]
        {
            DataCipher {
                xts: XtsAes256::new(key),
            }
        }
        #[cfg(feature = "null-cipher")]
        {
            let _ = key;
            DataCipher {}
        }
    }

    /// Encrypts `buf`, a whole number of 4 KiB units, in place; the first unit is number
    /// `first_unit` and the others follow it.
    ///
    /// # Panics
    /// If `buf` is not a whole number of units: callers hand over whole blocks only.
    pub fn encrypt_units(&self, first_unit: u64, buf: &mut [u8]) {
        assert_eq!(
            buf.len() % BLOCK_SIZE,
            0,
            "XTS buffer is not whole data units"
        );
        #[cfg(not(feature = "null-cipher"))]
        self.xts
            .process_run(u128::from(first_unit), BLOCK_SIZE, buf, true);
        #[cfg(feature = "null-cipher")]
        let _ = first_unit;
    }

    /// Decrypts `buf`, a whole number of 4 KiB units, in place; see [`Self::encrypt_units`].
    ///
    /// # Panics
    /// If `buf` is not a whole number of units.
    pub fn decrypt_units(&self, first_unit: u64, buf: &mut [u8]) {
        assert_eq!(
            buf.len() % BLOCK_SIZE,
            0,
            "XTS buffer is not whole data units"
        );
        #[cfg(not(feature = "null-cipher"))]
        self.xts
            .process_run(u128::from(first_unit), BLOCK_SIZE, buf, false);
        #[cfg(feature = "null-cipher")]
        let _ = first_unit;
    }
}

/// Logs, once per process, what is wrong with this build's cipher, if anything.
fn warn_once_about_build() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if NULL_CIPHER {
            tracing::error!(
                "this build has the null cipher (benchmark only): data is written UNENCRYPTED"
            );
        } else if !aes::hardware_accelerated() {
            tracing::warn!("no AES instructions on this processor: XTS runs in slow software");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mul_alpha_n(mut t: u128, n: usize) -> u128 {
        for _ in 0..n {
            t = mul_alpha(t);
        }
        t
    }

    #[test]
    fn batch_tweaks_are_successive_alpha_powers() {
        let t = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210_u128 | (1 << 127);
        let mut tw = BatchTweaks::<aes::cipher::consts::U64>::new();
        let next = tw.fill(t);
        for i in 0..64 {
            let want = mul_alpha_n(t, i);
            let got = (tw.lo[i] as u128) | ((tw.hi[i] as u128) << 64);
            assert_eq!(got, want, "tweak {i}");
        }
        assert_eq!(next, mul_alpha_n(t, 64));
    }

    #[test]
    fn partial_and_empty_units_are_refused() {
        let key = DataKey::from_bytes(&[7u8; 64]).unwrap();
        let xts = XtsAes256::new(&key);
        for len in [0usize, 1, 15, 17, 4095] {
            let mut buf = vec![0u8; len];
            assert!(matches!(
                xts.encrypt_data_unit(0, &mut buf),
                Err(CryptoError::BadDataUnitLength { len: l }) if l == len
            ));
            assert!(xts.decrypt_data_unit(0, &mut buf).is_err());
        }
    }
}
