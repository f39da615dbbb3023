//! Outgoing DATA framing (RFC 5321 4.5.2): every line that starts with a dot gets one more,
//! the first line included, and the data ends with `.` alone on a line. The stored body
//! always ends in CRLF (or is empty), so no extra line is added.

pub fn write_data(body: &[u8], out: &mut Vec<u8>) {
    out.reserve(body.len() + body.len() / 64 + 5);
    // Line by line: a line is copied whole, with a dot first if it starts with one.
    for line in body.split_inclusive(|&byte| byte == b'\n') {
        if line.first() == Some(&b'.') {
            out.push(b'.');
        }
        out.extend_from_slice(line);
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
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
    fn framing_round_trips_through_our_receiver() {
        use crate::listener::receive_data_for_tests as receive;
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
