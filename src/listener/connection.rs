//! Drives one `Session` over any byte stream (a TCP socket, or stdin/stdout for
//! `sendmail -bs`): reads with the session's timeout, writes replies (batched, so pipelined
//! commands get their replies in one write), and hands finished messages to the spool.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::reply::{self, Reply};
use super::session::{AcceptedMessage, Peer, Session, SessionPolicy, Step};
use crate::intake::{self, Submission};
use crate::received;
use crate::spool::{Origin, QueueId, Spool, SpoolError};
use crate::telemetry::Metrics;

/// Read sizes: large while a message streams in, small between commands, so that hundreds
/// of idle sessions do not each hold a large buffer.
const DATA_READ_CHUNK: usize = 64 * 1024;
const COMMAND_READ_CHUNK: usize = 2 * 1024;

/// What every connection needs besides its stream.
#[derive(Clone)]
pub struct Intake {
    pub policy: Arc<SessionPolicy>,
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
}

/// Runs the session until QUIT, a closing error, a timeout, shutdown, or the client leaving.
/// `shutdown` turning true makes an idle session answer `421 4.3.2`; a session in DATA is left
/// to finish its message first.
pub async fn run<S>(stream: S, peer: Peer, intake: Intake, mut shutdown: watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut session = Session::new(intake.policy.clone(), peer);
    intake.metrics.sessions.inc();
    let mut input = Vec::with_capacity(COMMAND_READ_CHUNK);
    let mut output = Vec::with_capacity(1024);
    session.greeting().write_to(&mut output);
    loop {
        match session.step(&mut input) {
            Step::Reply(reply) => {
                count_refusal(&intake, &reply);
                reply.write_to(&mut output);
            }
            Step::Message(message) => {
                let started = std::time::Instant::now();
                let outcome = commit(&intake, &session, message).await;
                let reply = session.queued(&outcome);
                if outcome.is_ok() {
                    intake.metrics.accepted.inc();
                    intake
                        .metrics
                        .acceptance_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                count_refusal(&intake, &reply);
                reply.write_to(&mut output);
            }
            Step::Close(reply) => {
                count_refusal(&intake, &reply);
                reply.write_to(&mut output);
                let _ = writer.write_all(&output).await;
                break;
            }
            Step::NeedInput => {
                if writer.write_all(&output).await.is_err() || writer.flush().await.is_err() {
                    break;
                }
                output.clear();
                match read_more(&mut reader, &mut input, &session, &mut shutdown).await {
                    ReadResult::Data => {}
                    ReadResult::Closed => break,
                    ReadResult::Stop(reply) => {
                        count_refusal(&intake, &reply);
                        tracing::info!(peer = ?session.peer(), reply = %reply.text, "closing session");
                        reply.write_to(&mut output);
                        let _ = writer.write_all(&output).await;
                        break;
                    }
                }
            }
        }
    }
    let _ = writer.shutdown().await;
}

fn count_refusal(intake: &Intake, reply: &Reply) {
    if let Some(reason) = reply.refusal_reason() {
        intake.metrics.refuse(reason);
    }
}

enum ReadResult {
    Data,
    Closed,
    Stop(Reply),
}

async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    input: &mut Vec<u8>,
    session: &Session,
    shutdown: &mut watch::Receiver<bool>,
) -> ReadResult {
    let in_data = session.in_data();
    if !in_data && *shutdown.borrow() {
        return ReadResult::Stop(reply::SHUTTING_DOWN);
    }
    let start = input.len();
    if !in_data && start == 0 && input.capacity() > 4 * COMMAND_READ_CHUNK {
        // A message just ended: give its buffer back before waiting, perhaps for minutes.
        input.shrink_to(COMMAND_READ_CHUNK);
    }
    let chunk = if in_data {
        DATA_READ_CHUNK
    } else {
        COMMAND_READ_CHUNK
    };
    // Read into spare capacity: zeroing a 64 KiB buffer for every read showed in the profile.
    input.reserve(chunk);
    let read = tokio::time::timeout(session.timeout(), async {
        tokio::select! {
            result = reader.read_buf(input) => Some(result),
            // Only sessions between messages are interrupted; DATA runs to its end.
            _ = shutdown.wait_for(|stop| *stop), if !in_data => None,
        }
    })
    .await;
    let result = match read {
        Err(_elapsed) => ReadResult::Stop(reply::TIMEOUT),
        Ok(None) => ReadResult::Stop(reply::SHUTTING_DOWN),
        Ok(Some(Ok(0)) | Some(Err(_))) => ReadResult::Closed,
        Ok(Some(Ok(_))) => return ReadResult::Data,
    };
    input.truncate(start);
    result
}

/// Builds the spooled form of a message (rewritten, Received header first) and commits it.
async fn commit(
    intake: &Intake,
    session: &Session,
    message: AcceptedMessage,
) -> Result<QueueId, SpoolError> {
    let id = QueueId::generate();
    let policy = &intake.policy;
    let (client_addr, submitter, received, protocol) = match session.peer() {
        Peer::Tcp(ip) => {
            let protocol = match (message.esmtp, message.smtputf8) {
                (_, true) => "UTF8SMTP",
                (true, false) => "ESMTP",
                (false, false) => "SMTP",
            };
            let single = match message.recipients.as_slice() {
                [only] => Some(only.to_string()),
                _ => None,
            };
            let client = format!("[{ip}]");
            let from = (!policy.rewriter.hides_client(*ip))
                .then_some((message.helo.as_deref(), client.as_str()));
            let header =
                received::smtp_header(from, &policy.hostname, protocol, &id, single.as_deref());
            let protocol = if message.esmtp { "ESMTP" } else { "SMTP" };
            (Some(ip.to_string()), None, header, protocol)
        }
        Peer::Local { user, uid } => (
            None,
            Some(user.clone()),
            received::local_header(&policy.hostname, *uid, &id),
            "LOCAL",
        ),
    };
    let submission = Submission {
        id: id.clone(),
        sender: message.sender.as_spooled(),
        recipients: message.recipients.iter().map(|r| r.to_string()).collect(),
        message: &message.body,
        received,
        origin: Origin {
            helo: message.helo.clone(),
            client_addr,
            submitter,
            protocol,
        },
        body_type: message.body_type,
        smtputf8: message.smtputf8,
    };
    let new = intake::prepare(&policy.rewriter, submission)
        .map_err(|recipient| SpoolError::Write(format!("recipient {recipient} has no route")))?;
    match intake.spool.enqueue(new).await {
        Ok(()) => Ok(id),
        Err(error) => {
            tracing::error!(peer = ?session.peer(), %error, "message not queued; client told 452 4.3.1");
            Err(error)
        }
    }
}
