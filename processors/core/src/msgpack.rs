//! msgpack written straight into a byte vector, every value in its shortest form (the
//! form msgpack's reference encoders pick): the state rows and vectors a step writes by
//! the thousand are mostly small integers and short texts, and writing each as a fixed
//! run of bytes costs a fraction of going through a general encoder's `io::Write`.
//!
//! ```
//! use _core::msgpack::Pack;
//! let mut out = Vec::new();
//! out.array(3);
//! out.int(-1);
//! out.int(300);
//! out.text("é");
//! assert_eq!(out, b"\x93\xff\xcd\x01\x2c\xa2\xc3\xa9");
//! ```

/// Writing msgpack values at the end of a byte vector.
pub trait Pack {
    /// An array's header: `len` values follow.
    fn array(&mut self, len: usize);
    /// A map's header: `len` key and value pairs follow.
    fn map(&mut self, len: usize);
    fn int(&mut self, value: i64);
    fn uint(&mut self, value: u64);
    /// A 64-bit float (always 9 bytes, as the rows have always held them).
    fn float(&mut self, value: f64);
    fn float32(&mut self, value: f32);
    fn nil(&mut self);
    fn boolean(&mut self, value: bool);
    fn text(&mut self, value: &str);
    /// Text given as its UTF-8 bytes.
    fn text_bytes(&mut self, value: &[u8]);
}

/// A marker byte and the big-endian bytes after it.
fn marked<const N: usize>(out: &mut Vec<u8>, marker: u8, data: [u8; N]) {
    out.push(marker);
    out.extend_from_slice(&data);
}

/// A header whose short form holds the length in the marker (`fixed`, below `limit`),
/// else a 16- or 32-bit length after `wide16` or `wide16 + 1`.
fn header(out: &mut Vec<u8>, len: usize, fixed: u8, limit: usize, wide16: u8) {
    if len < limit {
        out.push(fixed | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        marked(out, wide16, len.to_be_bytes());
    } else {
        let len = u32::try_from(len).expect("a msgpack length fits in 32 bits");
        marked(out, wide16 + 1, len.to_be_bytes());
    }
}

impl Pack for Vec<u8> {
    fn array(&mut self, len: usize) {
        header(self, len, 0x90, 16, 0xdc);
    }

    fn map(&mut self, len: usize) {
        header(self, len, 0x80, 16, 0xde);
    }

    fn int(&mut self, value: i64) {
        match value {
            0.. => self.uint(value as u64),
            -32..=-1 => self.push(value as i8 as u8),
            -128..=-33 => marked(self, 0xd0, (value as i8).to_be_bytes()),
            -32_768..=-129 => marked(self, 0xd1, (value as i16).to_be_bytes()),
            -2_147_483_648..=-32_769 => marked(self, 0xd2, (value as i32).to_be_bytes()),
            _ => marked(self, 0xd3, value.to_be_bytes()),
        }
    }

    fn uint(&mut self, value: u64) {
        match value {
            0..=127 => self.push(value as u8),
            128..=255 => marked(self, 0xcc, [value as u8]),
            256..=65_535 => marked(self, 0xcd, (value as u16).to_be_bytes()),
            65_536..=4_294_967_295 => marked(self, 0xce, (value as u32).to_be_bytes()),
            _ => marked(self, 0xcf, value.to_be_bytes()),
        }
    }

    fn float(&mut self, value: f64) {
        marked(self, 0xcb, value.to_be_bytes());
    }

    fn float32(&mut self, value: f32) {
        marked(self, 0xca, value.to_be_bytes());
    }

    fn nil(&mut self) {
        self.push(0xc0);
    }

    fn boolean(&mut self, value: bool) {
        self.push(0xc2 | u8::from(value));
    }

    fn text(&mut self, value: &str) {
        self.text_bytes(value.as_bytes());
    }

    fn text_bytes(&mut self, value: &[u8]) {
        let len = value.len();
        if len < 32 {
            self.push(0xa0 | len as u8);
        } else if let Ok(len) = u8::try_from(len) {
            marked(self, 0xd9, [len]);
        } else {
            header(self, len, 0, 0, 0xda);
        }
        self.extend_from_slice(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_take_their_shortest_form_at_every_boundary() {
        let cases: [(i64, &[u8]); 14] = [
            (0, b"\x00"),
            (127, b"\x7f"),
            (128, b"\xcc\x80"),
            (255, b"\xcc\xff"),
            (256, b"\xcd\x01\x00"),
            (65_536, b"\xce\x00\x01\x00\x00"),
            (4_294_967_296, b"\xcf\x00\x00\x00\x01\x00\x00\x00\x00"),
            (-1, b"\xff"),
            (-32, b"\xe0"),
            (-33, b"\xd0\xdf"),
            (-128, b"\xd0\x80"),
            (-129, b"\xd1\xff\x7f"),
            (-32_769, b"\xd2\xff\xff\x7f\xff"),
            (i64::MIN, b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00"),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            out.int(value);
            assert_eq!(out, expected, "{value}");
        }
    }

    #[test]
    fn lengths_widen_past_the_short_forms() {
        let mut out = Vec::new();
        out.array(15);
        out.array(16);
        out.map(70_000);
        assert_eq!(out, b"\x9f\xdc\x00\x10\xdf\x00\x01\x11\x70");
        let mut out = Vec::new();
        out.text(&"x".repeat(31));
        assert_eq!(out[0], 0xbf);
        for (len, head) in [
            (32, &b"\xd9\x20"[..]),
            (256, b"\xda\x01\x00"),
            (65_536, b"\xdb\x00\x01\x00\x00"),
        ] {
            let mut out = Vec::new();
            out.text(&"x".repeat(len));
            assert_eq!(&out[..head.len()], head, "{len}");
            assert_eq!(out.len(), head.len() + len);
        }
    }

    #[test]
    fn floats_booleans_and_nil_have_fixed_forms() {
        let mut out = Vec::new();
        out.float(1.5);
        out.float32(1.5);
        out.boolean(true);
        out.boolean(false);
        out.nil();
        assert_eq!(
            out,
            b"\xcb\x3f\xf8\x00\x00\x00\x00\x00\x00\xca\x3f\xc0\x00\x00\xc3\xc2\xc0"
        );
    }
}
