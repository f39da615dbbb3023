//! When the spool cannot be written directly (say, a user without write access to it), the
//! message is handed to the running daemon over SMTP on its listen address, as a loopback
//! client it trusts. Every step has a timeout; any refusal fails the whole hand-off, so the
//! caller can exit EX_TEMPFAIL rather than lose part of the message.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::spool::{BodyType, NewMessage};
use crate::wire;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 5321 4.5.3.2 allows minutes; the daemon is local, so half a minute is generous.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Returns the daemon's queue ID.
pub async fn handoff(address: SocketAddr, message: &NewMessage) -> Result<String, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
        .await
        .map_err(|_| format!("connecting to {address} timed out"))?
        .map_err(|e| format!("cannot connect to {address}: {e}"))?;
    let mut conn = Conversation {
        stream: BufReader::new(stream),
    };
    conn.expect(None, 220).await?;
    conn.expect(Some("EHLO localhost\r\n".into()), 250).await?;
    let mut mail = format!("MAIL FROM:<{}>", message.sender);
    if message.body_type == BodyType::EightBitMime {
        mail.push_str(" BODY=8BITMIME");
    }
    if message.smtputf8 {
        mail.push_str(" SMTPUTF8");
    }
    conn.expect(Some(mail + "\r\n"), 250).await?;
    for recipient in &message.recipients {
        conn.expect(Some(format!("RCPT TO:<{}>\r\n", recipient.address)), 250)
            .await?;
    }
    conn.expect(Some("DATA\r\n".into()), 354).await?;
    let mut data = Vec::new();
    wire::write_data(&message.body, &mut data);
    let queued = conn.send_and_expect(&data, 250).await?;
    let _ = conn.expect(Some("QUIT\r\n".into()), 221).await;
    Ok(queued
        .rsplit("queued as ")
        .next()
        .unwrap_or_default()
        .trim()
        .to_string())
}

struct Conversation {
    stream: BufReader<TcpStream>,
}

impl Conversation {
    async fn expect(&mut self, command: Option<String>, code: u16) -> Result<String, String> {
        let bytes = command.map(String::into_bytes).unwrap_or_default();
        self.send_and_expect(&bytes, code).await
    }

    /// Sends `bytes` (if any) and reads one reply, which must carry `code`.
    async fn send_and_expect(&mut self, bytes: &[u8], code: u16) -> Result<String, String> {
        if !bytes.is_empty() {
            self.stream
                .get_mut()
                .write_all(bytes)
                .await
                .map_err(|e| format!("daemon connection lost: {e}"))?;
        }
        let reply = tokio::time::timeout(REPLY_TIMEOUT, self.read_reply())
            .await
            .map_err(|_| "daemon did not answer in time".to_string())??;
        if reply.starts_with(&code.to_string()) {
            Ok(reply)
        } else {
            Err(format!("daemon refused: {reply}"))
        }
    }

    /// A reply's lines, joined; the last line has a space after the code.
    async fn read_reply(&mut self) -> Result<String, String> {
        let mut reply = String::new();
        for _ in 0..100 {
            let mut line = String::new();
            let read = self
                .stream
                .read_line(&mut line)
                .await
                .map_err(|e| format!("daemon connection lost: {e}"))?;
            if read == 0 {
                return Err("daemon closed the connection".into());
            }
            let line = line.trim_end();
            reply.push_str(line);
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok(reply);
            }
            reply.push(' ');
        }
        Err("daemon sent an over-long reply".into())
    }
}
