//! `smarthost ses-password --region R`: Amazon SES's SMTP password for an IAM secret access
//! key read from standard input (never from argv, where `ps` would show it).

use std::io::Read;
use std::process::ExitCode;

use crate::config::{is_region, ses_smtp_password};
use crate::sysexits as exit;

pub fn run(region: &str) -> ExitCode {
    if !is_region(region) {
        eprintln!("smarthost: '{region}' is not an AWS region such as eu-west-1");
        return ExitCode::from(exit::USAGE);
    }
    let mut input = String::new();
    if let Err(error) = std::io::stdin().take(4096).read_to_string(&mut input) {
        eprintln!("smarthost: cannot read the secret access key from standard input: {error}");
        return ExitCode::from(exit::DATAERR);
    }
    let secret = input.trim();
    if secret.is_empty() || secret.contains(char::is_whitespace) {
        eprintln!(
            "smarthost: give the IAM secret access key (one line) on standard input, e.g. ses-password --region {region} < secret"
        );
        return ExitCode::from(exit::DATAERR);
    }
    println!("{}", ses_smtp_password(secret, region));
    ExitCode::from(exit::OK)
}
