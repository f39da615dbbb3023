//! A reply an upstream sent us, kept typed from the moment it is read: the code, the RFC 3463
//! enhanced status (when the upstream sent one, RFC 2034) and the text. What it means for a
//! recipient is decided from these fields; nothing parses a stored string back.

use std::fmt;

/// `class.subject.detail` (RFC 3463 2): class 2 success, 4 persistent transient, 5 permanent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamReply {
    pub code: u16,
    pub enhanced: Option<EnhancedStatus>,
    /// The reply's text without code and enhanced status; lines joined with spaces.
    pub text: String,
}

impl UpstreamReply {
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The enhanced status, or the default for the reply's class (RFC 3463: X.0.0) when the
    /// upstream sent none.
    pub fn status(&self) -> EnhancedStatus {
        self.enhanced.unwrap_or(EnhancedStatus {
            class: (self.code / 100).clamp(2, 5) as u8,
            subject: 0,
            detail: 0,
        })
    }
}

impl fmt::Display for UpstreamReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.enhanced {
            Some(enhanced) => write!(f, "{} {enhanced} {}", self.code, self.text),
            None => write!(f, "{} {}", self.code, self.text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_the_enhanced_code_or_the_class_default() {
        let reply = |code, enhanced| UpstreamReply {
            code,
            enhanced,
            text: "t".into(),
        };
        let user_unknown = EnhancedStatus {
            class: 5,
            subject: 1,
            detail: 1,
        };
        assert_eq!(reply(550, Some(user_unknown)).status().to_string(), "5.1.1");
        assert_eq!(reply(550, Some(user_unknown)).to_string(), "550 5.1.1 t");
        assert_eq!(reply(554, None).status().to_string(), "5.0.0");
        assert_eq!(reply(451, None).status().to_string(), "4.0.0");
        assert_eq!(reply(451, None).to_string(), "451 t");
    }
}
