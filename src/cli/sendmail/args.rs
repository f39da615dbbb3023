//! sendmail's command line, as real callers write it. Options follow getopt rules: flags may
//! be grouped (`-ti`), an option's value may be glued (`-FCronDaemon`, `-B8BITMIME`, `-odi`) or
//! separate (`-F CronDaemon`), `--` ends options, and the first operand ends them too. The
//! operands are recipients, possibly comma-separated.

use std::ffi::OsString;
use std::path::PathBuf;

/// What the invocation asks for (`-b` mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message from standard input and queue it.
    Deliver,
    /// `-bs`: speak SMTP on standard input and output.
    Smtp,
    /// `-bp`: list the queue, as mailq.
    PrintQueue,
    /// `-bi` (and `newaliases`): rebuild the alias database. Aliases live in the config file
    /// (`rewrite.aliases`), so there is nothing to rebuild; package scripts call it anyway.
    InitAliases,
    /// `--help`.
    Help,
}

/// The null sender written on the command line: `-f ''` or `-f '<>'`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SenderArg {
    Null,
    Address(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendmailArgs {
    pub mode: Mode,
    /// `-t`: recipients also come from To/Cc/Bcc, and Bcc is removed.
    pub extract_recipients: bool,
    /// `-i` / `-oi`: a line with a single dot does not end the message.
    pub ignore_dots: bool,
    /// `-f` / `-r`.
    pub sender: Option<SenderArg>,
    /// `-F`: the sender's full name, for a From header we add.
    pub full_name: Option<String>,
    /// `-v`: say what happened.
    pub verbose: bool,
    pub recipients: Vec<String>,
    /// smarthost's own `--spool PATH` / `--config PATH`, accepted before sendmail's options.
    pub spool: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

/// Options taking a value. Everything a caller may pass is listed; values of the ones we do
/// not act on (-B body type, -C, -h hop count, -L, -N, -O, -R, -V, -X) are accepted and ignored.
const WITH_VALUE: &[char] = &[
    'B', 'b', 'C', 'F', 'f', 'h', 'L', 'N', 'O', 'o', 'R', 'r', 'V', 'X',
];
/// Flags without a value; -U, -n, -m, -G are accepted for compatibility and ignored.
const FLAGS: &[char] = &['i', 't', 'v', 'U', 'n', 'm', 'G'];

pub fn parse(args: &[OsString]) -> Result<SendmailArgs, String> {
    let mut parsed = SendmailArgs {
        mode: Mode::Deliver,
        extract_recipients: false,
        ignore_dots: false,
        sender: None,
        full_name: None,
        verbose: false,
        recipients: Vec::new(),
        spool: None,
        config: None,
    };
    let args: Vec<&str> = args
        .iter()
        .map(|a| {
            a.to_str()
                .ok_or_else(|| format!("argument {a:?} is not valid UTF-8"))
        })
        .collect::<Result<_, _>>()?;
    let mut index = 0;
    while index < args.len() {
        let arg = args[index];
        index += 1;
        if arg == "--" {
            break;
        }
        if arg == "--help" {
            parsed.mode = Mode::Help;
            continue;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, value.to_string()),
                None => {
                    let value = args.get(index).ok_or(format!("--{long} needs a value"))?;
                    index += 1;
                    (long, value.to_string())
                }
            };
            match name {
                "spool" => parsed.spool = Some(value.into()),
                "config" => parsed.config = Some(value.into()),
                _ => return Err(format!("unknown option --{name}")),
            }
            continue;
        }
        let Some(group) = arg.strip_prefix('-').filter(|g| !g.is_empty()) else {
            index -= 1;
            break;
        };
        for (at, option) in group.char_indices() {
            if FLAGS.contains(&option) {
                apply_flag(&mut parsed, option);
                continue;
            }
            if !WITH_VALUE.contains(&option) {
                return Err(format!("unknown option -{option}"));
            }
            let glued = &group[at + option.len_utf8()..];
            let value = if !glued.is_empty() {
                glued
            } else {
                let value = args
                    .get(index)
                    .ok_or_else(|| format!("option -{option} needs a value"))?;
                index += 1;
                value
            };
            apply_value(&mut parsed, option, value)?;
            break;
        }
    }
    parsed.recipients = args[index..]
        .iter()
        .flat_map(|operand| operand.split(','))
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(String::from)
        .collect();
    Ok(parsed)
}

fn apply_flag(parsed: &mut SendmailArgs, flag: char) {
    match flag {
        'i' => parsed.ignore_dots = true,
        't' => parsed.extract_recipients = true,
        'v' => parsed.verbose = true,
        _ => {}
    }
}

fn apply_value(parsed: &mut SendmailArgs, option: char, value: &str) -> Result<(), String> {
    match option {
        'b' => {
            parsed.mode = match value {
                "m" => Mode::Deliver,
                "s" => Mode::Smtp,
                "p" => Mode::PrintQueue,
                "i" => Mode::InitAliases,
                other => {
                    return Err(format!(
                        "-b{other} is not supported (use -bm, -bs, -bp or -bi)"
                    ));
                }
            }
        }
        'f' | 'r' => {
            let trimmed = value.trim();
            let inner = trimmed
                .strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(trimmed);
            parsed.sender = Some(if inner.is_empty() {
                SenderArg::Null
            } else {
                SenderArg::Address(inner.to_string())
            });
        }
        'F' => parsed.full_name = Some(value.to_string()),
        // -o takes one option letter plus its value; only -oi changes anything here.
        'o' if value == "i" => parsed.ignore_dots = true,
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<SendmailArgs, String> {
        let args: Vec<OsString> = shell_words(line).into_iter().map(OsString::from).collect();
        parse(&args)
    }

    /// Splits on spaces, with '' for an empty argument: enough for these fixtures.
    fn shell_words(line: &str) -> Vec<String> {
        line.split(' ')
            .filter(|w| !w.is_empty())
            .map(|w| {
                if w == "''" {
                    String::new()
                } else {
                    w.trim_matches('\'').to_string()
                }
            })
            .collect()
    }

    #[test]
    fn every_known_caller_line_parses() {
        // (caller, arguments after "sendmail", -t, -i, sender, full name, recipients)
        type Case<'a> = (
            &'a str,
            &'a str,
            bool,
            bool,
            Option<SenderArg>,
            Option<&'a str>,
            &'a [&'a str],
        );
        let cases: &[Case] = &[
            (
                "cronie",
                "-FCronDaemon -i -odi -oem -oi -t -f root",
                true,
                true,
                Some(SenderArg::Address("root".into())),
                Some("CronDaemon"),
                &[],
            ),
            (
                "Debian cron",
                "-FCronDaemon -i -B8BITMIME -oem root",
                false,
                true,
                None,
                Some("CronDaemon"),
                &["root"],
            ),
            (
                "Vixie cron",
                "-FCronDaemon -odi -oem -or0s -oi -t",
                true,
                true,
                None,
                Some("CronDaemon"),
                &[],
            ),
            ("BusyBox crond", "-ti", true, true, None, None, &[]),
            (
                "systemd-cron",
                "-i -B 8BITMIME root",
                false,
                true,
                None,
                None,
                &["root"],
            ),
            ("at", "-i user", false, true, None, None, &["user"]),
            (
                "GNU mail",
                "-oi -f user@host -t",
                true,
                true,
                Some(SenderArg::Address("user@host".into())),
                None,
                &[],
            ),
            (
                "separate -F",
                "-F CronDaemon root",
                false,
                false,
                None,
                Some("CronDaemon"),
                &["root"],
            ),
        ];
        for (caller, line, t, i, sender, name, recipients) in cases {
            let args = parse_line(line).unwrap_or_else(|e| panic!("{caller}: {e}"));
            assert_eq!(args.mode, Mode::Deliver, "{caller}");
            assert_eq!(args.extract_recipients, *t, "{caller} -t");
            assert_eq!(args.ignore_dots, *i, "{caller} -i");
            assert_eq!(&args.sender, sender, "{caller} sender");
            assert_eq!(args.full_name.as_deref(), *name, "{caller} -F");
            assert_eq!(args.recipients, *recipients, "{caller} recipients");
        }
    }

    #[test]
    fn modes() {
        assert_eq!(parse_line("-bs").unwrap().mode, Mode::Smtp);
        assert_eq!(parse_line("-bp").unwrap().mode, Mode::PrintQueue);
        assert_eq!(parse_line("-b m").unwrap().mode, Mode::Deliver);
        assert!(parse_line("-bd").unwrap_err().contains("-bd"));
    }

    #[test]
    fn null_sender_forms() {
        assert_eq!(
            parse_line("-f '' a@b").unwrap().sender,
            Some(SenderArg::Null)
        );
        assert_eq!(
            parse_line("-f <> a@b").unwrap().sender,
            Some(SenderArg::Null)
        );
        assert_eq!(
            parse_line("-r<> a@b").unwrap().sender,
            Some(SenderArg::Null)
        );
        assert_eq!(
            parse_line("-f <x@y.example> a@b").unwrap().sender,
            Some(SenderArg::Address("x@y.example".into()))
        );
    }

    #[test]
    fn accepted_and_ignored_options() {
        let args = parse_line(
            "-v -U -N never -R hdrs -V envid -C /etc/x -h 5 -L tag -O Opt=1 -oA/x -n a@b",
        )
        .unwrap();
        assert!(args.verbose);
        assert_eq!(args.recipients, ["a@b"]);
    }

    #[test]
    fn recipients_split_on_commas_and_double_dash_ends_options() {
        let args = parse_line("-i a@b,c@d e@f").unwrap();
        assert_eq!(args.recipients, ["a@b", "c@d", "e@f"]);
        let args = parse_line("-i -- -weird@b").unwrap();
        assert_eq!(args.recipients, ["-weird@b"]);
    }

    #[test]
    fn smarthost_options_come_first() {
        let args = parse_line("--spool /tmp/s.db --config=/tmp/c.toml -t").unwrap();
        assert_eq!(args.spool, Some(PathBuf::from("/tmp/s.db")));
        assert_eq!(args.config, Some(PathBuf::from("/tmp/c.toml")));
        assert!(args.extract_recipients);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        assert!(parse_line("-x a@b").unwrap_err().contains("-x"));
        assert!(parse_line("-f").unwrap_err().contains("-f"));
        assert!(
            parse_line("--frobnicate 1")
                .unwrap_err()
                .contains("--frobnicate")
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::strategy::Strategy;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

        /// Any argv a caller could build from sendmail's options, values and junk: see
        /// `fuzzing::sendmail_args`.
        #[test]
        fn any_argv_parses_or_says_why(
            args in proptest::collection::vec(proptest::prop_oneof![
                proptest::sample::select(vec![
                    "-i", "-t", "-oi", "-oem", "-f", "-F", "-r", "-bs", "-bp", "-bi", "-bm", "-bv",
                    "-B8BITMIME", "-FCron Daemon", "-fapp@example.com", "--", "-", "-v", "-odi",
                    "--spool", "--config", "root", "ops@example.com", "-O", "DeliveryMode=b", "-x",
                    "-b", "-q", "-qf", "-X", "",
                ]).prop_map(String::from),
                "[-a-zA-Z0-9@.=]{0,12}",
            ], 0..8),
        ) {
            crate::fuzzing::sendmail_args(args.join("\0").as_bytes());
        }
    }
}
