//! Property test: atrest's XTS agrees byte for byte with the `xts-mode` crate (the
//! straightforward implementation it replaced) on random keys, tweaks, unit sizes and runs.
//! Fixed seed, bounded count, so a failure replays exactly.

use aes::Aes256;
use aes::cipher::KeyInit;
use atrest::crypto::{DataKey, XtsAes256};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use xts_mode::{Xts128, get_tweak_default};

const SEED: u64 = 0x6174_7265_7374_0001;

fn random_key(rng: &mut StdRng) -> (Vec<u8>, Xts128<Aes256>) {
    let mut key = vec![0u8; DataKey::LEN];
    rng.fill_bytes(&mut key);
    let reference = Xts128::new(
        Aes256::new_from_slice(&key[..32]).unwrap(),
        Aes256::new_from_slice(&key[32..]).unwrap(),
    );
    (key, reference)
}

#[test]
fn data_unit_of_any_whole_block_size_matches_xts_mode() {
    let mut rng = StdRng::seed_from_u64(SEED);
    // Sizes around the backends' batch sizes (8 and 64 blocks) and a few at random.
    let mut sizes: Vec<usize> = vec![1, 2, 7, 8, 9, 63, 64, 65, 127, 128, 129, 256, 257, 512];
    sizes.extend((0..40).map(|_| rng.random_range(1..=600)));

    for (i, blocks) in sizes.into_iter().enumerate() {
        let (key, reference) = random_key(&mut rng);
        let xts = XtsAes256::new(&DataKey::from_bytes(&key).unwrap());
        let tweak: u128 = match i % 3 {
            0 => rng.random::<u32>() as u128,
            1 => rng.random::<u64>() as u128,
            _ => rng.random::<u128>(),
        };
        let mut plain = vec![0u8; blocks * 16];
        rng.fill_bytes(&mut plain);

        let mut ours = plain.clone();
        xts.encrypt_data_unit(tweak, &mut ours).unwrap();
        let mut theirs = plain.clone();
        reference.encrypt_sector(&mut theirs, get_tweak_default(tweak));
        assert!(
            ours == theirs,
            "case {i}: {blocks} blocks, tweak {tweak:#x}: encrypt differs"
        );

        reference.decrypt_sector(&mut theirs, get_tweak_default(tweak));
        xts.decrypt_data_unit(tweak, &mut ours).unwrap();
        assert!(
            ours == plain && theirs == plain,
            "case {i}: decrypt differs"
        );
    }
}

#[cfg(not(feature = "null-cipher"))]
#[test]
fn data_cipher_runs_match_xts_mode() {
    use atrest::BLOCK_SIZE;
    use atrest::crypto::DataCipher;

    let mut rng = StdRng::seed_from_u64(SEED + 1);
    // Run lengths cross the 64-unit tweak batch; unit numbers below and above 2^32.
    let mut runs: Vec<usize> = vec![1, 2, 63, 64, 65, 129, 256];
    runs.extend((0..12).map(|_| rng.random_range(1..=80)));

    for (i, units) in runs.into_iter().enumerate() {
        let (key, reference) = random_key(&mut rng);
        let cipher = DataCipher::new(&DataKey::from_bytes(&key).unwrap());
        let first: u64 = if i % 2 == 0 {
            rng.random::<u32>() as u64
        } else {
            (1 << 32) + rng.random_range(0..(1u64 << 40))
        };
        let mut plain = vec![0u8; units * BLOCK_SIZE];
        rng.fill_bytes(&mut plain);

        let mut ours = plain.clone();
        cipher.encrypt_units(first, &mut ours);
        let mut theirs = plain.clone();
        reference.encrypt_area(&mut theirs, BLOCK_SIZE, first as u128, get_tweak_default);
        assert!(
            ours == theirs,
            "run {i}: {units} units from {first:#x}: encrypt differs"
        );

        cipher.decrypt_units(first, &mut ours);
        assert!(
            ours == plain,
            "run {i}: decrypt does not give the plaintext back"
        );

        // A unit encrypted alone equals the same unit inside a run.
        if units > 1 {
            let mut one = plain[BLOCK_SIZE..2 * BLOCK_SIZE].to_vec();
            cipher.encrypt_units(first + 1, &mut one);
            assert!(
                one[..] == theirs[BLOCK_SIZE..2 * BLOCK_SIZE],
                "run {i}: unit 1 alone"
            );
        }
    }
}
