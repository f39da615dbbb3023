//! A submission: a message as an entry point hands it in, before identity repair and policy.
//! Every entry point builds one (the SMTP session, `sendmail`, `sendmail -bs`, and the
//! daemon's side of the local hand-off) and gives it to `Intake::accept`.

use std::net::IpAddr;
use std::sync::Arc;

use crate::auth::User;
use crate::model::{Address, BodyType, ReversePath, TlsSession};

#[derive(Debug, Clone)]
pub struct Submission {
    /// The reverse path as given (MAIL FROM, `-f`, or the caller's default).
    pub sender: ReversePath,
    /// The recipients as given, possibly unqualified (`root`).
    pub recipients: Vec<Address>,
    /// The client's bytes: CRLF lines, unstuffed, without our Received header.
    pub message: Vec<u8>,
    pub client: Client,
    /// What the client declared (MAIL ... BODY=8BITMIME); 8-bit content is detected anyway.
    pub body_type: BodyType,
    pub smtputf8: bool,
}

/// Who handed the message in.
#[derive(Debug, Clone)]
pub enum Client {
    /// An SMTP client: its address, what it called itself, whether it spoke ESMTP, the TLS
    /// session it spoke through, and the user it authenticated as.
    Smtp {
        ip: IpAddr,
        helo: Option<String>,
        esmtp: bool,
        tls: Option<TlsSession>,
        user: Option<Arc<User>>,
    },
    /// A local user: `sendmail`, `sendmail -bs`, or the daemon's end of the hand-off, which
    /// learns the user from the kernel (the socket's peer credentials), never from the client.
    Local(LocalUser),
}

impl Client {
    /// The address relay access is decided from; None for local submission.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Client::Smtp { ip, .. } => Some(*ip),
            Client::Local(_) => None,
        }
    }

    /// The SMTP AUTH user, if the client authenticated.
    pub fn user(&self) -> Option<&Arc<User>> {
        match self {
            Client::Smtp { user, .. } => user.as_ref(),
            Client::Local(_) => None,
        }
    }
}

/// A local user, as the password database names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalUser {
    pub name: String,
    pub uid: u32,
    /// For a From header we add: `sendmail -F`, else the password database's full name.
    pub full_name: Option<String>,
}

impl LocalUser {
    /// The user running this process.
    pub fn current() -> LocalUser {
        LocalUser::from_uid(nix::unistd::getuid().as_raw())
    }

    /// Looks `uid` up in the password database; a uid without an entry is named by number.
    pub fn from_uid(uid: u32) -> LocalUser {
        let entry = nix::unistd::User::from_uid(uid.into()).ok().flatten();
        let full_name = entry.as_ref().and_then(|user| gecos_name(&user.gecos));
        LocalUser {
            name: entry
                .map(|user| user.name)
                .unwrap_or_else(|| uid.to_string()),
            uid,
            full_name,
        }
    }
}

/// The full name in a GECOS field: its first comma-separated part, when it says something
/// (Postfix's cleanup reads it the same way; `&` stands for the capitalised login name in
/// old BSD entries, which we leave out rather than guess).
fn gecos_name(gecos: &std::ffi::CStr) -> Option<String> {
    let text = gecos.to_str().ok()?;
    let name = text.split(',').next()?.trim();
    (!name.is_empty() && !name.contains('&')).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gecos_full_name_is_the_first_field() {
        let name = |text: &str| gecos_name(&std::ffi::CString::new(text).unwrap());
        assert_eq!(name("Backup Operator,,,"), Some("Backup Operator".into()));
        assert_eq!(name("root"), Some("root".into()));
        assert_eq!(name(""), None);
        assert_eq!(name(",,,"), None);
        assert_eq!(name("& Smith"), None);
    }
}
