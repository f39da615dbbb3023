//! The local hand-off: how a `sendmail` caller who may not write the spool gives its *raw*
//! submission to the running daemon (Postfix's postdrop → pickup). The daemon's intake then
//! judges, repairs and queues it exactly once, so the message gets one Received header, one
//! queue ID, its original sender and its submitter.
//!
//! The channel is a Unix socket, so that the daemon learns who submits from the kernel (the
//! peer's credentials), never from what the client says. One request per connection:
//!
//! ```text
//! client: {"sender": "...", "recipients": [...], "full_name": ..., "body_type": "7BIT",
//!          "smtputf8": false, "size": N}\n  then N bytes of message
//! daemon: {"queued": "ID"}\n   or   {"refused": {"code": 553, "text": "5.7.1 ...", "exit": 65}}\n
//! ```
//!
//! Everything the daemon reads is parsed again as strictly as an SMTP client's envelope.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Client, LocalUser, Refusal, Submission};
use crate::model::{self, BodyType, QueueId, Reply};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The daemon commits before it answers; a loaded disk can take seconds, never this long.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// The request line holds an envelope, not a message: bounded well above any real one.
const MAX_REQUEST_LINE: u64 = 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct Request {
    sender: String,
    recipients: Vec<String>,
    full_name: Option<String>,
    body_type: String,
    smtputf8: bool,
    size: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Queued(String),
    Refused { code: u16, text: String, exit: u8 },
}

/// `sendmail`'s side: hands the submission over and returns the daemon's queue ID, or why not.
pub async fn drop_off(socket: &Path, submission: &Submission) -> Result<QueueId, Refusal> {
    let unavailable =
        |why: String| Refusal::DaemonUnavailable(format!("daemon at {}: {why}", socket.display()));
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(socket))
        .await
        .map_err(|_| unavailable("connecting timed out".into()))?
        .map_err(|e| unavailable(format!("cannot connect: {e}")))?;
    let full_name = match &submission.client {
        Client::Local(user) => user.full_name.clone(),
        Client::Smtp { .. } => None,
    };
    let request = Request {
        sender: submission.sender.as_spooled(),
        recipients: submission
            .recipients
            .iter()
            .map(|r| r.to_string())
            .collect(),
        full_name,
        body_type: submission.body_type.as_str().to_string(),
        smtputf8: submission.smtputf8,
        size: submission.message.len() as u64,
    };
    let exchange = async {
        let mut stream = BufReader::new(stream);
        let mut head = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        head.push(b'\n');
        let writer = stream.get_mut();
        writer.write_all(&head).await.map_err(|e| e.to_string())?;
        writer
            .write_all(&submission.message)
            .await
            .map_err(|e| e.to_string())?;
        writer.flush().await.map_err(|e| e.to_string())?;
        let mut line = String::new();
        (&mut stream)
            .take(MAX_REQUEST_LINE)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str::<Answer>(&line)
            .map_err(|_| format!("unexpected answer {:?}", line.trim_end()))
    };
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange).await {
        Err(_) => Err(unavailable("no answer in time".into())),
        Ok(Err(why)) => Err(unavailable(why)),
        Ok(Ok(Answer::Queued(id))) => QueueId::parse(&id)
            .ok_or_else(|| unavailable(format!("answered with a bad queue ID {id:?}"))),
        Ok(Ok(Answer::Refused { code, text, exit })) => Err(Refusal::ByDaemon {
            reply: Reply::new(code, text),
            exit,
        }),
    }
}

/// The daemon's side: reads one request from `user` (known from the socket's credentials).
/// A request that is malformed or larger than `max_size` is an error for the log; the client
/// then sees the connection close and reports that the daemon did not take it.
pub async fn read_submission<S: AsyncRead + Unpin>(
    stream: &mut BufReader<S>,
    mut user: LocalUser,
    max_size: u64,
) -> Result<Submission, String> {
    let mut line = String::new();
    (&mut *stream)
        .take(MAX_REQUEST_LINE)
        .read_line(&mut line)
        .await
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let request: Request =
        serde_json::from_str(&line).map_err(|e| format!("malformed request: {e}"))?;
    if request.size > max_size {
        return Err(format!(
            "message of {} bytes is over the limit",
            request.size
        ));
    }
    let sender = model::parse_reverse_path(&request.sender, true)
        .map_err(|e| format!("sender '{}': {e}", request.sender))?;
    let recipients = request
        .recipients
        .iter()
        .map(|r| model::Address::parse(r, true).map_err(|e| format!("recipient '{r}': {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut message = vec![0; request.size as usize];
    stream
        .read_exact(&mut message)
        .await
        .map_err(|e| format!("message cut short: {e}"))?;
    if request.full_name.is_some() {
        user.full_name = request.full_name;
    }
    Ok(Submission {
        sender,
        recipients,
        message,
        client: Client::Local(user),
        body_type: BodyType::from_stored(&request.body_type),
        smtputf8: request.smtputf8,
    })
}

/// The daemon's answer to one request.
pub async fn answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    outcome: &Result<QueueId, Refusal>,
) -> std::io::Result<()> {
    let answer = match outcome {
        Ok(id) => Answer::Queued(id.to_string()),
        Err(refusal) => {
            let reply = refusal.reply();
            Answer::Refused {
                code: reply.code,
                text: reply.text.to_string(),
                exit: refusal.exit_code(),
            }
        }
    };
    let mut line = serde_json::to_vec(&answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.flush().await
}
