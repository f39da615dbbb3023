//! Header repair, table-driven, and the property that nothing outside the rewritten headers
//! ever changes.

use proptest::prelude::*;

use super::*;
use crate::config::Config;

fn rules() -> AddressRules {
    let config = Config::from_toml(
        "hostname = \"ip-10-0-0-12.eu-central-1.compute.internal\"\n[rewrite]\ninternal_sender = \"cron+{local}@example.com\"\nsender_domain = \"example.com\"\n[rewrite.aliases]\nroot = \"ops@example.com\"\n",
    )
    .unwrap();
    AddressRules::new(&config.rewrite, &config.hostname)
}

fn missing() -> Missing {
    Missing {
        from: None,
        date: "Sun, 22 Nov 2026 22:00:00 +0000".into(),
        message_id: Some("<ID@example.com>".into()),
    }
}

/// Rewrites `headers` (followed by Date, Message-ID and a body) and returns the new header
/// block up to the blank line.
fn rewritten(headers: &str) -> String {
    let message = format!("{headers}Date: x\r\nMessage-ID: <m@example.org>\r\n\r\nbody\r\n");
    let edited = rewrite(
        message.as_bytes(),
        &rules(),
        &["X-Cron-Env".to_string()],
        &missing(),
    );
    let text = String::from_utf8(edited.message).unwrap();
    assert!(
        text.ends_with("Date: x\r\nMessage-ID: <m@example.org>\r\n\r\nbody\r\n"),
        "{text}"
    );
    text[..text.len() - "Date: x\r\nMessage-ID: <m@example.org>\r\n\r\nbody\r\n".len()].to_string()
}

#[test]
fn header_forms() {
    let cases = [
        // cronie
        (
            "From: root (Cron Daemon)\r\n",
            "From: \"Cron Daemon\" <cron+root@example.com>\r\n",
        ),
        ("To: root\r\n", "To: ops@example.com\r\n"),
        // Debian cron
        (
            "From: \"(Cron Daemon)\" <root>\r\n",
            "From: \"(Cron Daemon)\" <cron+root@example.com>\r\n",
        ),
        // systemd-cron
        (
            "From: root@ip-10-0-0-12.eu-central-1.compute.internal\r\n",
            "From: cron+root@example.com\r\n",
        ),
        // encoded-word display name survives (decoded and encoded again)
        (
            "From: =?utf-8?q?J=C3=B6rg?= <joerg@web-1>\r\n",
            "From: =?utf-8?b?SsO2cmc=?= <cron+joerg@example.com>\r\n",
        ),
        // several From addresses: only the internal one changes
        (
            "From: alice@example.org, root@localhost\r\n",
            "From: alice@example.org, cron+root@example.com\r\n",
        ),
        // group syntax
        (
            "To: Team: a@example.org, root;, b@example.net\r\n",
            "To: \"Team\": a@example.org, ops@example.com;, b@example.net\r\n",
        ),
        // folded header
        (
            "From: \"Cron\r\n Daemon\" <root@web-1>\r\n",
            "From: \"Cron Daemon\" <cron+root@example.com>\r\n",
        ),
        // IDN / SMTPUTF8 address
        (
            "Reply-To: jörg@bücher.local\r\n",
            "Reply-To: cron+jörg@example.com\r\n",
        ),
        // display name with quotes and a comma
        (
            "Sender: \"Last, \\\"First\\\"\" <first@web-1>\r\n",
            "Sender: \"Last, \\\"First\\\"\" <cron+first@example.com>\r\n",
        ),
        // public senders and recipients are left alone, byte for byte
        (
            "From: App <app@example.org>\r\n",
            "From: App <app@example.org>\r\n",
        ),
        ("To:   ops@example.org  \r\n", "To:   ops@example.org  \r\n"),
        (
            "Cc: undisclosed-recipients:;\r\n",
            "Cc: undisclosed-recipients:;\r\n",
        ),
        // removed headers
        ("Return-Path: <root@web-1>\r\n", ""),
        (
            "X-Cron-Env: <SHELL=/bin/sh>\r\nX-Cron-Env: <AWS_SECRET=abc>\r\n",
            "",
        ),
        (
            "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n",
            "Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\n",
        ),
    ];
    for (input, expected) in cases {
        assert_eq!(rewritten(input), expected, "{input:?}");
    }
}

#[test]
fn long_recipient_lists_are_folded() {
    let many: Vec<String> = (0..6).map(|n| format!("user{n}@example.org")).collect();
    let header = format!("To: {}, root\r\n", many.join(", "));
    let out = rewritten(&header);
    assert!(out.contains(",\r\n "), "{out}");
    assert!(out.lines().all(|l| l.trim_end().len() <= 78), "{out}");
    assert!(
        out.contains(", ops@example.com") || out.contains(" ops@example.com\r\n"),
        "{out}"
    );
}

#[test]
fn missing_date_and_message_id_are_added_after_the_last_header() {
    let message = b"From: app@example.org\r\nSubject: s\r\n\r\nbody\r\n";
    let edited = rewrite(message, &rules(), &[], &missing());
    assert_eq!(
        String::from_utf8(edited.message).unwrap(),
        "From: app@example.org\r\nSubject: s\r\nDate: Sun, 22 Nov 2026 22:00:00 +0000\r\nMessage-ID: <ID@example.com>\r\n\r\nbody\r\n"
    );
    assert_eq!(
        edited.decisions,
        [
            "header Date added",
            "header Message-ID added (<ID@example.com>)"
        ]
    );
}

#[test]
fn decisions_name_each_change() {
    let message =
        b"From: root (Cron Daemon)\r\nX-Cron-Env: <A=1>\r\nDate: x\r\nMessage-ID: <a@b>\r\n\r\n";
    let edited = rewrite(message, &rules(), &["x-cron-env".to_string()], &missing());
    assert_eq!(
        edited.decisions,
        [
            "header From: root (Cron Daemon) -> \"Cron Daemon\" <cron+root@example.com>",
            "header X-Cron-Env removed"
        ]
    );
}

/// A header line that the rewrite never touches.
fn untouched_header() -> impl Strategy<Value = String> {
    ("X-[A-Za-z]{1,8}", "[ -~]{0,60}").prop_map(|(name, value)| format!("{name}: {value}\r\n"))
}

/// A header the rewrite may change.
fn sender_header() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("From: root (Cron Daemon)\r\n".to_string()),
        Just("To: root\r\n".to_string()),
        Just("Reply-To: app@example.org\r\n".to_string()),
        Just("Return-Path: <x@web-1>\r\n".to_string()),
        Just("X-Cron-Env: <HOME=/root>\r\n".to_string()),
    ]
}

/// Found by the header_rewrite fuzz target: the added headers were glued to a last header
/// line that had no line end ("Subject: xDate: ..."), and such a line was read differently
/// once it had one (so a second repair changed it again).
#[test]
fn headers_are_added_on_their_own_line_after_an_unterminated_last_header() {
    let edited = rewrite(b"Subject: x", &rules(), &[], &missing()).message;
    let text = String::from_utf8(edited).unwrap();
    assert!(text.starts_with("Subject: x\r\nDate: "), "{text:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Messages made of sender headers, other headers, folding, bare line ends and a body:
    /// see `fuzzing::header_rewrite`.
    #[test]
    fn repair_converges(
        pieces in proptest::collection::vec(prop_oneof![
            sender_header(),
            untouched_header(),
            Just("\r\n".to_string()),
            Just("\n".to_string()),
            Just(" folded\r\n".to_string()),
            "[ -~]{0,20}",
        ], 0..10),
    ) {
        crate::fuzzing::header_rewrite(pieces.concat().as_bytes());
    }

    #[test]
    fn nothing_outside_rewritten_headers_changes(
        before in proptest::collection::vec(untouched_header(), 0..4),
        rewritten_header in sender_header(),
        after in proptest::collection::vec(untouched_header(), 0..4),
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        let head: String = before.concat();
        let tail: String = after.concat() + "Date: x\r\nMessage-ID: <a@b>\r\n";
        let mut message = format!("{head}{rewritten_header}{tail}\r\n").into_bytes();
        message.extend_from_slice(&body);
        let edited = rewrite(&message, &rules(), &["X-Cron-Env".to_string()], &missing()).message;
        prop_assert!(edited.starts_with(head.as_bytes()));
        let mut expected_tail = format!("{tail}\r\n").into_bytes();
        expected_tail.extend_from_slice(&body);
        prop_assert!(edited.ends_with(&expected_tail));
    }
}
