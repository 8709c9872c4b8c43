//! KMIP TTLV (tag, type, length, value) encoding and decoding.
//!
//! This file owns the byte layout of KMIP messages: a 3-byte tag, a 1-byte item type, a 4-byte
//! big-endian length, then the value padded with zero bytes to a multiple of 8 (KMIP 1.x
//! specification, section 9.1 "TTLV Encoding"). It knows nothing of operations or keys; the
//! client builds and reads messages as trees of [`Ttlv`] items.
//!
//! The decoder trusts nothing it reads: every length is checked against the bytes that remain
//! in the enclosing structure before anything is allocated, fixed-size types must carry their
//! exact length, padding must be zero, nesting is bounded by [`MAX_DEPTH`] and a whole message
//! by [`MAX_MESSAGE_LEN`]. Errors name the byte offset and the tag of the offending item.
//!
//! Byte strings may carry key material: they are held in [`Zeroizing`] buffers and the `Debug`
//! output of a [`Value`] shows only their length.

use std::fmt;

use zeroize::Zeroizing;

/// Largest message, header included, that the decoder accepts (1 MiB). KMIP responses this
/// client asks for (one key, a few attributes, a list of ids) are far smaller.
pub const MAX_MESSAGE_LEN: usize = 1 << 20;

/// Deepest nesting of structures that the decoder accepts. A KMIP 1.x response to the
/// operations this client uses nests about 7 deep.
pub const MAX_DEPTH: usize = 32;

/// Bytes of an item header: tag (3), type (1), length (4).
pub const HEADER_LEN: usize = 8;

/// Errors of encoding or decoding TTLV. Offsets are byte offsets from the start of the buffer
/// given to the decoder; tags are printed as 6 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TtlvError {
    /// The buffer ends before an item header or value does.
    #[error("TTLV truncated at offset {offset}: needs {needed} more bytes, {available} left")]
    Truncated {
        /// Offset of the item or header that does not fit.
        offset: usize,
        /// Bytes the item needs.
        needed: usize,
        /// Bytes left in the buffer or enclosing structure.
        available: usize,
    },
    /// A tag whose first byte is neither 0x42 (KMIP) nor 0x54 (extension).
    #[error("TTLV item at offset {offset} has tag {tag:06x}, outside the KMIP tag ranges")]
    BadTag {
        /// Offset of the item.
        offset: usize,
        /// The tag read.
        tag: u32,
    },
    /// An item type byte that KMIP 1.x does not define.
    #[error("TTLV item {tag:06x} at offset {offset} has unknown type {item_type:#04x}")]
    UnknownType {
        /// Offset of the item.
        offset: usize,
        /// The item's tag.
        tag: u32,
        /// The type byte read.
        item_type: u8,
    },
    /// A length that the item's type does not allow (for example an Integer that is not 4
    /// bytes, a Big Integer that is not a non-zero multiple of 8, a Structure whose length is
    /// not a multiple of 8).
    #[error("TTLV item {tag:06x} at offset {offset}: length {length} is invalid for {item_type}")]
    BadLength {
        /// Offset of the item.
        offset: usize,
        /// The item's tag.
        tag: u32,
        /// Name of the item type.
        item_type: &'static str,
        /// The length read.
        length: u32,
    },
    /// Padding bytes after a value are not zero.
    #[error("TTLV item {tag:06x} at offset {offset} has non-zero padding")]
    BadPadding {
        /// Offset of the item.
        offset: usize,
        /// The item's tag.
        tag: u32,
    },
    /// A Boolean whose value is neither 0 nor 1.
    #[error("TTLV boolean {tag:06x} at offset {offset} has value {value}, not 0 or 1")]
    BadBoolean {
        /// Offset of the item.
        offset: usize,
        /// The item's tag.
        tag: u32,
        /// The value read.
        value: u64,
    },
    /// A Text String that is not UTF-8.
    #[error("TTLV text string {tag:06x} at offset {offset} is not valid UTF-8")]
    BadUtf8 {
        /// Offset of the item.
        offset: usize,
        /// The item's tag.
        tag: u32,
    },
    /// Structures nest deeper than [`MAX_DEPTH`].
    #[error("TTLV structure {tag:06x} at offset {offset} nests deeper than {limit} levels")]
    TooDeep {
        /// Offset of the structure.
        offset: usize,
        /// The structure's tag.
        tag: u32,
        /// The limit.
        limit: usize,
    },
    /// A message (or an encoded value) is larger than [`MAX_MESSAGE_LEN`].
    #[error("TTLV message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size found or needed.
        size: u64,
        /// The limit.
        limit: usize,
    },
    /// Bytes remain after the top-level item.
    #[error("TTLV message has {count} trailing bytes at offset {offset}")]
    TrailingBytes {
        /// Offset of the first trailing byte.
        offset: usize,
        /// Number of trailing bytes.
        count: usize,
    },
    /// An encoder was given a tag that does not fit in 3 bytes or is outside the KMIP ranges.
    #[error("cannot encode tag {tag:#x}: not a 3-byte KMIP tag")]
    InvalidTag {
        /// The tag given.
        tag: u32,
    },
}

/// The value of one TTLV item, by item type (KMIP 1.x section 9.1.1.2).
#[derive(Clone, PartialEq, Eq)]
pub enum Value {
    /// Type 0x01: an ordered list of items.
    Structure(Vec<Ttlv>),
    /// Type 0x02: signed 32-bit integer.
    Integer(i32),
    /// Type 0x03: signed 64-bit integer.
    LongInteger(i64),
    /// Type 0x04: two's-complement big-endian integer, a non-zero multiple of 8 bytes long.
    BigInteger(Vec<u8>),
    /// Type 0x05: unsigned 32-bit enumeration value.
    Enumeration(u32),
    /// Type 0x06: boolean (encoded as 8 bytes, 0 or 1).
    Boolean(bool),
    /// Type 0x07: UTF-8 text.
    TextString(String),
    /// Type 0x08: bytes; may be key material, so zeroized on drop and hidden from `Debug`.
    ByteString(Zeroizing<Vec<u8>>),
    /// Type 0x09: seconds since the Unix epoch, signed 64-bit.
    DateTime(i64),
    /// Type 0x0A: a length of time in seconds, unsigned 32-bit.
    Interval(u32),
}

impl Value {
    /// The item type byte of this value.
    pub fn type_code(&self) -> u8 {
        match self {
            Value::Structure(_) => 0x01,
            Value::Integer(_) => 0x02,
            Value::LongInteger(_) => 0x03,
            Value::BigInteger(_) => 0x04,
            Value::Enumeration(_) => 0x05,
            Value::Boolean(_) => 0x06,
            Value::TextString(_) => 0x07,
            Value::ByteString(_) => 0x08,
            Value::DateTime(_) => 0x09,
            Value::Interval(_) => 0x0A,
        }
    }

    /// The name of this value's item type, as the specification spells it.
    pub fn type_name(&self) -> &'static str {
        type_name(self.type_code())
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Structure(items) => f.debug_list().entries(items).finish(),
            Value::Integer(v) => write!(f, "Integer({v})"),
            Value::LongInteger(v) => write!(f, "LongInteger({v})"),
            Value::BigInteger(v) => write!(f, "BigInteger({} bytes)", v.len()),
            Value::Enumeration(v) => write!(f, "Enumeration({v:#x})"),
            Value::Boolean(v) => write!(f, "Boolean({v})"),
            Value::TextString(v) => write!(f, "TextString({v:?})"),
            Value::ByteString(v) => write!(f, "ByteString({} bytes)", v.len()),
            Value::DateTime(v) => write!(f, "DateTime({v})"),
            Value::Interval(v) => write!(f, "Interval({v})"),
        }
    }
}

/// One TTLV item: a tag and a value.
#[derive(Clone, PartialEq, Eq)]
pub struct Ttlv {
    /// The 3-byte tag (0x42xxxx for KMIP-defined tags, 0x54xxxx for extensions).
    pub tag: u32,
    /// The value, which determines the item type.
    pub value: Value,
}

impl fmt::Debug for Ttlv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06x}:{:?}", self.tag, self.value)
    }
}

fn type_name(code: u8) -> &'static str {
    match code {
        0x01 => "Structure",
        0x02 => "Integer",
        0x03 => "Long Integer",
        0x04 => "Big Integer",
        0x05 => "Enumeration",
        0x06 => "Boolean",
        0x07 => "Text String",
        0x08 => "Byte String",
        0x09 => "Date-Time",
        0x0A => "Interval",
        _ => "unknown type",
    }
}

/// Rounds a value length up to the 8-byte boundary that padding reaches.
fn padded(len: usize) -> usize {
    len.div_ceil(8) * 8
}

fn tag_is_kmip(tag: u32) -> bool {
    tag <= 0xFF_FFFF && matches!(tag >> 16, 0x42 | 0x54)
}

impl Ttlv {
    /// An item of any value.
    pub fn new(tag: u32, value: Value) -> Self {
        Ttlv { tag, value }
    }

    /// A Structure item.
    pub fn structure(tag: u32, items: Vec<Ttlv>) -> Self {
        Ttlv::new(tag, Value::Structure(items))
    }

    /// An Integer item.
    pub fn integer(tag: u32, v: i32) -> Self {
        Ttlv::new(tag, Value::Integer(v))
    }

    /// An Enumeration item.
    pub fn enumeration(tag: u32, v: u32) -> Self {
        Ttlv::new(tag, Value::Enumeration(v))
    }

    /// A Text String item.
    pub fn text(tag: u32, v: &str) -> Self {
        Ttlv::new(tag, Value::TextString(v.to_owned()))
    }

    /// The items of a Structure, or `None` for any other type.
    pub fn items(&self) -> Option<&[Ttlv]> {
        match &self.value {
            Value::Structure(items) => Some(items),
            _ => None,
        }
    }

    /// The first direct child of a Structure with the given tag.
    pub fn child(&self, tag: u32) -> Option<&Ttlv> {
        self.items()?.iter().find(|item| item.tag == tag)
    }

    /// Every direct child of a Structure with the given tag, in order.
    pub fn children(&self, tag: u32) -> impl Iterator<Item = &Ttlv> {
        self.items()
            .unwrap_or(&[])
            .iter()
            .filter(move |item| item.tag == tag)
    }

    /// The value if this is an Enumeration.
    pub fn as_enumeration(&self) -> Option<u32> {
        match self.value {
            Value::Enumeration(v) => Some(v),
            _ => None,
        }
    }

    /// The value if this is an Integer.
    pub fn as_integer(&self) -> Option<i32> {
        match self.value {
            Value::Integer(v) => Some(v),
            _ => None,
        }
    }

    /// The value if this is a Text String.
    pub fn as_text(&self) -> Option<&str> {
        match &self.value {
            Value::TextString(v) => Some(v),
            _ => None,
        }
    }

    /// The value if this is a Byte String.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.value {
            Value::ByteString(v) => Some(v),
            _ => None,
        }
    }

    /// Length of this item once encoded, header and padding included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + padded(self.value_len())
    }

    /// Length of the value alone, without padding (what the Length field carries).
    fn value_len(&self) -> usize {
        match &self.value {
            Value::Structure(items) => items.iter().map(Ttlv::encoded_len).sum(),
            Value::Integer(_) | Value::Enumeration(_) | Value::Interval(_) => 4,
            Value::LongInteger(_) | Value::Boolean(_) | Value::DateTime(_) => 8,
            Value::BigInteger(v) => padded(v.len().max(1)),
            Value::TextString(v) => v.len(),
            Value::ByteString(v) => v.len(),
        }
    }

    /// Encodes this item. Fails only for a tag outside the KMIP ranges or a message larger
    /// than [`MAX_MESSAGE_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, TtlvError> {
        let size = self.encoded_len();
        if size > MAX_MESSAGE_LEN {
            return Err(TtlvError::TooLarge {
                size: size as u64,
                limit: MAX_MESSAGE_LEN,
            });
        }
        let mut out = Vec::with_capacity(size);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), TtlvError> {
        if !tag_is_kmip(self.tag) {
            return Err(TtlvError::InvalidTag { tag: self.tag });
        }
        // The size check in `encode` bounds every length here well below u32::MAX.
        let len = self.value_len();
        out.extend_from_slice(&self.tag.to_be_bytes()[1..]);
        out.push(self.value.type_code());
        out.extend_from_slice(&(len as u32).to_be_bytes());
        let start = out.len();
        match &self.value {
            Value::Structure(items) => {
                for item in items {
                    item.encode_into(out)?;
                }
            }
            Value::Integer(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::LongInteger(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::BigInteger(v) => {
                // Sign-extend on the left to the padded length.
                let fill = if v.first().is_some_and(|b| b & 0x80 != 0) {
                    0xFF
                } else {
                    0
                };
                out.resize(start + len - v.len(), fill);
                out.extend_from_slice(v);
            }
            Value::Enumeration(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Boolean(v) => out.extend_from_slice(&u64::from(*v).to_be_bytes()),
            Value::TextString(v) => out.extend_from_slice(v.as_bytes()),
            Value::ByteString(v) => out.extend_from_slice(v),
            Value::DateTime(v) => out.extend_from_slice(&v.to_be_bytes()),
            Value::Interval(v) => out.extend_from_slice(&v.to_be_bytes()),
        }
        out.resize(start + padded(len), 0);
        Ok(())
    }
}

/// Reads the header of a top-level message and returns its total length (header included),
/// checked against [`MAX_MESSAGE_LEN`]. A reader of a stream calls this on the first 8 bytes,
/// then reads exactly that many bytes in all before calling [`decode`].
pub fn message_len(header: &[u8; HEADER_LEN]) -> Result<usize, TtlvError> {
    let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
    if !tag_is_kmip(tag) {
        return Err(TtlvError::BadTag { offset: 0, tag });
    }
    if header[3] != 0x01 {
        return Err(TtlvError::UnknownType {
            offset: 0,
            tag,
            item_type: header[3],
        });
    }
    let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let total = u64::from(length) + HEADER_LEN as u64;
    if total > MAX_MESSAGE_LEN as u64 {
        return Err(TtlvError::TooLarge {
            size: total,
            limit: MAX_MESSAGE_LEN,
        });
    }
    if !length.is_multiple_of(8) {
        return Err(TtlvError::BadLength {
            offset: 0,
            tag,
            item_type: "Structure",
            length,
        });
    }
    Ok(total as usize)
}

/// Decodes exactly one item filling the whole buffer.
pub fn decode(buf: &[u8]) -> Result<Ttlv, TtlvError> {
    if buf.len() > MAX_MESSAGE_LEN {
        return Err(TtlvError::TooLarge {
            size: buf.len() as u64,
            limit: MAX_MESSAGE_LEN,
        });
    }
    let mut reader = Reader { buf, pos: 0 };
    let item = reader.item(buf.len(), 0)?;
    if reader.pos != buf.len() {
        return Err(TtlvError::TrailingBytes {
            offset: reader.pos,
            count: buf.len() - reader.pos,
        });
    }
    Ok(item)
}

/// A cursor over the buffer being decoded.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    /// Takes `n` bytes, not reading past `end` (the end of the enclosing structure).
    fn take(&mut self, n: usize, end: usize, offset: usize) -> Result<&[u8], TtlvError> {
        let available = end - self.pos;
        if n > available {
            return Err(TtlvError::Truncated {
                offset,
                needed: n,
                available,
            });
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    /// Decodes one item that must end at or before `end`; `depth` counts enclosing structures.
    fn item(&mut self, end: usize, depth: usize) -> Result<Ttlv, TtlvError> {
        let offset = self.pos;
        let header = self.take(HEADER_LEN, end, offset)?;
        let tag = u32::from_be_bytes([0, header[0], header[1], header[2]]);
        let item_type = header[3];
        let length = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if !tag_is_kmip(tag) {
            return Err(TtlvError::BadTag { offset, tag });
        }

        // Check the length against the type before looking at the value bytes.
        let name = type_name(item_type);
        let bad_length = || TtlvError::BadLength {
            offset,
            tag,
            item_type: name,
            length,
        };
        let fits = match item_type {
            0x01 => length.is_multiple_of(8),
            0x02 | 0x05 | 0x0A => length == 4,
            0x03 | 0x06 | 0x09 => length == 8,
            0x04 => length != 0 && length.is_multiple_of(8),
            0x07 | 0x08 => true,
            _ => {
                return Err(TtlvError::UnknownType {
                    offset,
                    tag,
                    item_type,
                });
            }
        };
        if !fits {
            return Err(bad_length());
        }
        let len = length as usize;
        let padded_len = padded(len);
        let available = end - self.pos;
        if padded_len > available {
            return Err(TtlvError::Truncated {
                offset,
                needed: padded_len,
                available,
            });
        }

        let value = if item_type == 0x01 {
            if depth >= MAX_DEPTH {
                return Err(TtlvError::TooDeep {
                    offset,
                    tag,
                    limit: MAX_DEPTH,
                });
            }
            let struct_end = self.pos + len;
            let mut items = Vec::new();
            while self.pos < struct_end {
                items.push(self.item(struct_end, depth + 1)?);
            }
            Value::Structure(items)
        } else {
            let bytes = self.take(len, end, offset)?;
            let value = scalar(item_type, bytes, offset, tag)?;
            let pad = self.take(padded_len - len, end, offset)?;
            if pad.iter().any(|&b| b != 0) {
                return Err(TtlvError::BadPadding { offset, tag });
            }
            value
        };
        Ok(Ttlv { tag, value })
    }
}

/// Decodes the value of a non-structure item whose length was already checked.
fn scalar(item_type: u8, bytes: &[u8], offset: usize, tag: u32) -> Result<Value, TtlvError> {
    let be32 = || u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let be64 = || {
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes);
        u64::from_be_bytes(b)
    };
    Ok(match item_type {
        0x02 => Value::Integer(be32() as i32),
        0x03 => Value::LongInteger(be64() as i64),
        0x04 => Value::BigInteger(bytes.to_vec()),
        0x05 => Value::Enumeration(be32()),
        0x06 => match be64() {
            0 => Value::Boolean(false),
            1 => Value::Boolean(true),
            value => return Err(TtlvError::BadBoolean { offset, tag, value }),
        },
        0x07 => match std::str::from_utf8(bytes) {
            Ok(s) => Value::TextString(s.to_owned()),
            Err(_) => return Err(TtlvError::BadUtf8 { offset, tag }),
        },
        0x08 => Value::ByteString(Zeroizing::new(bytes.to_vec())),
        0x09 => Value::DateTime(be64() as i64),
        // Only 0x0A is left: `item` rejected every other type byte before calling here.
        _ => Value::Interval(be32()),
    })
}

#[cfg(test)]
mod tests {
    //! Known-answer tests from the KMIP specification, version 1.2 (and identical in 1.0-1.4),
    //! section 9.1.2 "Examples" of "TTLV Encoding": each example uses tag 0x420020
    //! (Compromise Date) with the value shown, and one structure with tags 0x420004 and
    //! 0x420005. Source: OASIS, http://docs.oasis-open.org/kmip/spec/v1.2/kmip-spec-v1.2.html
    use super::*;

    /// Parses the specification's "42 00 20 | 02 | ..." notation.
    fn spec(s: &str) -> Vec<u8> {
        let digits: String = s.chars().filter(char::is_ascii_hexdigit).collect();
        hex::decode(digits).expect("test vector is hex")
    }

    fn round_trip(item: Ttlv, expect: &str) {
        let bytes = spec(expect);
        assert_eq!(
            item.encode().expect("encodes"),
            bytes,
            "encoding of {item:?}"
        );
        assert_eq!(decode(&bytes).expect("decodes"), item);
    }

    #[test]
    fn spec_integer() {
        round_trip(
            Ttlv::integer(0x420020, 8),
            "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00",
        );
    }

    #[test]
    fn spec_long_integer() {
        round_trip(
            Ttlv::new(0x420020, Value::LongInteger(123_456_789_000_000_000)),
            "42 00 20 | 03 | 00 00 00 08 | 01 B6 9B 4B A5 74 92 00",
        );
    }

    #[test]
    fn spec_big_integer() {
        // 1234567890000000000000000000 = 0x03FD35EB6BC2DF4618080000
        let bytes = spec("03 FD 35 EB 6B C2 DF 46 18 08 00 00");
        let expect =
            "42 00 20 | 04 | 00 00 00 10 | 00 00 00 00 03 FD 35 EB 6B C2 DF 46 18 08 00 00";
        let encoded = Ttlv::new(0x420020, Value::BigInteger(bytes))
            .encode()
            .expect("encodes");
        assert_eq!(encoded, spec(expect));
        // The decoder keeps the padded (sign-extended) form.
        let mut full = vec![0u8; 4];
        full.extend_from_slice(&spec("03 FD 35 EB 6B C2 DF 46 18 08 00 00"));
        assert_eq!(
            decode(&spec(expect)).expect("decodes"),
            Ttlv::new(0x420020, Value::BigInteger(full))
        );
    }

    #[test]
    fn spec_enumeration() {
        round_trip(
            Ttlv::enumeration(0x420020, 255),
            "42 00 20 | 05 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
        );
    }

    #[test]
    fn spec_boolean() {
        round_trip(
            Ttlv::new(0x420020, Value::Boolean(true)),
            "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 01",
        );
    }

    #[test]
    fn spec_text_string() {
        round_trip(
            Ttlv::text(0x420020, "Hello World"),
            "42 00 20 | 07 | 00 00 00 0B | 48 65 6C 6C 6F 20 57 6F 72 6C 64 00 00 00 00 00",
        );
    }

    #[test]
    fn spec_byte_string() {
        round_trip(
            Ttlv::new(0x420020, Value::ByteString(Zeroizing::new(vec![1, 2, 3]))),
            "42 00 20 | 08 | 00 00 00 03 | 01 02 03 00 00 00 00 00",
        );
    }

    #[test]
    fn spec_date_time() {
        // Friday, March 14, 2008, 11:56:40 GMT.
        round_trip(
            Ttlv::new(0x420020, Value::DateTime(0x47DA_67F8)),
            "42 00 20 | 09 | 00 00 00 08 | 00 00 00 00 47 DA 67 F8",
        );
    }

    #[test]
    fn spec_interval() {
        // Ten days.
        round_trip(
            Ttlv::new(0x420020, Value::Interval(10 * 24 * 3600)),
            "42 00 20 | 0A | 00 00 00 04 | 00 0D 2F 00 00 00 00 00",
        );
    }

    #[test]
    fn spec_structure() {
        round_trip(
            Ttlv::structure(
                0x420020,
                vec![
                    Ttlv::enumeration(0x420004, 254),
                    Ttlv::integer(0x420005, 255),
                ],
            ),
            "42 00 20 | 01 | 00 00 00 20 | 42 00 04 | 05 | 00 00 00 04 | 00 00 00 FE 00 00 00 00 \
             | 42 00 05 | 02 | 00 00 00 04 | 00 00 00 FF 00 00 00 00",
        );
    }

    #[test]
    fn message_len_checks_header() {
        let header = |s: &str| -> [u8; 8] { spec(s).try_into().expect("8 bytes") };
        assert_eq!(message_len(&header("42 00 7B 01 00 00 00 20")), Ok(40));
        assert!(matches!(
            message_len(&header("42 00 7B 01 FF FF FF F8")),
            Err(TtlvError::TooLarge { .. })
        ));
        assert!(matches!(
            message_len(&header("42 00 7B 02 00 00 00 04")),
            Err(TtlvError::UnknownType { .. })
        ));
        assert!(matches!(
            message_len(&header("16 03 01 00 00 00 00 08")),
            Err(TtlvError::BadTag { .. })
        ));
    }

    #[test]
    fn length_larger_than_buffer_is_truncation_with_offset_and_tag() {
        // A structure claiming 0x20 bytes holding a text string claiming 0x7FFFFFF0 bytes.
        let bytes = spec("42 00 20 01 00 00 00 10 42 00 21 07 7F FF FF F0 41 41 41 41 00 00 00 00");
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, TtlvError::Truncated { .. }), "{err}");
        let bytes = spec("42 00 20 01 00 00 00 10 42 00 21 07 7F FF FF F0 41 41 41 41 00 00 00 00");
        let mut fixed = bytes.clone();
        fixed[7] = 0x10;
        let err = decode(&fixed[..]).unwrap_err();
        assert_eq!(
            err,
            TtlvError::Truncated {
                offset: 8,
                needed: 0x7FFF_FFF0,
                available: 8
            }
        );
        assert!(err.to_string().contains("offset 8"));
    }

    #[test]
    fn rejects_bad_fixed_lengths_padding_booleans_utf8_and_trailing_bytes() {
        type Check = fn(&TtlvError) -> bool;
        let cases: [(&str, Check); 6] = [
            ("42 00 20 02 00 00 00 08 00 00 00 08 00 00 00 00", |e| {
                matches!(
                    e,
                    TtlvError::BadLength {
                        offset: 0,
                        tag: 0x420020,
                        ..
                    }
                )
            }),
            ("42 00 20 02 00 00 00 04 00 00 00 08 00 00 00 01", |e| {
                matches!(e, TtlvError::BadPadding { tag: 0x420020, .. })
            }),
            ("42 00 20 06 00 00 00 08 00 00 00 00 00 00 00 02", |e| {
                matches!(e, TtlvError::BadBoolean { value: 2, .. })
            }),
            ("42 00 20 07 00 00 00 02 C3 28 00 00 00 00 00 00", |e| {
                matches!(e, TtlvError::BadUtf8 { .. })
            }),
            ("42 00 20 0B 00 00 00 00", |e| {
                matches!(
                    e,
                    TtlvError::UnknownType {
                        item_type: 0x0B,
                        ..
                    }
                )
            }),
            ("42 00 20 01 00 00 00 00 00", |e| {
                matches!(e, TtlvError::TrailingBytes { offset: 8, .. })
            }),
        ];
        for (hex, check) in cases {
            let err = decode(&spec(hex)).unwrap_err();
            assert!(check(&err), "{hex}: {err}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let mut item = Ttlv::integer(0x420001, 1);
        for _ in 0..MAX_DEPTH {
            item = Ttlv::structure(0x420001, vec![item]);
        }
        let ok = item.encode().expect("encodes");
        assert!(decode(&ok).is_ok());
        let deeper = Ttlv::structure(0x420001, vec![item])
            .encode()
            .expect("encodes");
        assert!(matches!(decode(&deeper), Err(TtlvError::TooDeep { .. })));
    }

    #[test]
    fn debug_hides_byte_strings() {
        let item = Ttlv::new(0x420043, Value::ByteString(Zeroizing::new(vec![0xAB; 32])));
        let shown = format!("{item:?}");
        assert!(shown.contains("32 bytes"), "{shown}");
        assert!(
            !shown.to_lowercase().contains("ab, ") && !shown.contains("171"),
            "{shown}"
        );
    }

    #[test]
    fn encoder_rejects_bad_tags() {
        assert_eq!(
            Ttlv::integer(0x1_420020, 1).encode(),
            Err(TtlvError::InvalidTag { tag: 0x1_420020 })
        );
        assert_eq!(
            Ttlv::integer(0x100020, 1).encode(),
            Err(TtlvError::InvalidTag { tag: 0x100020 })
        );
    }
}
