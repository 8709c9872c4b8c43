//! Fuzz target: the KMIP TTLV decoder must never panic, and whatever it accepts must encode
//! back to exactly the input bytes. Run: `cargo fuzz run ttlv_decode` (see fuzz/README.md).
#![no_main]

use atrest::keystore::kmip::ttlv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(item) = ttlv::decode(data) {
        let again = item.encode().expect("a decoded item encodes");
        assert_eq!(again, data, "decode/encode is not the identity");
    }
    // The stream framing check must agree with the decoder on the header.
    if let Ok(header) =
        <[u8; ttlv::HEADER_LEN]>::try_from(data.get(..ttlv::HEADER_LEN).unwrap_or(&[]))
    {
        if let Ok(total) = ttlv::message_len(&header) {
            assert!(total <= ttlv::MAX_MESSAGE_LEN);
        }
    }
});
