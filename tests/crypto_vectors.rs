//! Known-answer tests of the crypto layer against published vectors:
//!
//! - XTS-AES-256: IEEE Std 1619-2007 Annex B, vectors 10 to 14 (512-byte data units), as
//!   transcribed in GaloisInc/cryptol-specs
//!   (`Primitive/Symmetric/Cipher/Block/Modes/Tests/AES256_XTS.cry`), and NIST CAVP
//!   `XTSTestVectors/format tweak value input - 128 hex str/XTSGenAES256.rsp`, COUNT 1, 2, 101
//!   and 401 (whole-block data units; as quoted in libgcrypt's basic cipher test).
//! - AES-256-GCM: test cases 15 and 16 of McGrew and Viega, "The Galois/Counter Mode of
//!   Operation (GCM)", the AES-256 cases of NIST's GCM specification.
//!
//! Each XTS vector is run both ways; the GCM wrap is also checked to fail whenever its
//! associated data, nonce, sealed bytes or master key change.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use atrest::crypto::{
    CryptoError, DataKey, MasterKey, WRAPPED_KEY_LEN, WrappedKey, XtsAes256, unwrap_data_key,
    wrap_data_key,
};

fn unhex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).expect("vector is valid hex")
}

/// Checks one XTS vector: encrypting `pt` gives `ct`, and decrypting `ct` gives `pt`.
fn check_xts(name: &str, key: &str, tweak: u128, pt: &[u8], ct: &str) {
    let key = DataKey::from_bytes(&unhex(key)).expect("64-byte key");
    let ct = unhex(ct);
    assert_eq!(pt.len(), ct.len(), "{name}: vector lengths");
    let xts = XtsAes256::new(&key);

    let mut buf = pt.to_vec();
    xts.encrypt_data_unit(tweak, &mut buf)
        .expect("whole blocks");
    assert!(
        buf == ct,
        "{name}: ciphertext differs from the published one"
    );

    xts.decrypt_data_unit(tweak, &mut buf)
        .expect("whole blocks");
    assert!(
        buf == pt,
        "{name}: decryption does not give the plaintext back"
    );
}

// --- IEEE 1619-2007 Annex B, XTS-AES-256, 512-byte data units ---

const IEEE_KEY: &str = "2718281828459045235360287471352662497757247093699959574966967627\
                        3141592653589793238462643383279502884197169399375105820974944592";

/// The plaintext of vectors 10 to 14: bytes 00..ff, twice.
fn ieee_plaintext() -> Vec<u8> {
    (0..512).map(|i| (i % 256) as u8).collect()
}

#[test]
fn ieee1619_vector_10() {
    check_xts(
        "IEEE 1619 vector 10",
        IEEE_KEY,
        0xff,
        &ieee_plaintext(),
        "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b
         5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd
         5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0
         c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca
         2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0
         b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f
         93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec
         583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a
         84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1
         505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae
         9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29
         a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac
         6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f
         645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed4385
         1ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa
         773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151",
    );
}

#[test]
fn ieee1619_vector_11() {
    check_xts(
        "IEEE 1619 vector 11",
        IEEE_KEY,
        0xffff,
        &ieee_plaintext(),
        "77a31251618a15e6b92d1d66dffe7b50b50bad552305ba0217a610688eff7e11
         e1d0225438e093242d6db274fde801d4cae06f2092c728b2478559df58e837c2
         469ee4a4fa794e4bbc7f39bc026e3cb72c33b0888f25b4acf56a2a9804f1ce6d
         3d6e1dc6ca181d4b546179d55544aa7760c40d06741539c7e3cd9d2f6650b201
         3fd0eeb8c2b8e3d8d240ccae2d4c98320a7442e1c8d75a42d6e6cfa4c2eca179
         8d158c7aecdf82490f24bb9b38e108bcda12c3faf9a21141c3613b58367f922a
         aa26cd22f23d708dae699ad7cb40a8ad0b6e2784973dcb605684c08b8d6998c6
         9aac049921871ebb65301a4619ca80ecb485a31d744223ce8ddc2394828d6a80
         470c092f5ba413c3378fa6054255c6f9df4495862bbb3287681f931b687c888a
         bf844dfc8fc28331e579928cd12bd2390ae123cf03818d14dedde5c0c24c8ab0
         18bfca75ca096f2d531f3d1619e785f1ada437cab92e980558b3dce1474afb75
         bfedbf8ff54cb2618e0244c9ac0d3c66fb51598cd2db11f9be39791abe447c63
         094f7c453b7ff87cb5bb36b7c79efb0872d17058b83b15ab0866ad8a58656c5a
         7e20dbdf308b2461d97c0ec0024a2715055249cf3b478ddd4740de654f75ca68
         6e0d7345c69ed50cdc2a8b332b1f8824108ac937eb050585608ee734097fc090
         54fbff89eeaeea791f4a7ab1f9868294a4f9e27b42af8100cb9d59cef9645803",
    );
}

#[test]
fn ieee1619_vector_12() {
    check_xts(
        "IEEE 1619 vector 12",
        IEEE_KEY,
        0xff_ffff,
        &ieee_plaintext(),
        "e387aaa58ba483afa7e8eb469778317ecf4cf573aa9d4eac23f2cdf914e4e200
         a8b490e42ee646802dc6ee2b471b278195d60918ececb44bf79966f83faba049
         9298ebc699c0c8634715a320bb4f075d622e74c8c932004f25b41e361025b5a8
         7815391f6108fc4afa6a05d9303c6ba68a128a55705d415985832fdeaae6c8e1
         9110e84d1b1f199a2692119edc96132658f09da7c623efcec712537a3d94c0bf
         5d7e352ec94ae5797fdb377dc1551150721adf15bd26a8efc2fcaad56881fa9e
         62462c28f30ae1ceaca93c345cf243b73f542e2074a705bd2643bb9f7cc79bb6
         e7091ea6e232df0f9ad0d6cf502327876d82207abf2115cdacf6d5a48f6c1879
         a65b115f0f8b3cb3c59d15dd8c769bc014795a1837f3901b5845eb491adfefe0
         97b1fa30a12fc1f65ba22905031539971a10f2f36c321bb51331cdefb39e3964
         c7ef079994f5b69b2edd83a71ef549971ee93f44eac3938fcdd61d01fa71799d
         a3a8091c4c48aa9ed263ff0749df95d44fef6a0bb578ec69456aa5408ae32c7a
         f08ad7ba8921287e3bbee31b767be06a0e705c864a769137df28292283ea81a2
         480241b44d9921cdbec1bc28dc1fda114bd8e5217ac9d8ebafa720e9da4f9ace
         231cc949e5b96fe76ffc21063fddc83a6b8679c00d35e09576a875305bed5f36
         ed242c8900dd1fa965bc950dfce09b132263a1eef52dd6888c309f5a7d712826",
    );
}

#[test]
fn ieee1619_vector_13() {
    check_xts(
        "IEEE 1619 vector 13",
        IEEE_KEY,
        0xffff_ffff,
        &ieee_plaintext(),
        "bf53d2dade78e822a4d949a9bc6766b01b06a8ef70d26748c6a7fc36d80ae4c5
         520f7c4ab0ac8544424fa405162fef5a6b7f229498063618d39f0003cb5fb8d1
         c86b643497da1ff945c8d3bedeca4f479702a7a735f043ddb1d6aaade3c4a0ac
         7ca7f3fa5279bef56f82cd7a2f38672e824814e10700300a055e1630b8f1cb0e
         919f5e942010a416e2bf48cb46993d3cb6a51c19bacf864785a00bc2ecff15d3
         50875b246ed53e68be6f55bd7e05cfc2b2ed6432198a6444b6d8c247fab941f5
         69768b5c429366f1d3f00f0345b96123d56204c01c63b22ce78baf116e525ed9
         0fdea39fa469494d3866c31e05f295ff21fea8d4e6e13d67e47ce722e9698a1c
         1048d68ebcde76b86fcf976eab8aa9790268b7068e017a8b9b749409514f1053
         027fd16c3786ea1bac5f15cb79711ee2abe82f5cf8b13ae73030ef5b9e4457e7
         5d1304f988d62dd6fc4b94ed38ba831da4b7634971b6cd8ec325d9c61c00f1df
         73627ed3745a5e8489f3a95c69639c32cd6e1d537a85f75cc844726e8a72fc00
         77ad22000f1d5078f6b866318c668f1ad03d5a5fced5219f2eabbd0aa5c0f460
         d183f04404a0d6f469558e81fab24a167905ab4c7878502ad3e38fdbe62a4155
         6cec37325759533ce8f25f367c87bb5578d667ae93f9e2fd99bcbc5f2fbba88c
         f6516139420fcff3b7361d86322c4bd84c82f335abb152c4a93411373aaa8220",
    );
}

#[test]
fn ieee1619_vector_14() {
    check_xts(
        "IEEE 1619 vector 14",
        IEEE_KEY,
        0xff_ffff_ffff,
        &ieee_plaintext(),
        "64497e5a831e4a932c09be3e5393376daa599548b816031d224bbf50a818ed23
         50eae7e96087c8a0db51ad290bd00c1ac1620857635bf246c176ab463be30b80
         8da548081ac847b158e1264be25bb0910bbc92647108089415d45fab1b3d2604
         e8a8eff1ae4020cfa39936b66827b23f371b92200be90251e6d73c5f86de5fd4
         a950781933d79a28272b782a2ec313efdfcc0628f43d744c2dc2ff3dcb66999b
         50c7ca895b0c64791eeaa5f29499fb1c026f84ce5b5c72ba1083cddb5ce45434
         631665c333b60b11593fb253c5179a2c8db813782a004856a1653011e93fb6d8
         76c18366dd8683f53412c0c180f9c848592d593f8609ca736317d356e13e2bff
         3a9f59cd9aeb19cd482593d8c46128bb32423b37a9adfb482b99453fbe25a41b
         f6feb4aa0bef5ed24bf73c762978025482c13115e4015aac992e5613a3b5c2f6
         85b84795cb6e9b2656d8c88157e52c42f978d8634c43d06fea928f2822e465aa
         6576e9bf419384506cc3ce3c54ac1a6f67dc66f3b30191e698380bc999b05abc
         e19dc0c6dcc2dd001ec535ba18deb2df1a101023108318c75dc98611a09dc48a
         0acdec676fabdf222f07e026f059b672b56e5cbc8e1d21bbd867dd9272120546
         81d70ea737134cdfce93b6f82ae22423274e58a0821cc5502e2d0ab4585e94de
         6975be5e0b4efce51cd3e70c25a1fbbbd609d273ad5b0d59631c531f6a0a57b9",
    );
}

// --- NIST CAVP XTSGenAES256.rsp (tweak given as 128 hex digits `i`) ---

/// One CAVP case: key, `i` (the tweak's 16 bytes), plaintext, ciphertext.
fn check_cavp(count: u32, key: &str, i: &str, pt: &str, ct: &str) {
    let i: [u8; 16] = unhex(i).try_into().expect("16-byte tweak");
    let tweak = u128::from_le_bytes(i);
    check_xts(
        &format!("CAVP XTSGenAES256 COUNT={count}"),
        key,
        tweak,
        &unhex(pt),
        ct,
    );
}

#[test]
fn cavp_xtsgenaes256_count_1() {
    check_cavp(
        1,
        "1ea661c58d943a0e4801e42f4b0947149e7f9f8e3e68d0c7505210bd311a0e7c
         d6e13ffdf2418d8d1911c004cda58da3d619b7e2b9141e58318eea392cf41b08",
        "adf8d92627464ad2f0428e84a9f87564",
        "2eedea52cd8215e1acc647e810bbc3642e87287f8d2e57e36c0a24fbc12a202e",
        "cbaad0e2f6cea3f50b37f934d46a9b130b9d54f07e34f36af793e86f73c6d7db",
    );
}

#[test]
fn cavp_xtsgenaes256_count_2() {
    check_cavp(
        2,
        "e149be00177d76b7c1d85bcbb6b5054ee10b9f51cd73f59e0840628b9e7d854e
         2e1c0ab0537186a2a7c314bbc5eb23b6876a26bcdbf9e6b758d1cae053c2f278",
        "0ea18818fab95289b1caab4e61349501",
        "f5f101d8e3a7681b1ddb21bd2826b24e32990bca49b39291b5369a9bca277d75",
        "5bf2479393cc673306fbb15e72600598e33d4d8a470727ce098730fd80afa959",
    );
}

#[test]
fn cavp_xtsgenaes256_count_101() {
    check_cavp(
        101,
        "266c336b3b01489f3267f52835fd92f674374b88b4e1ebd2d36a5f457581d9d0
         42c3eef7b0b7e5137b086496b4d9e6ac658d7196a23f23f036172fdb8faee527",
        "06b209a7a22f486ecbfadb0f3137ba42",
        "ca7d65ef8d3dfad345b61ccddca1ad81de830b9e86c7b426d76cb7db766852d9
         81c6b21409399d78f42cc0b33a7bbb06",
        "c73256870cc2f4dd57acc74b5456dbd776912a128bc1f77d72cdebbf270044b7
         a43ceed29025e1e8be211fa3c3ed002d",
    );
}

#[test]
fn cavp_xtsgenaes256_count_401() {
    check_cavp(
        401,
        "33e89e817ff8d037d6ac5a2296657503f20885d94c483e26449066bd9284d130
         2dbdbb4b66b6b9f4687f13dd028eb6aa528ca91deb9c5f40db93218806033801",
        "a78c04335ab7498a52b81ed74b48e6cf",
        "14c3ac31291b075f40788247c3019e88c7b40bac3832da45bbc6c4fe7461371b
         4dfffb63f71c9f8edb98f28ff4f33121",
        "dead7e587519bc78c70d99279fbe3d9b1ad13cdaae69824e0ab8135413230bfd
         b13babe8f986fbb30d46ab5ec56b916e",
    );
}

#[test]
fn xts_refuses_partial_blocks() {
    let key = DataKey::from_bytes(&unhex(IEEE_KEY)).unwrap();
    let xts = XtsAes256::new(&key);
    let mut buf = vec![0u8; 17];
    let err = xts.encrypt_data_unit(0, &mut buf).unwrap_err();
    assert!(
        matches!(err, CryptoError::BadDataUnitLength { len: 17 }),
        "{err}"
    );
    assert_eq!(buf, vec![0u8; 17], "a refused unit is left untouched");
}

// --- AES-256-GCM, the primitive under the key wrap ---

const GCM_KEY: &str = "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308";
const GCM_IV: &str = "cafebabefacedbaddecaf888";

/// GCM test case 16: AES-256, 60-byte plaintext, 20 bytes of associated data.
#[test]
fn gcm_test_case_16_with_associated_data() {
    let key: [u8; 32] = unhex(GCM_KEY).try_into().unwrap();
    let iv: [u8; 12] = unhex(GCM_IV).try_into().unwrap();
    let aad = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
    let pt = unhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
    );
    let ct = unhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
    );
    let tag = unhex("76fc6ece0f4e1768cddf8853bb2d551b");

    let cipher = Aes256Gcm::new(&key.into());
    let mut buf = pt.clone();
    let got_tag = cipher
        .encrypt_inout_detached(&Nonce::from(iv), &aad, buf.as_mut_slice().into())
        .unwrap();
    assert_eq!(buf, ct, "GCM case 16 ciphertext");
    assert_eq!(got_tag.as_slice(), tag.as_slice(), "GCM case 16 tag");

    let tag = Tag::try_from(tag.as_slice()).unwrap();
    cipher
        .decrypt_inout_detached(&Nonce::from(iv), &aad, buf.as_mut_slice().into(), &tag)
        .unwrap();
    assert_eq!(buf, pt);

    let mut other_aad = aad.clone();
    other_aad[19] ^= 1;
    let mut buf = ct.clone();
    let opened = cipher.decrypt_inout_detached(
        &Nonce::from(iv),
        &other_aad,
        buf.as_mut_slice().into(),
        &tag,
    );
    assert!(
        opened.is_err(),
        "GCM case 16 opened with altered associated data"
    );
}

/// GCM test case 15 (AES-256, 64-byte plaintext, no associated data) through the crate's own
/// unwrap: its plaintext happens to be the size of a data key.
#[test]
fn gcm_test_case_15_through_unwrap_data_key() {
    let master = MasterKey::from_bytes(&unhex(GCM_KEY)).unwrap();
    let sealed: [u8; WRAPPED_KEY_LEN] = unhex(
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad
         b094dac5d93471bdec1a502270e3cc6c",
    )
    .try_into()
    .unwrap();
    let wrapped = WrappedKey {
        nonce: unhex(GCM_IV).try_into().unwrap(),
        sealed,
    };
    let key = unwrap_data_key(&master, b"", &wrapped).expect("NIST vector opens");
    let want = unhex(
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
    );
    assert!(
        key.expose_secret()[..] == want[..],
        "unwrap of GCM case 15 gives its plaintext"
    );
}

// --- the wrap fails on any change ---

const AD: &[u8] = b"volume=v1 drive=d3 slot=A master=key-7 generation=12";

fn wrapped_fixture() -> (MasterKey, DataKey, WrappedKey) {
    let master = MasterKey::generate().unwrap();
    let key = DataKey::generate().unwrap();
    let wrapped = wrap_data_key(&master, AD, &key).unwrap();
    let back = unwrap_data_key(&master, AD, &wrapped).expect("unchanged wrap opens");
    assert!(back.expose_secret() == key.expose_secret());
    (master, key, wrapped)
}

fn assert_refused(master: &MasterKey, ad: &[u8], wrapped: &WrappedKey, what: &str) {
    match unwrap_data_key(master, ad, wrapped) {
        Err(CryptoError::UnwrapFailed) => {}
        Err(e) => panic!("{what}: unexpected error {e}"),
        Ok(_) => panic!("{what}: the altered wrap opened"),
    }
}

#[test]
fn wrap_fails_with_changed_associated_data() {
    let (master, _, wrapped) = wrapped_fixture();
    for i in 0..AD.len() {
        let mut ad = AD.to_vec();
        ad[i] ^= 0x01;
        assert_refused(&master, &ad, &wrapped, &format!("associated data byte {i}"));
    }
    assert_refused(
        &master,
        &AD[..AD.len() - 1],
        &wrapped,
        "associated data truncated",
    );
    assert_refused(&master, b"", &wrapped, "associated data empty");
}

#[test]
fn wrap_fails_with_changed_nonce() {
    let (master, _, wrapped) = wrapped_fixture();
    for i in 0..wrapped.nonce.len() {
        let mut w = wrapped.clone();
        w.nonce[i] ^= 0x80;
        assert_refused(&master, AD, &w, &format!("nonce byte {i}"));
    }
}

#[test]
fn wrap_fails_with_changed_ciphertext_or_tag() {
    let (master, _, wrapped) = wrapped_fixture();
    for i in 0..WRAPPED_KEY_LEN {
        let mut w = wrapped.clone();
        w.sealed[i] ^= 0x04;
        assert_refused(&master, AD, &w, &format!("sealed byte {i}"));
    }
}

#[test]
fn wrap_fails_with_another_master_key() {
    let (master, _, wrapped) = wrapped_fixture();
    let other = MasterKey::generate().unwrap();
    assert_refused(&other, AD, &wrapped, "another master key");

    let mut near = *master.expose_secret();
    near[31] ^= 1;
    let near = MasterKey::from_bytes(&near).unwrap();
    assert_refused(&near, AD, &wrapped, "master key one bit off");
}

#[test]
fn wraps_of_the_same_key_differ() {
    let (master, key, wrapped) = wrapped_fixture();
    let again = wrap_data_key(&master, AD, &key).unwrap();
    assert_ne!(wrapped.nonce, again.nonce, "a fresh random nonce per wrap");
    assert_ne!(wrapped.sealed, again.sealed);
}
