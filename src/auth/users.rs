//! The users file (`smtp.auth.users_file`): who may authenticate, their argon2id password
//! hashes (PHC strings, never the passwords), and the senders each may use. Written only by
//! `smarthost user …`, atomically and with mode 0600; read by `serve` at start and on SIGHUP.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use serde::{Deserialize, Serialize};

use super::senders::SenderPattern;

/// The file as written: `[[user]]` tables.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default, rename = "user")]
    pub users: Vec<UserEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    /// `$argon2id$v=19$m=…,t=…,p=…$salt$hash`.
    pub password: String,
    pub allow_senders: Vec<SenderPattern>,
}

/// An authenticated submitter: its name and the senders it may use.
#[derive(Debug)]
pub struct User {
    pub name: String,
    pub allow_senders: Vec<SenderPattern>,
}

impl User {
    /// The (repaired) sender may be used by this user. The null sender is always allowed:
    /// an application relaying a bounce has no other.
    pub fn may_send_as(&self, sender: &str) -> bool {
        sender.is_empty() || self.allow_senders.iter().any(|p| p.allows(sender))
    }
}

/// The users, ready to check passwords against.
pub struct Users {
    by_name: HashMap<String, (Arc<User>, String)>,
    /// Checked instead when the name is unknown, so that an unknown user costs the same time
    /// as a wrong password and names cannot be probed by timing.
    decoy: String,
}

impl UsersFile {
    /// Reads the file; a missing file is an empty list (the first `user add` creates it).
    pub fn read(path: &Path) -> Result<UsersFile, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(UsersFile::default()),
            Err(e) => return Err(format!("cannot read users file {}: {e}", path.display())),
        };
        let file: UsersFile = toml::from_str(&text)
            .map_err(|e| format!("users file {}: {}", path.display(), e.message()))?;
        for entry in &file.users {
            PasswordHash::new(&entry.password).map_err(|e| {
                format!(
                    "users file {}: user {}: password is not a PHC hash string ({e}); set it again with `smarthost user add {}`",
                    path.display(),
                    entry.name,
                    entry.name
                )
            })?;
        }
        Ok(file)
    }

    /// Writes the file whole under a temporary name (mode 0600) and renames it into place:
    /// a reader sees the old file or the new one, never half of one.
    pub fn write(&self, path: &Path) -> Result<(), String> {
        let text = format!(
            "# smarthost users: written by `smarthost user add` and `user remove`. Passwords are\n# argon2id hashes; the passwords themselves are stored nowhere.\n\n{}",
            toml::to_string(self).map_err(|e| e.to_string())?
        );
        crate::atomic_file::write(path, |mut file| {
            use std::io::Write;
            file.write_all(text.as_bytes())
        })
        .map_err(|e| format!("cannot write users file {}: {e}", path.display()))
    }
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, String> {
        Users::new(UsersFile::read(path)?)
    }

    pub fn new(file: UsersFile) -> Result<Users, String> {
        let by_name = file
            .users
            .into_iter()
            .map(|entry| {
                let user = Arc::new(User {
                    name: entry.name.clone(),
                    allow_senders: entry.allow_senders,
                });
                (entry.name, (user, entry.password))
            })
            .collect();
        Ok(Users {
            by_name,
            decoy: hash_password(&random_password())?,
        })
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// The user, when the password is theirs. Slow on purpose (argon2id): call it off the
    /// async threads.
    pub fn verify(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        let (user, hash) = match self.by_name.get(name) {
            Some((user, hash)) => (Some(user), hash.as_str()),
            None => (None, self.decoy.as_str()),
        };
        let parsed = PasswordHash::new(hash).ok()?;
        let matches = Argon2::default().verify_password(password, &parsed).is_ok();
        user.filter(|_| matches).cloned()
    }
}

/// A new PHC string for `password`: argon2id with the crate's default cost (19 MiB, two
/// passes: OWASP's minimum), and a fresh random salt.
pub fn hash_password(password: &[u8]) -> Result<String, String> {
    Argon2::default()
        .hash_password(password)
        .map(|hash| hash.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

fn random_password() -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_password_verifies_and_nothing_else_does() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let file = UsersFile {
            users: vec![UserEntry {
                name: "app1".into(),
                password: hash_password(b"correct horse").unwrap(),
                allow_senders: vec![SenderPattern::Domain("example.com".into())],
            }],
        };
        file.write(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("$argon2id$") && !text.contains("correct horse"));

        let users = Users::load(&path).unwrap();
        let user = users.verify("app1", b"correct horse").expect("verified");
        assert!(user.may_send_as("app@example.com"));
        assert!(!user.may_send_as("app@example.org"));
        assert!(users.verify("app1", b"wrong").is_none());
        assert!(users.verify("nobody", b"correct horse").is_none());
    }

    /// An unknown name costs the same argon2id check as a wrong password, so names cannot be
    /// told apart by timing: medians of 5 within a factor of 2 (a skipped check would be
    /// thousands of times faster).
    #[test]
    fn an_unknown_user_takes_as_long_as_a_wrong_password() {
        let users = Users::new(UsersFile {
            users: vec![UserEntry {
                name: "app1".into(),
                password: hash_password(b"correct horse").unwrap(),
                allow_senders: vec![SenderPattern::Domain("example.com".into())],
            }],
        })
        .unwrap();
        let median = |name: &str| {
            let mut times: Vec<std::time::Duration> = (0..5)
                .map(|_| {
                    let started = std::time::Instant::now();
                    assert!(users.verify(name, b"wrong").is_none());
                    started.elapsed()
                })
                .collect();
            times.sort();
            times[2]
        };
        let (known, unknown) = (median("app1"), median("nobody"));
        let ratio = unknown.as_secs_f64() / known.as_secs_f64();
        assert!(
            (0.5..2.0).contains(&ratio),
            "wrong password {known:?}, unknown user {unknown:?}"
        );
    }

    #[test]
    fn a_hand_edited_plain_password_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[user]]\nname = \"app1\"\npassword = \"secret\"\nallow_senders = [\"@example.com\"]\n",
        )
        .unwrap();
        let error = Users::load(&path).err().unwrap();
        assert!(error.contains("smarthost user add app1"), "{error}");
        assert!(!error.contains("secret"), "{error}");
    }
}
