//! `smarthost generate`: the files a package installs beside the binary, made from the program
//! itself so they cannot fall behind it — man pages from the clap definitions (smarthost(8)
//! and one page per subcommand, as git does), smarthost.toml(5) from the annotated example, and
//! completion scripts for bash, zsh and fish.

mod config_page;

use std::path::Path;

use clap::{Command, CommandFactory, ValueEnum};
use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Artifact {
    /// smarthost.8, smarthost-SUBCOMMAND.8 and smarthost.toml.5.
    Man,
    /// smarthost.bash, _smarthost (zsh) and smarthost.fish.
    Completions,
}

/// Writes `artifact` into `dir` (created when missing); the files written, for the log.
pub fn run(artifact: Artifact, dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut command = Cli::command();
    command.build();
    match artifact {
        Artifact::Man => {
            let mut written = Vec::new();
            man_pages(&command, dir, &mut written)?;
            let page = config_page::render(env!("CARGO_PKG_VERSION"));
            std::fs::write(dir.join("smarthost.toml.5"), page)?;
            written.push("smarthost.toml.5".into());
            Ok(written)
        }
        Artifact::Completions => {
            let mut written = Vec::new();
            for (shell, name) in [
                (Shell::Bash, "smarthost.bash"),
                (Shell::Zsh, "_smarthost"),
                (Shell::Fish, "smarthost.fish"),
            ] {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut command.clone(), "smarthost", &mut script);
                std::fs::write(dir.join(name), script)?;
                written.push(name.to_string());
            }
            Ok(written)
        }
    }
}

/// This command's page and its visible subcommands' pages, all in section 8 (administration).
fn man_pages(command: &Command, dir: &Path, written: &mut Vec<String>) -> std::io::Result<()> {
    // clap's own `help` subcommands would only repeat the pages.
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        man_pages(sub, dir, written)?;
    }
    let man = clap_mangen::Man::new(command.clone())
        .section("8")
        .manual("System Manager's Manual")
        .source(format!("smarthost {}", env!("CARGO_PKG_VERSION")));
    written.push(man.get_filename());
    man.generate_to(dir).map(|_| ())
}
