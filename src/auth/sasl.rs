//! The two SASL mechanisms offered (RFC 4954 over TLS only): PLAIN (RFC 4616: authzid NUL
//! authcid NUL password, base64) and LOGIN (the user name, then the password, each base64 on
//! its own line; undocumented but what Outlook, PHP mailers and msmtp still send).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What a client claims; the password is never logged or kept past the check.
pub struct Credentials {
    pub name: String,
    pub password: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Why a response could not be read: `501 5.5.2`.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

pub fn decode(line: &str) -> Result<Vec<u8>, Malformed> {
    STANDARD.decode(line.trim()).map_err(|_| Malformed)
}

/// A PLAIN response. An authorization identity other than the user's own is refused: acting
/// for someone else is not something a relay's submitters get to do.
pub fn plain(response: &str) -> Result<Credentials, Malformed> {
    let bytes = decode(response)?;
    let mut parts = bytes.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed);
    };
    let name = String::from_utf8(authcid.to_vec()).map_err(|_| Malformed)?;
    if name.is_empty() || (!authzid.is_empty() && authzid != authcid) {
        return Err(Malformed);
    }
    Ok(Credentials {
        name,
        password: password.to_vec(),
    })
}

/// A LOGIN user name line.
pub fn login_name(response: &str) -> Result<String, Malformed> {
    let name = String::from_utf8(decode(response)?).map_err(|_| Malformed)?;
    if name.is_empty() {
        return Err(Malformed);
    }
    Ok(name)
}

/// The `334` challenges LOGIN sends: "Username:" and "Password:", base64.
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        STANDARD.encode(bytes)
    }

    #[test]
    fn plain_takes_the_user_and_password_and_refuses_a_proxy_identity() {
        let creds = plain(&b64(b"\0app1\0s3cret")).unwrap();
        assert_eq!(
            (creds.name.as_str(), creds.password.as_slice()),
            ("app1", &b"s3cret"[..])
        );
        assert!(plain(&b64(b"app1\0app1\0pw")).is_ok());
        assert_eq!(plain(&b64(b"admin\0app1\0pw")).err(), Some(Malformed));
        assert_eq!(plain(&b64(b"app1pw")).err(), Some(Malformed));
        assert_eq!(plain(&b64(b"\0\0pw")).err(), Some(Malformed));
        assert_eq!(plain("not base64!").err(), Some(Malformed));
        assert_eq!(plain(&b64(b"\0a\0b\0c")).err(), Some(Malformed));
    }

    #[test]
    fn login_prompts_are_the_usual_words() {
        assert_eq!(decode(LOGIN_USER_PROMPT).unwrap(), b"Username:");
        assert_eq!(decode(LOGIN_PASSWORD_PROMPT).unwrap(), b"Password:");
        assert_eq!(login_name(&b64(b"app1")).unwrap(), "app1");
        assert!(login_name("").is_err());
    }
}
