//! The package's `sendmail`, `mailq` and `newaliases`: the same code as those personalities
//! of `smarthost`, in a binary without the daemon. Cron starts `sendmail` once per mail, and
//! most of a start is the loader mapping and relocating the binary: without the relay, the
//! SES SDK and TLS it has half the code and a third of the relocations, and a hand-off
//! returns about 1.5 ms sooner (measured in README "Performance").
//!
//! Called by any other name it is `sendmail`.

use std::ffi::OsString;
use std::process::ExitCode;

use smarthost::cli::Personality;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let personality = Personality::of(args.first()).unwrap_or(Personality::Sendmail);
    personality.run(args.split_off(1))
}
