//! DATA framing (RFC 5321 4.1.1.4, 4.5.2): find the end of data, undo dot-stuffing, and deal
//! with bare line ends, as a state machine over the bytes as they come, so that arbitrarily
//! long lines need no buffering.
//!
//! Bare LF and bare CR policy: *normalise*, as Postfix 3.9 does for bare LF by default. A line
//! ending in a bare LF or a bare CR is stored as if it ended in CRLF, but only
//! `<CR><LF>.<CR><LF>` ends the data: `\n.\r\n`, `\r.\r`, `\r\n.\n` and the like do not, so
//! an SMTP smuggling attempt arrives as harmless body text instead of a second message. A dot
//! that begins a line after a bare line end is content (only a line after CRLF is an SMTP
//! line whose leading dot is stuffing), and it is stuffed again on the way out, so no receiver
//! that splits lines on CR or LF alone ever sees a lone dot from us. NUL bytes are noted and
//! the message is refused once its end is seen.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed CRLF (or the DATA command itself).
    LineStart,
    /// At the start of a line that followed a bare LF or CR: a dot here is content.
    LineStartAfterBare,
    /// Saw a dot at the start of a line after CRLF.
    Dot,
    /// Saw `.\r` at the start of a line after CRLF.
    DotCr,
    /// Inside a line.
    Text,
    /// Inside a line, just after a CR.
    Cr,
}

/// Receives the bytes after `354` until the end of data.
#[derive(Debug)]
pub struct DataReceiver {
    state: State,
    body: Vec<u8>,
    max_size: u64,
    size: u64,
    saw_nul: bool,
    bare_line_ends: u64,
}

/// What a finished DATA phase produced.
#[derive(Debug)]
pub enum DataOutcome {
    Complete { body: Vec<u8>, bare_line_ends: u64 },
    TooBig,
    ContainsNul,
}

impl DataReceiver {
    pub fn new(max_size: u64) -> DataReceiver {
        DataReceiver {
            state: State::LineStart,
            body: Vec::new(),
            max_size,
            size: 0,
            saw_nul: false,
            bare_line_ends: 0,
        }
    }

    /// Consumes bytes until the end-of-data marker. Returns how many bytes of `input` belong
    /// to the data (the rest is the next command, for a pipelining client) once the end was
    /// seen, or `None` when every byte was consumed and more are needed.
    /// Message bytes received so far (after unstuffing).
    pub fn received(&self) -> u64 {
        self.size
    }

    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut index = 0;
        while index < input.len() {
            if self.state == State::Text {
                // Inside a line only CR, LF and NUL matter: take the bytes before the next
                // one as a whole (byte by byte, this loop was visible in the profile).
                let run = input[index..]
                    .iter()
                    .position(|&byte| matches!(byte, b'\r' | b'\n' | 0))
                    .unwrap_or(input.len() - index);
                if run > 0 {
                    self.push(&input[index..index + run]);
                    index += run;
                    continue;
                }
            }
            if self.step(input[index]) {
                return Some(index + 1);
            }
            index += 1;
        }
        None
    }

    pub fn finish(self) -> DataOutcome {
        if self.size > self.max_size {
            DataOutcome::TooBig
        } else if self.saw_nul {
            DataOutcome::ContainsNul
        } else {
            DataOutcome::Complete {
                body: self.body,
                bare_line_ends: self.bare_line_ends,
            }
        }
    }

    /// Returns true at the end of data.
    fn step(&mut self, byte: u8) -> bool {
        self.state = match self.state {
            State::LineStart if byte == b'.' => State::Dot,
            State::LineStart | State::LineStartAfterBare | State::Text => self.text(byte),
            // The leading dot of a stuffed line is dropped (RFC 5321 4.5.2).
            State::Dot => match byte {
                b'\r' => State::DotCr,
                _ => self.text(byte),
            },
            State::DotCr if byte == b'\n' => return true,
            State::Cr if byte == b'\n' => {
                self.push(b"\r\n");
                State::LineStart
            }
            // The CR before this byte was a bare CR: it ended the line.
            State::DotCr | State::Cr => {
                self.bare_line_end();
                self.text(byte)
            }
        };
        false
    }

    /// A byte inside a line (or at the start of one where a dot means nothing special).
    fn text(&mut self, byte: u8) -> State {
        match byte {
            b'\r' => State::Cr,
            b'\n' => self.bare_line_end(),
            _ => {
                self.saw_nul |= byte == 0;
                self.push(&[byte]);
                State::Text
            }
        }
    }

    /// A bare LF or CR: stored as CRLF, and what follows starts a line that cannot end data.
    fn bare_line_end(&mut self) -> State {
        self.bare_line_ends += 1;
        self.push(b"\r\n");
        State::LineStartAfterBare
    }

    /// Stores bytes until the size limit is passed; after that only counts them, so that the
    /// client can finish sending and hear `552` instead of a dropped connection.
    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size <= self.max_size {
            self.body.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` one chunk at a time and returns the body and how much of `wire` was data.
    use crate::fuzzing::receive_data as receive;

    fn body(wire: &[u8]) -> Vec<u8> {
        // Every chunking must give the same result.
        let mut bodies = Vec::new();
        for chunk in [1, 2, 3, 7, wire.len()] {
            match receive(wire, chunk) {
                (DataOutcome::Complete { body, .. }, _) => bodies.push(body),
                (other, _) => panic!("unexpected {other:?}"),
            }
        }
        bodies.dedup();
        assert_eq!(bodies.len(), 1, "chunking changed the result");
        bodies.pop().unwrap()
    }

    #[test]
    fn fixtures_arrive_byte_exact() {
        let cases: &[(&[u8], &[u8])] = &[
            (b".\r\n", b""),
            (
                b"Subject: x\r\n\r\nhello\r\n.\r\n",
                b"Subject: x\r\n\r\nhello\r\n",
            ),
            (
                b"..leading dot on first line\r\n.\r\n",
                b".leading dot on first line\r\n",
            ),
            (b"a\r\n..b\r\n...\r\n.\r\n", b"a\r\n.b\r\n..\r\n"),
            (b"no final newline\r\n.\r\n", b"no final newline\r\n"),
            (
                "8-bit: gr\u{fc}\u{df}e\r\n.\r\n".as_bytes(),
                "8-bit: gr\u{fc}\u{df}e\r\n".as_bytes(),
            ),
            (b"bare cr\rinside\r\n.\r\n", b"bare cr\r\ninside\r\n"),
            (b"a\r\n\r\n\r\n.\r\n", b"a\r\n\r\n\r\n"),
        ];
        for (wire, expected) in cases {
            assert_eq!(body(wire), *expected, "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn bare_lf_is_normalised_and_cannot_end_data() {
        assert_eq!(body(b"a\nb\r\n.\r\n"), b"a\r\nb\r\n");
        // Smuggling shapes: none of these ends the message; the dot stays content.
        let wire = b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n";
        assert_eq!(body(wire), b"a\r\n.\r\nMAIL FROM:<x@y>\r\n");
        let wire = b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n";
        assert_eq!(body(wire), b"a\r\n\r\nMAIL FROM:<x@y>\r\n");
        let wire = b"a\n.\nb\r\n.\r\n";
        assert_eq!(body(wire), b"a\r\n.\r\nb\r\n");
        match receive(b"a\nb\n.\r\n.\r\n", 4).0 {
            DataOutcome::Complete { bare_line_ends, .. } => assert_eq!(bare_line_ends, 2),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_cr_is_normalised_like_bare_lf_and_never_ends_data() {
        // Each lookalike arrives as lines, the dot kept as content (re-stuffed on the way out).
        let cases: &[(&[u8], &[u8])] = &[
            (b"a\r.\rb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
            (b"a\r.\r\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
            (b"a\r\r.\r\rb\r\n.\r\n", b"a\r\n\r\n.\r\n\r\nb\r\n"),
            (b"a\r\n\r.\r\nb\r\n.\r\n", b"a\r\n\r\n.\r\nb\r\n"),
            (b"a\r.\nb\r\n.\r\n", b"a\r\n.\r\nb\r\n"),
        ];
        for (wire, expected) in cases {
            assert_eq!(body(wire), *expected, "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn a_dot_after_a_bare_line_end_is_content_not_stuffing() {
        // `\n.\n` is a line holding a dot, not a stuffed empty line: the dot is kept.
        assert_eq!(body(b"a\n.\nb\r\n.\r\n"), b"a\r\n.\r\nb\r\n");
        assert_eq!(body(b"a\n..\r\n.\r\n"), b"a\r\n..\r\n");
        // After a real CRLF the leading dot is stuffing, as RFC 5321 4.5.2 says.
        assert_eq!(body(b"a\r\n..\r\n.\r\n"), b"a\r\n.\r\n");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any bytes from the troublesome alphabet, in any chunking: see
        /// `fuzzing::data_framing` for what must hold.
        #[test]
        fn lookalikes_never_become_an_end_of_data(
            bytes in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'.', b'\r', b'\n', 0u8]), 0..40),
            chunk in 0u8..8,
        ) {
            let mut data = vec![chunk];
            data.extend_from_slice(&bytes);
            crate::fuzzing::data_framing(&data);
        }
    }

    #[test]
    fn pipelined_command_after_data_is_left_unconsumed() {
        let wire = b"hi\r\n.\r\nQUIT\r\n";
        let (_, used) = receive(wire, wire.len());
        assert_eq!(&wire[used..], b"QUIT\r\n");
    }

    #[test]
    fn oversize_and_nul_are_reported_after_the_end() {
        let mut receiver = DataReceiver::new(10);
        let wire = b"0123456789abcdef\r\n.\r\n";
        assert_eq!(receiver.feed(wire), Some(wire.len()));
        assert!(matches!(receiver.finish(), DataOutcome::TooBig));
        let mut receiver = DataReceiver::new(100);
        assert!(receiver.feed(b"a\0b\r\n.\r\n").is_some());
        assert!(matches!(receiver.finish(), DataOutcome::ContainsNul));
    }
}
