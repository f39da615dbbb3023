//! `smarthost user add|remove|list`: the SMTP AUTH users file (`smtp.auth.users_file`).
//! Passwords come from standard input or a prompt that does not echo, never from argv (where
//! `ps` and shell history would keep them), and are stored as argon2id hashes only.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::auth::{SenderPattern, UserEntry, UsersFile, hash_password};
use crate::config::Config;
use crate::sysexits as exit;

/// Shorter passwords are refused: they fall to guessing even at argon2's cost.
const MIN_PASSWORD_CHARS: usize = 12;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a user, or set a user's password and senders anew. The password is read from
    /// standard input (one line), or asked for twice on a terminal.
    Add {
        name: String,
        /// An envelope/header sender the user may use: an address, or @DOMAIN for every
        /// address at that domain (repeatable; at least one).
        #[arg(long = "allow-sender", value_name = "ADDR|@DOMAIN", required = true)]
        allow_senders: Vec<String>,
    },
    /// Remove a user.
    Remove { name: String },
    /// List the users and their senders (never their hashes).
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(config: &Config, users_file: Option<PathBuf>, command: UserCommand) -> ExitCode {
    let Some(path) = users_file.or_else(|| config.smtp.auth.as_ref().map(|a| a.users_file.clone()))
    else {
        eprintln!(
            "smarthost: no users file: set [smtp.auth] users_file in the configuration, or pass --users-file PATH"
        );
        return ExitCode::from(exit::CONFIG);
    };
    let outcome = match command {
        UserCommand::Add {
            name,
            allow_senders,
        } => add(&path, &name, &allow_senders),
        UserCommand::Remove { name } => remove(&path, &name),
        UserCommand::List { json } => list(&path, json),
    };
    match outcome {
        Ok(()) => ExitCode::from(exit::OK),
        Err((code, message)) => {
            eprintln!("smarthost: {message}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn add(path: &Path, name: &str, allow_senders: &[String]) -> Result<(), Failure> {
    if name.is_empty() || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err((
            exit::USAGE,
            format!("'{name}' is not a user name (no spaces)"),
        ));
    }
    let allow_senders = allow_senders
        .iter()
        .map(|text| SenderPattern::try_from(text.clone()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| (exit::USAGE, format!("--allow-sender {message}")))?;
    let mut file = UsersFile::read(path).map_err(|m| (exit::DATAERR, m))?;
    let password = read_password(name)?;
    let hash = hash_password(password.as_bytes()).map_err(|m| (exit::SOFTWARE, m))?;
    let entry = UserEntry {
        name: name.to_string(),
        password: hash,
        allow_senders,
    };
    let verb = match file.users.iter_mut().find(|u| u.name == name) {
        Some(existing) => {
            *existing = entry;
            "updated"
        }
        None => {
            file.users.push(entry);
            "added"
        }
    };
    file.write(path).map_err(|m| (exit::CANTCREAT, m))?;
    println!(
        "{verb} user {name} in {}; reload the daemon (SIGHUP) to use it",
        path.display()
    );
    Ok(())
}

fn remove(path: &Path, name: &str) -> Result<(), Failure> {
    let mut file = UsersFile::read(path).map_err(|m| (exit::DATAERR, m))?;
    let before = file.users.len();
    file.users.retain(|u| u.name != name);
    if file.users.len() == before {
        return Err((
            exit::NOUSER,
            format!("no user {name} in {}", path.display()),
        ));
    }
    file.write(path).map_err(|m| (exit::CANTCREAT, m))?;
    println!(
        "removed user {name} from {}; reload the daemon (SIGHUP) to refuse it",
        path.display()
    );
    Ok(())
}

fn list(path: &Path, json: bool) -> Result<(), Failure> {
    let file = UsersFile::read(path).map_err(|m| (exit::DATAERR, m))?;
    if json {
        let users: Vec<serde_json::Value> = file
            .users
            .iter()
            .map(|u| serde_json::json!({ "name": u.name, "allow_senders": u.allow_senders }))
            .collect();
        println!("{}", serde_json::Value::Array(users));
        return Ok(());
    }
    if file.users.is_empty() {
        println!("no users in {}", path.display());
    }
    for user in &file.users {
        let senders: Vec<String> = user
            .allow_senders
            .iter()
            .map(|s| String::from(s.clone()))
            .collect();
        println!("{}\t{}", user.name, senders.join(", "));
    }
    Ok(())
}

/// One line from standard input, or, on a terminal, asked twice without echo.
fn read_password(name: &str) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        let first = prompt(&format!("Password for {name}: "))?;
        let again = prompt("Again: ")?;
        if first != again {
            return Err((
                exit::DATAERR,
                "the passwords differ; nothing changed".into(),
            ));
        }
        first
    } else {
        read_line(&mut stdin.lock())
            .map_err(|e| (exit::DATAERR, format!("cannot read the password: {e}")))?
    };
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err((
            exit::DATAERR,
            format!(
                "the password must have at least {MIN_PASSWORD_CHARS} characters; nothing changed"
            ),
        ));
    }
    Ok(password)
}

/// Reads a line with the terminal's echo off, and restores the terminal whatever happens.
fn prompt(text: &str) -> Result<String, Failure> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    let saved = tcgetattr(&stdin).map_err(|e| (exit::SOFTWARE, format!("terminal: {e}")))?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(&stdin, SetArg::TCSANOW, &quiet)
        .map_err(|e| (exit::SOFTWARE, format!("terminal: {e}")))?;
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let read = read_line(&mut stdin.lock());
    let _ = tcsetattr(&stdin, SetArg::TCSANOW, &saved);
    eprintln!();
    read.map_err(|e| (exit::DATAERR, format!("cannot read the password: {e}")))
}

/// One line, without its line end.
fn read_line(reader: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let content = line.trim_end_matches(['\r', '\n']).len();
    line.truncate(content);
    Ok(line)
}
