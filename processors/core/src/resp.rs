//! Commands in the Redis protocol (RESP), packed into one buffer: a batch's commit writes
//! thousands of small commands, and packing them here costs a fraction of building and
//! packing them one at a time in Python.
//!
//! ```
//! use _core::resp::Commands;
//! let mut commands = Commands::default();
//! commands.push(&["LTRIM", "log", "0", "49"]);
//! assert_eq!(commands.count, 1);
//! assert_eq!(commands.bytes, b"*4\r\n$5\r\nLTRIM\r\n$3\r\nlog\r\n$1\r\n0\r\n$2\r\n49\r\n");
//! ```

use std::io::Write;

/// Packed commands and how many there are.
#[derive(Debug, Default)]
pub struct Commands {
    pub bytes: Vec<u8>,
    pub count: usize,
}

impl Commands {
    /// Add one command of `args` (the verb first).
    pub fn push<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        let bytes = &mut self.bytes;
        write!(bytes, "*{}\r\n", args.len()).expect("writing to a vector");
        for arg in args {
            let arg = arg.as_ref();
            write!(bytes, "${}\r\n", arg.len()).expect("writing to a vector");
            bytes.extend_from_slice(arg);
            bytes.extend_from_slice(b"\r\n");
        }
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_arguments_and_bytes_are_packed_by_length() {
        let mut commands = Commands::default();
        commands.push(&["HSET".as_bytes(), b"k", b"", "é".as_bytes()]);
        commands.push(&["DEL", "k"]);
        assert_eq!(commands.count, 2);
        assert_eq!(
            commands.bytes,
            "*4\r\n$4\r\nHSET\r\n$1\r\nk\r\n$0\r\n\r\n$2\r\né\r\n*2\r\n$3\r\nDEL\r\n$1\r\nk\r\n"
                .as_bytes()
        );
    }
}
