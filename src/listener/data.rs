//! DATA framing (RFC 5321 4.1.1.4, 4.5.2): find the end of data, undo dot-stuffing, and deal
//! with bare line feeds, as a state machine over the bytes as they come, so that arbitrarily
//! long lines need no buffering.
//!
//! Bare LF policy: *normalise*, as Postfix 3.9 does by default. A line ending in a bare LF is
//! stored as if it ended in CRLF, but only `<CR><LF>.<CR><LF>` ends the data: `\n.\r\n`,
//! `\r\n.\n` and `\n.\n` do not, so an SMTP smuggling attempt arrives as harmless body text
//! instead of a second message. A bare CR is kept as it is. NUL bytes are noted and the
//! message is refused once its end is seen.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line that followed CRLF (or the DATA command itself).
    LineStart,
    /// At the start of a line that followed a bare LF: a lone dot here does not end data.
    LineStartAfterBareLf,
    /// Saw a dot at the start of a line; `after_bare_lf` as above.
    Dot { after_bare_lf: bool },
    /// Saw `.\r` at the start of a line.
    DotCr { after_bare_lf: bool },
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
    bare_line_feeds: u64,
}

/// What a finished DATA phase produced.
#[derive(Debug)]
pub enum DataOutcome {
    Complete { body: Vec<u8>, bare_line_feeds: u64 },
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
            bare_line_feeds: 0,
        }
    }

    /// Consumes bytes until the end-of-data marker. Returns how many bytes of `input` belong
    /// to the data (the rest is the next command, for a pipelining client) once the end was
    /// seen, or `None` when every byte was consumed and more are needed.
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
                bare_line_feeds: self.bare_line_feeds,
            }
        }
    }

    /// Returns true at the end of data.
    fn step(&mut self, byte: u8) -> bool {
        self.state = match self.state {
            State::LineStart | State::LineStartAfterBareLf if byte == b'.' => State::Dot {
                after_bare_lf: self.state == State::LineStartAfterBareLf,
            },
            State::LineStart | State::LineStartAfterBareLf | State::Text => self.text(byte),
            // The leading dot of a stuffed line is dropped (RFC 5321 4.5.2).
            State::Dot { after_bare_lf } => match byte {
                b'\r' => State::DotCr { after_bare_lf },
                _ => self.text(byte),
            },
            State::DotCr {
                after_bare_lf: false,
            } if byte == b'\n' => return true,
            // `.\r\n` after a bare LF: an empty (unstuffed) line, not the end.
            State::DotCr {
                after_bare_lf: true,
            } if byte == b'\n' => {
                self.push(b"\r\n");
                State::LineStart
            }
            State::DotCr { .. } | State::Cr => match byte {
                b'\n' => {
                    self.push(b"\r\n");
                    State::LineStart
                }
                // The CR before this byte was a bare CR: keep it.
                _ => {
                    self.push(b"\r");
                    self.text(byte)
                }
            },
        };
        false
    }

    /// A byte inside a line.
    fn text(&mut self, byte: u8) -> State {
        match byte {
            b'\r' => State::Cr,
            b'\n' => {
                self.bare_line_feeds += 1;
                self.push(b"\r\n");
                State::LineStartAfterBareLf
            }
            _ => {
                self.saw_nul |= byte == 0;
                self.push(&[byte]);
                State::Text
            }
        }
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
    fn receive(wire: &[u8], chunk: usize) -> (DataOutcome, usize) {
        let mut receiver = DataReceiver::new(1 << 20);
        let mut offset = 0;
        for piece in wire.chunks(chunk) {
            if let Some(used) = receiver.feed(piece) {
                return (receiver.finish(), offset + used);
            }
            offset += piece.len();
        }
        panic!(
            "end of data not found in {:?}",
            String::from_utf8_lossy(wire)
        );
    }

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
            (b"bare cr\rinside\r\n.\r\n", b"bare cr\rinside\r\n"),
            (b"a\r\n\r\n\r\n.\r\n", b"a\r\n\r\n\r\n"),
        ];
        for (wire, expected) in cases {
            assert_eq!(body(wire), *expected, "{:?}", String::from_utf8_lossy(wire));
        }
    }

    #[test]
    fn bare_lf_is_normalised_and_cannot_end_data() {
        assert_eq!(body(b"a\nb\r\n.\r\n"), b"a\r\nb\r\n");
        // Smuggling shapes: none of these ends the message.
        let wire = b"a\n.\r\nMAIL FROM:<x@y>\r\n.\r\n";
        assert_eq!(body(wire), b"a\r\n\r\nMAIL FROM:<x@y>\r\n");
        let wire = b"a\r\n.\nMAIL FROM:<x@y>\r\n.\r\n";
        assert_eq!(body(wire), b"a\r\n\r\nMAIL FROM:<x@y>\r\n");
        let wire = b"a\n.\nb\r\n.\r\n";
        assert_eq!(body(wire), b"a\r\n\r\nb\r\n");
        match receive(b"a\nb\n.\r\n.\r\n", 4).0 {
            DataOutcome::Complete {
                bare_line_feeds, ..
            } => assert_eq!(bare_line_feeds, 2),
            other => panic!("{other:?}"),
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
