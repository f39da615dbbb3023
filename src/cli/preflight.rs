//! `smarthost preflight`: the DNS and upstream audit, as a table or JSON; exit 0 when nothing
//! failed, 1 with warnings only, 2 on any failure.

use std::process::ExitCode;

use crate::config::Config;
use crate::preflight::{self, Options};
use crate::sysexits as exit;

pub fn run(config: &Config, options: Options, json: bool) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("preflight: cannot start the runtime: {error}");
            return ExitCode::from(exit::SOFTWARE);
        }
    };
    let report = runtime.block_on(preflight::run(config, &options));
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(error) => {
                eprintln!("preflight: {error}");
                return ExitCode::from(exit::SOFTWARE);
            }
        }
    } else {
        print!("{}", report.render());
    }
    ExitCode::from(report.exit_code())
}
