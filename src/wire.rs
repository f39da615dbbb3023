//! Outgoing DATA framing (RFC 5321 4.5.2): every line that starts with a dot gets one more,
//! the first line included, and the data ends with `.` alone on a line. The stored body
//! always ends in CRLF (or is empty), so no extra line is added.
//!
//! Whatever a receiver does to lines, none may see a lone dot before the real end (the SMTP
//! smuggling research of 2023): a bare CR or LF left in a body (intake normalises them; old
//! spools may hold some) is sent as CRLF, and a line whose first byte after any NULs is a dot
//! is stuffed, so a receiver that splits on CR or LF alone, or strips NUL, still reads a
//! stuffed line.

pub fn write_data(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 5);
    let mut rest = body;
    while !rest.is_empty() {
        let end = memchr::memchr(b'\n', rest).map_or(rest.len(), |at| at + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        // The common line: its only CR is the one before its LF. Copied whole.
        if line.ends_with(b"\r\n") && memchr::memchr(b'\r', line) == Some(line.len() - 2) {
            if starts_with_dot(line) {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            continue;
        }
        let content = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        // A CR ending the body is its last line's end, not the start of another line.
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        for piece in content.split(|&byte| byte == b'\r') {
            write_line(piece, out);
        }
    }
    out.extend_from_slice(b".\r\n");
}

/// Whether a receiver could read the line as starting with a dot (NULs stripped or not).
fn starts_with_dot(line: &[u8]) -> bool {
    match line.first() {
        Some(b'.') => true,
        Some(0) => line.iter().find(|&&byte| byte != 0) == Some(&b'.'),
        _ => false,
    }
}

/// A line of `framed` (DATA as sent, end marker included) that some receiver would read as a
/// lone dot before the end — splitting lines on CR, on LF or on CRLF, with or without NULs.
#[cfg(any(test, feature = "fuzzing"))]
pub fn lone_dot_before_end(framed: &[u8]) -> Option<String> {
    let before_end = framed.strip_suffix(b".\r\n").unwrap_or(framed);
    let no_nul: Vec<u8> = before_end.iter().copied().filter(|&b| b != 0).collect();
    for text in [before_end, &no_nul[..]] {
        let lone = text
            .split(|&b| b == b'\r' || b == b'\n')
            .any(|line| line == b".")
            || text.split(|&b| b == b'\n').any(|line| line == b".\r");
        if lone {
            return Some(String::from_utf8_lossy(framed).into_owned());
        }
    }
    None
}

/// One line and its CRLF, stuffed when a receiver could read it as starting with a dot.
fn write_line(content: &[u8], out: &mut Vec<u8>) {
    if starts_with_dot(content) {
        out.push(b'.');
    }
    out.extend_from_slice(content);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_data(body, &mut out);
        out
    }

    #[test]
    fn dots_are_stuffed_on_every_line_including_the_first() {
        assert_eq!(
            framed(b".first\r\n.\r\nx\r\n"),
            b"..first\r\n..\r\nx\r\n.\r\n"
        );
        assert_eq!(framed(b""), b".\r\n");
        assert_eq!(framed(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(framed(b"a\r\n"), b"a\r\n.\r\n");
    }

    #[test]
    fn bare_line_ends_go_out_as_crlf_and_a_dot_behind_nul_is_stuffed() {
        assert_eq!(framed(b"a\r.\r\nb\n.\n"), b"a\r\n..\r\nb\r\n..\r\n.\r\n");
        assert_eq!(framed(b"x\r\n\0.\r\n"), b"x\r\n.\0.\r\n.\r\n");
        assert_eq!(framed(b"last\r"), b"last\r\n.\r\n");
        // The check the property tests rely on sees each receiver's lone dot.
        assert!(lone_dot_before_end(b"a\r\n.\r\nb\r\n.\r\n").is_some());
        assert!(lone_dot_before_end(b"a\r.\rb\r\n.\r\n").is_some());
        assert!(lone_dot_before_end(b"a\r\n\0.\r\n.\r\n").is_some());
        assert!(lone_dot_before_end(b"a\n.\r\n.\r\n").is_some());
        assert!(lone_dot_before_end(b"a\r\n..\r\n.\r\n").is_none());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever a spooled body holds, no receiver reads a lone dot before the end, however
        /// it splits lines or strips NUL.
        #[test]
        fn no_output_line_is_a_lone_dot(
            body in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'.', b'\r', b'\n', 0u8]), 0..40),
        ) {
            let out = framed(&body);
            proptest::prop_assert_eq!(lone_dot_before_end(&out), None);
            proptest::prop_assert!(out.ends_with(b"\r\n.\r\n") || out == b".\r\n");
        }
    }

    #[test]
    fn framing_round_trips_through_our_receiver() {
        use crate::listener::data::DataOutcome;
        let receive = |framed: &[u8]| match crate::fuzzing::receive_data(framed, framed.len()) {
            (DataOutcome::Complete { body, .. }, used) if used == framed.len() => body,
            other => panic!("{other:?}"),
        };
        for body in [
            &b".a\r\n..b\r\n\r\n.\r\n"[..],
            b"",
            b"x\r\n",
            "\u{fc}\r\n".as_bytes(),
        ] {
            assert_eq!(receive(&framed(body)), body);
        }
    }
}
