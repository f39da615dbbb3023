//! Thin entry point: pick the personality from argv[0] (`sendmail`, `mailq`, `newaliases`, or
//! `smarthost`), then hand over to the CLI.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;
use smarthost::cli::{Cli, Personality};

fn main() -> ExitCode {
    // One process-wide rustls provider (aws-lc-rs), before anything builds a TLS config.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut args: Vec<OsString> = std::env::args_os().collect();
    match Personality::of(args.first()) {
        Some(personality) => personality.run(args.split_off(1)),
        None => smarthost::cli::run(Cli::parse_from(args)),
    }
}
