//! What an HTTPS API upstream (SESv2 `SendEmail`) answered, kept typed: the error code it
//! returned (none on success) apart from its message.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiReply {
    /// The service's error code (`MessageRejected`, `TooManyRequestsException`); `None` when
    /// the message was accepted.
    pub error_code: Option<String>,
    /// The error message, or the message ID the service assigned.
    pub message: String,
}

impl ApiReply {
    pub fn accepted(message_id: &str) -> ApiReply {
        ApiReply {
            error_code: None,
            message: format!("accepted as {message_id}"),
        }
    }

    pub fn is_accepted(&self) -> bool {
        self.error_code.is_none()
    }
}

impl fmt::Display for ApiReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error_code {
            None => write!(f, "SendEmail {}", self.message),
            Some(code) => write!(f, "SendEmail {code}: {}", self.message),
        }
    }
}
