//! A private PostgreSQL server for one test: Debian's binaries, `initdb` into a temporary
//! directory (as the `postgres` user when the tests run as root: initdb refuses root), started
//! with `pg_ctl` listening only on a Unix socket in that directory (no TCP at all), and
//! stopped by the PID in its `postmaster.pid` when the test ends. Never the system's instance.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User};
use tempfile::TempDir;

use crate::support::wait_output;
use crate::upstream::unused_port;

const START_LIMIT: Duration = Duration::from_secs(30);

pub struct Postgres {
    dir: TempDir,
    /// Only names the socket file (`.s.PGSQL.<port>`); nothing listens on TCP.
    port: u16,
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let pg = Postgres {
            dir,
            port: unused_port(),
        };
        if let Some(owner) = pg.server_user() {
            nix::unistd::chown(pg.dir.path(), Some(owner.uid), Some(owner.gid)).expect("chown");
        }
        let data = pg.data();
        pg.as_server_user(
            &bin("initdb"),
            &[
                "--no-sync",
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "--no-instructions",
                "-D",
                data.to_str().unwrap(),
            ],
        );
        pg.start_server();
        pg.psql_as("postgres", "CREATE DATABASE smarthost");
        pg
    }

    /// The URL a relay's `spool.url` takes: the database over the Unix socket directory.
    pub fn url(&self) -> String {
        format!(
            "postgresql://postgres@{}:{}/smarthost",
            percent_encoded(self.dir.path()),
            self.port
        )
    }

    /// Runs SQL in the spool database; returns psql's unaligned, tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_as("smarthost", sql)
    }

    /// Stops the server (fast shutdown: sessions are cut, as when the database host goes
    /// away), and waits until it is gone.
    pub fn stop(&self) {
        let Some(pid) = self.postmaster_pid() else {
            return;
        };
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + START_LIMIT;
        while kill(pid, None).is_ok() {
            assert!(Instant::now() < deadline, "PostgreSQL did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data.
    pub fn start_server(&self) {
        let data = self.data();
        let options = format!(
            "-c listen_addresses='' -k {} -p {} -c fsync=on -c max_connections=100",
            self.dir.path().display(),
            self.port
        );
        let log = self.dir.path().join("server.log");
        self.as_server_user(
            &bin("pg_ctl"),
            &[
                "start",
                "-w",
                "-t",
                "30",
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &options,
            ],
        );
    }

    fn psql_as(&self, database: &str, sql: &str) -> String {
        let child = Command::new(bin("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", self.dir.path().to_str().unwrap()])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                database,
            ])
            .args(["-c", sql])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("psql");
        let output = wait_output(child, START_LIMIT);
        assert!(
            output.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn postmaster_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.data().join("postmaster.pid")).ok()?;
        let pid: i32 = text.lines().next()?.trim().parse().ok()?;
        Some(Pid::from_raw(pid))
    }

    /// The user the server runs as: `postgres` when we are root.
    fn server_user(&self) -> Option<User> {
        if !Uid::effective().is_root() {
            return None;
        }
        Some(
            User::from_name("postgres")
                .ok()
                .flatten()
                .expect("a postgres user (Debian's postgresql package)"),
        )
    }

    fn as_server_user(&self, program: &Path, args: &[&str]) -> Output {
        let mut command = match self.server_user() {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.args(["-u", &user.name, "--"]).arg(program);
                command
            }
            None => Command::new(program),
        };
        let child = command
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let output = wait_output(child, START_LIMIT);
        assert!(
            output.status.success(),
            "{} {args:?}: {}{}",
            program.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(pid) = self.postmaster_pid() {
            // Immediate shutdown: nothing is left to keep.
            let _ = kill(pid, Signal::SIGQUIT);
            let deadline = Instant::now() + Duration::from_secs(10);
            while kill(pid, None).is_ok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A PostgreSQL program from Debian's newest installed server version.
fn bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("/usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql")
        .join(name)
}

/// A directory as the host part of a URL (`/tmp/x` as `%2Ftmp%2Fx`).
fn percent_encoded(path: &Path) -> String {
    path.to_str().unwrap().replace('/', "%2F")
}
