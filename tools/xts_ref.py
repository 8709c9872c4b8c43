#!/usr/bin/env python3
"""Independent XTS-AES-256 reference for atrest's cross-check test.

Reads JSON from stdin: {"unit_len": 4096, "cases": [{"key": hex, "first_unit": int,
"plaintext": hex}, ...]}. Each plaintext is a run of whole data units; unit k of the run is
encrypted with the tweak first_unit + k, written as a 16-byte little-endian number (IEEE 1619's
data unit sequence number). Writes JSON to stdout: {"backend": ..., "ciphertexts": [hex, ...]}.

The cipher is OpenSSL's AES-256-XTS reached through the Python `cryptography` package, a code
base that shares nothing with the Rust `aes` crate that atrest uses.
"""
import json
import sys

import cryptography
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def encrypt_run(key: bytes, first_unit: int, plaintext: bytes, unit_len: int) -> bytes:
    if len(key) != 64:
        raise ValueError(f"key has {len(key)} bytes, expected 64")
    if len(plaintext) % unit_len:
        raise ValueError(f"plaintext of {len(plaintext)} bytes is not whole units")
    out = bytearray()
    for k in range(len(plaintext) // unit_len):
        tweak = (first_unit + k).to_bytes(16, "little")
        enc = Cipher(algorithms.AES(key), modes.XTS(tweak)).encryptor()
        out += enc.update(plaintext[k * unit_len:(k + 1) * unit_len]) + enc.finalize()
    return bytes(out)


def main() -> int:
    req = json.load(sys.stdin)
    unit_len = int(req["unit_len"])
    cts = [
        encrypt_run(bytes.fromhex(c["key"]), int(c["first_unit"]), bytes.fromhex(c["plaintext"]),
                    unit_len).hex()
        for c in req["cases"]
    ]
    json.dump({"backend": f"cryptography {cryptography.__version__}", "ciphertexts": cts},
              sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
