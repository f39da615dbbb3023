//! `smarthost check-config`: validate without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::sysexits as exit;

pub fn run(path: Option<PathBuf>, spool: Option<PathBuf>) -> ExitCode {
    match super::load_config(path, spool) {
        Ok(config) => {
            let networks = config.smtp.trusted_networks.to_strings();
            println!("configuration OK");
            println!("  hostname:         {}", config.hostname);
            println!("  listen:           {}", config.smtp.listen);
            println!("  trusted networks: {}", networks.join(", "));
            println!("  spool:            {}", config.spool.path.display());
            for upstream in &config.delivery.upstreams {
                let auth = match &upstream.credentials {
                    Some(credentials) => format!("AUTH as {}", credentials.username),
                    None => "no AUTH".into(),
                };
                println!(
                    "  upstream:         {} ({:?}, {auth})",
                    upstream.name(),
                    upstream.tls
                );
            }
            if config.delivery.upstreams.is_empty() {
                println!("  upstream:         none: mail is queued, not delivered");
            }
            for warning in &config.warnings {
                println!("  warning:          {warning}");
            }
            ExitCode::from(exit::OK)
        }
        Err(error) => {
            eprintln!("smarthost: {error}");
            ExitCode::from(exit::CONFIG)
        }
    }
}
