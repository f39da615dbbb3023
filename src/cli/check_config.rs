//! `smarthost check-config`: validate without starting anything.

use std::path::PathBuf;
use std::process::ExitCode;

use super::exit;

pub fn run(path: Option<PathBuf>, spool: Option<PathBuf>) -> ExitCode {
    match super::load_config(path, spool) {
        Ok(config) => {
            let networks: Vec<String> = config
                .smtp
                .trusted_networks
                .networks()
                .iter()
                .map(|n| n.to_string())
                .collect();
            println!("configuration OK");
            println!("  hostname:         {}", config.hostname);
            println!("  listen:           {}", config.smtp.listen);
            println!("  trusted networks: {}", networks.join(", "));
            println!("  spool:            {}", config.spool.path.display());
            ExitCode::from(exit::OK)
        }
        Err(error) => {
            eprintln!("smarthost: {error}");
            ExitCode::from(exit::CONFIG)
        }
    }
}
