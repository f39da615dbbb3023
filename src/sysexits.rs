//! Exit codes from sysexits.h, which sendmail callers (cron, mail clients) interpret: 75 means
//! "try again later", anything else non-zero means the message was not taken.

pub const OK: u8 = 0;
pub const USAGE: u8 = 64;
pub const DATAERR: u8 = 65;
pub const NOINPUT: u8 = 66;
pub const NOUSER: u8 = 67;
pub const SOFTWARE: u8 = 70;
pub const CANTCREAT: u8 = 73;
pub const TEMPFAIL: u8 = 75;
pub const CONFIG: u8 = 78;
