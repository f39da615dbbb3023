//! Thin entry point: pick the personality from argv[0] (`sendmail`, `mailq`, `newaliases`, or
//! `smarthost`), then hand over to the CLI.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // One process-wide rustls provider (aws-lc-rs), before anything builds a TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let program = args
        .first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .and_then(|name| name.to_str())
        .unwrap_or("smarthost")
        .to_string();
    match program.as_str() {
        "sendmail" => smarthost::cli::run_as_sendmail(args.split_off(1)),
        "mailq" => smarthost::cli::run_as_mailq(),
        "newaliases" => smarthost::cli::run_as_newaliases(),
        _ => smarthost::cli::run(smarthost::cli::Cli::parse_from(args)),
    }
}
