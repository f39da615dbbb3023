//! Commands an operator runs: check-config, serve's refusal to half-start, mailq.

use crate::support::*;

fn smarthost(work: &Workdir, args: &[&str]) -> std::process::Output {
    work.run(std::path::Path::new(BIN), args, b"")
}

#[test]
fn check_config_accepts_the_example_and_names_bad_keys() {
    let work = Workdir::new("");
    let example = format!("{}/config/smarthost.toml", env!("CARGO_MANIFEST_DIR"));
    let output = smarthost(&work, &["--config", &example, "check-config"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("127.0.0.1:2525"));

    for (text, key) in [
        (
            "[smtp]\ntrusted_networks = [\"10.0.0.0/99\"]",
            "smtp.trusted_networks[0]",
        ),
        ("[smtp]\nlisten = \"nowhere\"", "smtp.listen"),
        ("[smtp]\nrelay_everyone = true", "relay_everyone"),
    ] {
        let bad = Workdir::new(text);
        let output = smarthost(&bad, &["check-config"]);
        assert_eq!(output.status.code(), Some(78), "{text}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(key), "{text}: {stderr}");
        // serve refuses the same file before listening.
        let error = Relay::try_start(&bad)
            .err()
            .expect("serve must refuse a bad config");
        assert!(error.contains(key) || error.contains("78"), "{error}");
    }
}

#[test]
fn serve_refuses_to_start_on_an_unopenable_spool() {
    let work = Workdir::new("");
    std::fs::write(
        work.spool(),
        b"this is not a database, it is a text file of sufficient length to be read",
    )
    .unwrap();
    let error = Relay::try_start(&work).err().expect("must not start");
    assert!(error.contains("spool"), "{error}");
}

#[test]
fn mailq_link_and_bp_list_the_queue_in_postfix_layout() {
    let work = Workdir::new("");
    let sendmail = work.link("sendmail");
    let mailq = work.link("mailq");
    let empty = work.run(&mailq, &[], b"");
    assert_eq!(
        empty.status.code(),
        Some(66),
        "missing spool is an error, not an empty queue"
    );
    assert!(!work.spool().exists(), "mailq must not create a spool");

    let output = work.run(
        &sendmail,
        &[
            "-i",
            "-f",
            "cron@example.com",
            "ops@example.com",
            "dev@example.com",
        ],
        b"Subject: q\n\nx\n",
    );
    assert!(output.status.success());
    let listed = work.run(&mailq, &[], b"");
    assert!(listed.status.success());
    let text = String::from_utf8(listed.stdout.clone()).unwrap();
    let id = &spooled(&work.spool())[0].id;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("-Queue ID-"), "{text}");
    assert!(
        lines[1].starts_with(id.as_str()) && lines[1].ends_with("cron@example.com"),
        "{text}"
    );
    assert_eq!(lines[2].trim(), "ops@example.com");
    assert_eq!(lines[3].trim(), "dev@example.com");
    assert_eq!(*lines.last().unwrap(), "-- 1 Kbytes in 1 Request.");

    let bp = work.run(&sendmail, &["-bp"], b"");
    assert_eq!(
        bp.stdout, listed.stdout,
        "sendmail -bp prints what mailq prints"
    );
}
