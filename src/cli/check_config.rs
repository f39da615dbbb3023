//! `smarthost check-config`: validate without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::Transport;
use crate::sysexits as exit;

pub fn run(path: Option<PathBuf>, spool: Option<PathBuf>) -> ExitCode {
    match super::load_config(path, spool) {
        Ok(config) => {
            let networks = config.smtp.trusted_networks.to_strings();
            println!("configuration OK");
            println!("  hostname:         {}", config.hostname);
            println!("  listen:           {}", config.smtp.listen);
            println!("  trusted networks: {}", networks.join(", "));
            match &config.spool.url {
                Some(url) => {
                    println!(
                        "  spool:            {} (shared)",
                        crate::spool::redacted_url(url)
                    );
                    println!("  maildrop:         {}", config.spool.path.display());
                }
                None => println!("  spool:            {}", config.spool.path.display()),
            }
            for upstream in &config.delivery.upstreams {
                let how = match &upstream.transport {
                    Transport::Smtp(server) => {
                        let auth = match &server.credentials {
                            Some(credentials) => format!("AUTH as {}", credentials.username),
                            None => "no AUTH".into(),
                        };
                        format!("{:?}, {auth}", server.tls)
                    }
                    Transport::SesApi(_) => "HTTPS, credentials from the AWS chain".into(),
                };
                println!("  upstream:         {} ({how})", upstream.name());
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
