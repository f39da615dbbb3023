//! Drives one `Session` over any byte stream (a TCP socket, or stdin/stdout for
//! `sendmail -bs`): reads with the session's timeout, writes replies (batched, so pipelined
//! commands get their replies in one write), and hands finished messages to the intake.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::reply::{self, Reply, refusal_reason};
use super::session::{Peer, Session, SessionPolicy, Step};
use crate::telemetry::Metrics;

/// Read sizes: large while a message streams in, small between commands, so that hundreds
/// of idle sessions do not each hold a large buffer.
const DATA_READ_CHUNK: usize = 64 * 1024;
const COMMAND_READ_CHUNK: usize = 2 * 1024;

/// What every connection needs besides its stream.
#[derive(Clone)]
pub struct SessionContext {
    pub policy: Arc<SessionPolicy>,
    pub metrics: Arc<Metrics>,
}

/// How a session ended, for `sendmail -bs`'s exit status.
#[derive(Debug, Clone, Copy)]
pub struct SessionEnd {
    /// The client said QUIT.
    pub quit: bool,
    /// Messages queued.
    pub queued: u32,
    /// A transaction was still open (the input ended inside it).
    pub open_transaction: bool,
}

/// Runs the session until QUIT, a closing error, a timeout, shutdown, or the client leaving.
/// `shutdown` turning true makes an idle session answer `421 4.3.2`; a session in DATA is left
/// to finish its message first.
pub async fn run<S>(
    stream: S,
    peer: Peer,
    context: SessionContext,
    mut shutdown: watch::Receiver<bool>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut session = Session::new(context.policy.clone(), peer);
    context.metrics.sessions.inc();
    let mut input = Vec::with_capacity(COMMAND_READ_CHUNK);
    let mut output = Vec::with_capacity(1024);
    let mut quit = false;
    session.greeting().write_to(&mut output);
    loop {
        match session.step(&mut input) {
            Step::Reply(reply) => {
                count_refusal(&context, &reply);
                reply.write_to(&mut output);
            }
            Step::Message(submission) => {
                let started = std::time::Instant::now();
                let outcome = context.policy.intake.accept(submission).await;
                if let Err(refusal) = &outcome {
                    tracing::info!(peer = ?session.peer(), %refusal, "message refused");
                }
                let reply = session.queued(&outcome);
                if outcome.is_ok() {
                    context.metrics.accepted.inc();
                    context
                        .metrics
                        .acceptance_seconds
                        .observe(started.elapsed().as_secs_f64());
                }
                count_refusal(&context, &reply);
                reply.write_to(&mut output);
            }
            Step::Close(reply) => {
                quit = reply == reply::BYE;
                count_refusal(&context, &reply);
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
                        count_refusal(&context, &reply);
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
    SessionEnd {
        quit,
        queued: session.queued_count(),
        open_transaction: session.in_transaction(),
    }
}

fn count_refusal(context: &SessionContext, reply: &Reply) {
    if let Some(reason) = refusal_reason(reply) {
        context.metrics.refuse(reason);
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
