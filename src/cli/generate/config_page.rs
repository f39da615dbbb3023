//! smarthost.toml(5), rendered from the annotated example configuration (config/smarthost.toml,
//! compiled in): every key, its default or an example, and the comment that explains it. The
//! example is the one place the keys are documented, so the page cannot drift from it.

use std::fmt::Write;

const EXAMPLE: &str = include_str!("../../../config/smarthost.toml");

/// One line of the example, read for the page.
#[derive(Debug, PartialEq, Eq)]
enum Line<'a> {
    /// `[smtp]`, `[[upstream]]`, or the same commented out.
    Table(&'a str),
    /// `key = value`: set, so the value is the default; or commented out: an example.
    Key {
        key: &'a str,
        value: &'a str,
        default: bool,
        note: Option<&'a str>,
    },
    Prose(&'a str),
    Blank,
}

fn classify(line: &str) -> Line<'_> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed == "#" {
        return Line::Blank;
    }
    let (commented, body) = match trimmed.strip_prefix('#') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, trimmed),
    };
    // `# # key = value`: an alternative key, commented twice.
    let body = body.strip_prefix("# ").unwrap_or(body);
    if body.starts_with('[') && body.ends_with(']') && !body.contains(' ') {
        return Line::Table(body);
    }
    if let Some((key, rest)) = body.split_once(" = ")
        && is_key(key)
    {
        let (value, note) = match rest.split_once(" # ") {
            Some((value, note)) => (value.trim(), Some(note.trim())),
            None => (rest.trim(), None),
        };
        return Line::Key {
            key,
            value,
            default: !commented,
            note,
        };
    }
    Line::Prose(body)
}

/// `name` or `"quoted name"` (the rewrite tables' keys are addresses).
fn is_key(text: &str) -> bool {
    let bare = |t: &str| {
        t.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && t.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    bare(text) || (text.len() > 2 && text.starts_with('"') && text.ends_with('"'))
}

/// Text safe as roff input: backslashes escaped, no line starting with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

pub fn render(version: &str) -> String {
    let mut page = String::new();
    let _ = writeln!(
        page,
        ".TH SMARTHOST.TOML 5 \"\" \"smarthost {version}\" \"File Formats Manual\"\n.SH NAME\nsmarthost.toml \\- configuration of smarthost(8)\n.SH SYNOPSIS\n.I /etc/smarthost/smarthost.toml\n.SH DESCRIPTION"
    );
    // A key's comment comes before it; what follows a key up to a blank line is more of it.
    let mut prose: Vec<&str> = Vec::new();
    let flush = |page: &mut String, prose: &mut Vec<&str>| {
        for line in prose.drain(..) {
            let _ = writeln!(page, "{}", roff(line));
        }
    };
    let mut top_level_started = false;
    for line in EXAMPLE.lines() {
        match classify(line) {
            Line::Blank => {
                flush(&mut page, &mut prose);
                page.push_str(".PP\n");
            }
            Line::Prose(text) => prose.push(text),
            Line::Table(table) => {
                flush(&mut page, &mut prose);
                top_level_started = true;
                let _ = writeln!(page, ".SH \"{}\"", roff(table));
            }
            Line::Key {
                key,
                value,
                default,
                note,
            } => {
                if !top_level_started {
                    top_level_started = true;
                    page.push_str(".SH \"TOP-LEVEL KEYS\"\n");
                }
                let what = if default { "default" } else { "example" };
                let _ = writeln!(page, ".TP\n.B {}\n({what}: {})", roff(key), roff(value));
                if let Some(note) = note {
                    let _ = writeln!(page, "{}", roff(note));
                }
                flush(&mut page, &mut prose);
            }
        }
    }
    flush(&mut page, &mut prose);
    page.push_str(".SH FILES\n.TP\n.I /etc/smarthost/smarthost.toml\nThe file read by every command, unless \\-\\-config or SMARTHOST_CONFIG names another.\n.SH SEE ALSO\n.BR smarthost (8),\n.BR sendmail (8)\n");
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_the_example_are_read_as_what_they_are() {
        assert_eq!(classify("[smtp]"), Line::Table("[smtp]"));
        assert_eq!(classify("# [[upstream]]"), Line::Table("[[upstream]]"));
        assert_eq!(
            classify("listen = \"127.0.0.1:2525\""),
            Line::Key {
                key: "listen",
                value: "\"127.0.0.1:2525\"",
                default: true,
                note: None
            }
        );
        assert_eq!(
            classify("# tls = \"starttls\"            # starttls (587), implicit (465)"),
            Line::Key {
                key: "tls",
                value: "\"starttls\"",
                default: false,
                note: Some("starttls (587), implicit (465)")
            }
        );
        assert!(matches!(
            classify("# # password_file = \"/etc/smarthost/ses-password\""),
            Line::Key {
                key: "password_file",
                default: false,
                ..
            }
        ));
        assert_eq!(classify("#"), Line::Blank);
        assert!(matches!(
            classify("# Our own name: used in"),
            Line::Prose(_)
        ));
    }

    #[test]
    fn every_key_of_the_example_is_on_the_page() {
        let page = render("0.0.0");
        for key in [
            "listen",
            "trusted_networks",
            "max_message_size",
            "busy_timeout",
            "interval",
            "enforce",
            "lease",
            "password_file",
            "aws_secret_key_file",
            "spf_include",
            "admin_address",
        ] {
            assert!(page.contains(&format!(".B {key}\n")), "{key} missing");
        }
        assert!(page.contains(".SH \"[delivery]\""));
        assert!(
            !page
                .lines()
                .any(|l| l.starts_with('.') && l.starts_with(".."))
        );
    }
}
