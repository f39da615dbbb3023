//! Drives one `Session` over any byte stream (a TCP socket, TLS over it, or stdin/stdout for
//! `sendmail -bs`): reads with the session's timeout, writes replies (batched, so pipelined
//! commands get their replies in one write), hands finished messages to the intake, and
//! moves the session into TLS after STARTTLS.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio_rustls::server::TlsStream;

use super::reply::{self, Reply, refusal_reason};
use super::session::{Peer, Session, SessionPolicy, Step};
use super::tls::{ServerTls, session_of};
use crate::auth::Verdict;
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
    /// The certificate for STARTTLS and implicit TLS; None: no TLS.
    pub tls: Option<Arc<ServerTls>>,
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
/// to finish its message first. After STARTTLS the same session goes on inside TLS.
/// `untrusted_share`: the slot of the untrusted clients' share this connection holds, given
/// back when it authenticates.
pub async fn run<S>(
    stream: S,
    peer: Peer,
    context: SessionContext,
    shutdown: watch::Receiver<bool>,
    untrusted_share: Option<OwnedSemaphorePermit>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let session = Session::new(context.policy.clone(), peer);
    converse(stream, session, context, shutdown, untrusted_share).await
}

/// The implicit-TLS listener (RFC 8314): the handshake first, then the session, TLS from its
/// greeting on.
pub async fn run_tls(
    stream: TcpStream,
    peer: Peer,
    context: SessionContext,
    shutdown: watch::Receiver<bool>,
    untrusted_share: Option<OwnedSemaphorePermit>,
) {
    let Some(tls) = context.tls.clone() else {
        return;
    };
    let handshake = context.policy.limits.command_timeout;
    match tokio::time::timeout(handshake, tls.accept(stream)).await {
        Ok(Ok(stream)) => {
            let mut session = Session::new(context.policy.clone(), peer);
            session.tls_started(session_of(&stream));
            converse(stream, session, context, shutdown, untrusted_share).await;
        }
        Ok(Err(error)) => tracing::info!(?peer, %error, "TLS handshake failed"),
        Err(_elapsed) => tracing::info!(?peer, "TLS handshake timed out"),
    }
}

async fn converse<S>(
    mut stream: S,
    mut session: Session,
    context: SessionContext,
    mut shutdown: watch::Receiver<bool>,
    untrusted_share: Option<OwnedSemaphorePermit>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    context.metrics.sessions.inc();
    let mut io = Buffers {
        input: Vec::with_capacity(COMMAND_READ_CHUNK),
        output: Vec::with_capacity(1024),
        quit: false,
        untrusted_share,
    };
    session.greeting().write_to(&mut io.output);
    let driven = drive(&mut stream, &mut session, &mut io, &context, &mut shutdown).await;
    if let Driven::StartTls = driven {
        match start_tls(stream, &context).await {
            Ok(mut stream) => {
                session.tls_started(session_of(&stream));
                drive(&mut stream, &mut session, &mut io, &context, &mut shutdown).await;
                let _ = stream.shutdown().await;
            }
            Err(error) => {
                tracing::info!(peer = ?session.peer(), %error, "STARTTLS handshake failed")
            }
        }
    } else {
        let _ = stream.shutdown().await;
    }
    SessionEnd {
        quit: io.quit,
        queued: session.queued_count(),
        open_transaction: session.in_transaction(),
    }
}

async fn start_tls<S>(stream: S, context: &SessionContext) -> std::io::Result<TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(tls) = &context.tls else {
        return Err(std::io::Error::other("no certificate"));
    };
    let handshake = context.policy.limits.command_timeout;
    tokio::time::timeout(handshake, tls.accept(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "handshake timed out"))?
}

/// What a session's stream carries between its stages.
struct Buffers {
    input: Vec<u8>,
    output: Vec<u8>,
    /// The client said QUIT.
    quit: bool,
    untrusted_share: Option<OwnedSemaphorePermit>,
}

enum Driven {
    Ended,
    /// The 220 for STARTTLS is written: the handshake comes next, on the same stream.
    StartTls,
}

async fn drive<S>(
    stream: &mut S,
    session: &mut Session,
    io: &mut Buffers,
    context: &SessionContext,
    shutdown: &mut watch::Receiver<bool>,
) -> Driven
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match session.step(&mut io.input) {
            Step::Reply(reply) => {
                count_refusal(context, &reply);
                reply.write_to(&mut io.output);
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
                count_refusal(context, &reply);
                reply.write_to(&mut io.output);
            }
            Step::Authenticate(credentials) => {
                let verdict = match (&context.policy.auth, session.peer().ip()) {
                    (Some(auth), Some(ip)) => auth.check(ip, credentials).await,
                    _ => Verdict::Refused,
                };
                if let Verdict::Authenticated(_) = verdict {
                    // Authenticated clients are not the untrusted share's any more.
                    io.untrusted_share = None;
                }
                let answer = session.authenticated(verdict);
                count_refusal(context, &answer.reply);
                answer.reply.write_to(&mut io.output);
                if answer.close {
                    let _ = stream.write_all(&io.output).await;
                    return Driven::Ended;
                }
            }
            Step::StartTls(reply) => {
                reply.write_to(&mut io.output);
                let written =
                    stream.write_all(&io.output).await.is_ok() && stream.flush().await.is_ok();
                io.output.clear();
                return if written {
                    Driven::StartTls
                } else {
                    Driven::Ended
                };
            }
            Step::Close(reply) => {
                io.quit = reply == reply::BYE;
                count_refusal(context, &reply);
                reply.write_to(&mut io.output);
                let _ = stream.write_all(&io.output).await;
                return Driven::Ended;
            }
            Step::NeedInput => {
                if stream.write_all(&io.output).await.is_err() || stream.flush().await.is_err() {
                    return Driven::Ended;
                }
                io.output.clear();
                match read_more(stream, &mut io.input, session, shutdown).await {
                    ReadResult::Data => {}
                    ReadResult::Closed => return Driven::Ended,
                    ReadResult::Stop(reply) => {
                        count_refusal(context, &reply);
                        tracing::info!(peer = ?session.peer(), reply = %reply.text, "closing session");
                        reply.write_to(&mut io.output);
                        let _ = stream.write_all(&io.output).await;
                        return Driven::Ended;
                    }
                }
            }
        }
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
    let deadline = tokio::time::Instant::from_std(session.deadline());
    let read = tokio::time::timeout_at(deadline, async {
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
