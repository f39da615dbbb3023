//! One connection to an upstream relay, through mail-send: TCP, TLS (STARTTLS on 587 or
//! implicit on 465, certificates verified), AUTH (only ever over TLS), then transactions with
//! our own DATA framing (mail-send's does not stuff a dot on the first line).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use mail_send::smtp::AssertReply;
use mail_send::{Credentials, SmtpClient};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::outbound::Capabilities;
use crate::config::{Secret, SmtpServer, TlsMode};
use crate::model::{EnhancedStatus, UpstreamReply};
use crate::wire;

/// The upstream's reply as mail-send read it, typed: the enhanced status apart from the text.
fn reply_of(response: smtp_proto::Response<String>) -> UpstreamReply {
    let [class, subject, detail] = response.esc;
    UpstreamReply {
        code: response.code,
        enhanced: (class > 0).then_some(EnhancedStatus {
            class,
            subject: subject.into(),
            detail: detail.into(),
        }),
        text: response
            .message
            .replace(['\r', '\n'], " ")
            .trim()
            .to_string(),
    }
}

/// Why an upstream could not be used at all: the attempt moves on to the next upstream.
#[derive(Debug, Clone)]
pub enum Unusable {
    /// Connection refused, reset, timed out, or the upstream closed it.
    Unreachable(String),
    /// The upstream is refusing service now (`421`, or a 4xx/5xx greeting).
    Refused(UpstreamReply),
    /// Our setup is wrong: certificate verification failed, STARTTLS missing, AUTH refused.
    Misconfigured(String),
}

impl Unusable {
    pub fn is_config_error(&self) -> bool {
        matches!(self, Unusable::Misconfigured(_))
    }
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::Unreachable(reason) => write!(f, "unreachable: {reason}"),
            Unusable::Refused(reply) => write!(f, "refused service: {reply}"),
            Unusable::Misconfigured(reason) => write!(f, "configuration error: {reason}"),
        }
    }
}

/// Timeouts for one upstream conversation (RFC 5321 4.5.3.2 gives the classic values).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP, TLS, greeting, EHLO and AUTH together.
    pub connect: Duration,
    pub command: Duration,
    /// From the end of the body to the final reply.
    pub data: Duration,
}

/// What a connection needs that does not change between connections.
#[derive(Clone)]
pub struct Endpoint {
    pub server: SmtpServer,
    pub helo: String,
    /// The AUTH identity, its password read from its source when the endpoint was built.
    login: Option<(String, Secret)>,
    tls: TlsConnector,
    /// Kept apart from the TLS configuration so that preflight can ask it about the future.
    verifier: Arc<dyn ServerCertVerifier>,
}

/// What a probe of an upstream learned (preflight).
pub struct Probe {
    /// The SIZE limit it advertises (0: none advertised).
    pub size: usize,
    /// The certificate chain will no longer verify on this date (within the look-ahead).
    pub expires_within_lookahead: bool,
}

impl Endpoint {
    /// Builds the TLS configuration once (the configured CA file, or the system's roots) and
    /// reads the password: only the processes that connect upstream ever hold it.
    pub fn new(server: SmtpServer, helo: String) -> Result<Endpoint, String> {
        let login = match &server.credentials {
            Some(credentials) => Some((
                credentials.username.clone(),
                credentials.password.load().map_err(|e| e.to_string())?,
            )),
            None => None,
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match &server.ca_file {
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let certificates = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
                for certificate in certificates {
                    let certificate = certificate
                        .map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                    roots
                        .add(certificate)
                        .map_err(|e| format!("unusable certificate in {}: {e}", path.display()))?;
                }
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?
            }
            None => Arc::new(
                rustls_platform_verifier::Verifier::new(provider.clone())
                    .map_err(|e| format!("cannot load the system's trust store: {e}"))?,
            ),
        };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        Ok(Endpoint {
            server,
            helo,
            login,
            tls: TlsConnector::from(Arc::new(config)),
            verifier,
        })
    }

    /// Connects (TLS and AUTH as for delivery), reads what preflight wants to know, and says
    /// QUIT without sending anything.
    pub async fn probe(&self, timeouts: Timeouts, lookahead: Duration) -> Result<Probe, Unusable> {
        let connection = self.connect(timeouts).await?;
        let expires_within_lookahead = match &connection.client {
            Client::Tls(client) => {
                let chain: Vec<CertificateDer<'static>> = client
                    .tls_connection()
                    .peer_certificates()
                    .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default();
                self.expires_within(&chain, lookahead)
            }
            Client::Plain(_) => false,
        };
        let probe = Probe {
            size: connection.capabilities.size.unwrap_or(0),
            expires_within_lookahead,
        };
        connection.quit().await;
        Ok(probe)
    }

    /// Verifies the chain as of `lookahead` from now: failing with an expiry means the
    /// certificate runs out before then.
    fn expires_within(&self, chain: &[CertificateDer<'static>], lookahead: Duration) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        let Ok(name) = ServerName::try_from(self.server.host.clone()) else {
            return false;
        };
        let later = std::time::SystemTime::now() + lookahead;
        let at = UnixTime::since_unix_epoch(
            later
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        matches!(
            self.verifier
                .verify_server_cert(leaf, intermediates, &name, &[], at),
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. }
            ))
        )
    }

    /// Connects the way RFC 3207 and RFC 8314 say, each stage under its own deadline
    /// (`connect_timeout`): TCP, the TLS handshake, the greeting, EHLO, STARTTLS, AUTH. A
    /// tarpit that never greets, or greets without a line end, costs one deadline and the
    /// attempt moves on to the next upstream. The last EHLO's capabilities are kept: no EHLO
    /// is sent twice.
    pub async fn connect(&self, timeouts: Timeouts) -> Result<Connection, Unusable> {
        let server = &self.server;
        let deadline = timeouts.connect;
        let tcp = stage("TCP connect", deadline, async {
            TcpStream::connect((server.host.as_str(), server.port))
                .await
                .map_err(mail_send::Error::Io)
        })
        .await?;
        let plain = SmtpClient {
            stream: tcp,
            timeout: deadline,
        };
        let (client, ehlo) = match server.tls {
            TlsMode::Implicit => {
                let mut client = stage(
                    "TLS handshake",
                    deadline,
                    plain.into_tls(&self.tls, &server.host),
                )
                .await?;
                let ehlo = self.greet(&mut client, deadline).await?;
                (Client::Tls(Box::new(client)), ehlo)
            }
            TlsMode::StartTls => {
                let mut plain = plain;
                let ehlo = self.greet(&mut plain, deadline).await?;
                if !ehlo.has_capability(smtp_proto::EXT_START_TLS) {
                    return Err(unusable(mail_send::Error::MissingStartTls));
                }
                let mut client = stage(
                    "STARTTLS",
                    deadline,
                    plain.start_tls(&self.tls, &server.host),
                )
                .await?;
                // RFC 3207 4.2: everything learned before TLS is forgotten; ask again.
                let ehlo = stage("EHLO after STARTTLS", deadline, client.ehlo(&self.helo)).await?;
                (Client::Tls(Box::new(client)), ehlo)
            }
            TlsMode::None => {
                let mut plain = plain;
                let ehlo = self.greet(&mut plain, deadline).await?;
                (Client::Plain(plain), ehlo)
            }
        };
        let mut connection = Connection {
            client,
            timeouts,
            pipelining: ehlo.has_capability(smtp_proto::EXT_PIPELINING),
            capabilities: Capabilities {
                eight_bit_mime: ehlo.has_capability(smtp_proto::EXT_8BIT_MIME),
                smtputf8: ehlo.has_capability(smtp_proto::EXT_SMTP_UTF8),
                size: ehlo
                    .has_capability(smtp_proto::EXT_SIZE)
                    .then_some(ehlo.size),
            },
            opened: tokio::time::Instant::now(),
            messages: 0,
        };
        if let Some((username, password)) = &self.login {
            let credentials = Credentials::new(username.as_str(), password.expose());
            let authenticated = match &mut connection.client {
                Client::Tls(client) => {
                    stage("AUTH", deadline, async {
                        client.authenticate(&credentials, &ehlo).await.map(|_| ())
                    })
                    .await
                }
                Client::Plain(_) => Err(Unusable::Misconfigured(
                    "credentials are never sent without TLS".into(),
                )),
            };
            authenticated?;
        }
        connection.set_timeout(timeouts.command);
        Ok(connection)
    }

    /// Reads the greeting (it must be 2xx) and says EHLO, each under `deadline`.
    async fn greet<T: AsyncRead + AsyncWrite + Unpin>(
        &self,
        client: &mut SmtpClient<T>,
        deadline: Duration,
    ) -> Result<smtp_proto::EhloResponse<String>, Unusable> {
        stage("greeting", deadline, async {
            client.read().await?.assert_positive_completion()
        })
        .await?;
        stage("EHLO", deadline, client.ehlo(&self.helo)).await
    }
}

/// One stage of connection setup under its deadline; expiry names the stage.
async fn stage<T>(
    name: &str,
    deadline: Duration,
    work: impl std::future::Future<Output = mail_send::Result<T>>,
) -> Result<T, Unusable> {
    // mail-send bounds some steps itself with the same deadline: either way, name the stage.
    match tokio::time::timeout(deadline, work).await {
        Ok(Err(mail_send::Error::Timeout)) | Err(_) => Err(Unusable::Unreachable(format!(
            "{name}: no answer within {} (connect_timeout)",
            humantime::format_duration(deadline)
        ))),
        Ok(result) => result.map_err(unusable),
    }
}

/// A reply, or why the transaction cannot go on: `421` means the upstream is closing.
fn reply_or_broken(
    result: mail_send::Result<smtp_proto::Response<String>>,
) -> Result<UpstreamReply, Broken> {
    let reply = result
        .map(reply_of)
        .map_err(|e| Broken::Lost(e.to_string()))?;
    if reply.code == 421 {
        return Err(Broken::ServiceUnavailable(reply));
    }
    Ok(reply)
}

/// Writes `bytes` in one go.
async fn write_all<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    bytes: &[u8],
) -> std::io::Result<()> {
    client.stream.write_all(bytes).await?;
    client.stream.flush().await
}

/// Writes `bytes` in one go and reads `replies` replies. (mail-send's `cmds` writes each
/// command separately: a segment and a system call apiece.)
async fn write_and_read<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    bytes: &[u8],
    replies: usize,
) -> mail_send::Result<Vec<smtp_proto::Response<String>>> {
    write_all(client, bytes).await?;
    client.read_many(replies).await
}

fn unusable(error: mail_send::Error) -> Unusable {
    use mail_send::Error;
    match error {
        Error::Io(e) => Unusable::Unreachable(e.to_string()),
        Error::Timeout => Unusable::Unreachable("timed out".into()),
        Error::UnparseableReply => {
            Unusable::Unreachable("connection closed or unparseable reply".into())
        }
        Error::Tls(e) => Unusable::Misconfigured(format!("TLS failed: {e}")),
        Error::InvalidTLSName => {
            Unusable::Misconfigured("host is not a valid TLS server name".into())
        }
        Error::MissingStartTls => Unusable::Misconfigured(
            "upstream does not offer STARTTLS; refusing to send in clear".into(),
        ),
        Error::AuthenticationFailed(response) => {
            Unusable::Misconfigured(format!("AUTH refused: {}", reply_of(response)))
        }
        Error::UnsupportedAuthMechanism => {
            Unusable::Misconfigured("upstream offers neither AUTH PLAIN nor LOGIN".into())
        }
        Error::UnexpectedReply(response) => Unusable::Refused(reply_of(response)),
        other => Unusable::Unreachable(other.to_string()),
    }
}

enum Client {
    /// Boxed: a TLS client is about a kilobyte, a plain one a few words.
    Tls(Box<SmtpClient<TlsStream<TcpStream>>>),
    Plain(SmtpClient<TcpStream>),
}

pub struct Connection {
    client: Client,
    timeouts: Timeouts,
    /// The upstream takes MAIL, RCPT and DATA in one write (RFC 2920).
    pipelining: bool,
    capabilities: Capabilities,
    /// For recycling: SES's endpoints sit behind load balancers whose instances are replaced.
    opened: tokio::time::Instant,
    messages: u32,
}

/// How a transaction ended when it did not end with replies for every recipient.
#[derive(Debug, Clone)]
pub enum Broken {
    /// `421`: the upstream is closing; another upstream may take the message.
    ServiceUnavailable(UpstreamReply),
    /// I/O error or timeout mid-transaction, before the message was complete.
    Lost(String),
    /// The whole message went out but no final reply came: it may have been delivered. Never
    /// retried at once, here or elsewhere, so a stalling upstream does not multiply copies.
    OutcomeUnknown(String),
}

/// The envelope of one transaction, with the body as prepared for this upstream.
pub struct Transaction<'a> {
    pub sender: &'a str,
    /// `BODY=8BITMIME`.
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub recipients: &'a [&'a str],
    pub body: &'a [u8],
}

impl Connection {
    pub fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    /// Whether the connection has carried enough messages or lived long enough to be closed
    /// instead of reused.
    pub fn is_worn_out(&self, max_messages: u32, max_age: Duration) -> bool {
        self.messages >= max_messages || self.opened.elapsed() >= max_age
    }

    async fn command(&mut self, line: &str) -> Result<UpstreamReply, Broken> {
        let result = match &mut self.client {
            Client::Tls(client) => client.cmd(line.as_bytes()).await,
            Client::Plain(client) => client.cmd(line.as_bytes()).await,
        };
        reply_or_broken(result)
    }

    /// Writes the framed body and waits for the final reply.
    async fn send_body(&mut self, body: &[u8]) -> Result<UpstreamReply, Broken> {
        let mut framed = Vec::new();
        wire::write_data(body, &mut framed);
        let data = self.timeouts.data;
        let written = tokio::time::timeout(data, async {
            match &mut self.client {
                Client::Tls(client) => write_all(client, &framed).await,
                Client::Plain(client) => write_all(client, &framed).await,
            }
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(Broken::Lost(error.to_string())),
            Err(_) => return Err(Broken::Lost("could not send the message in time".into())),
        }
        // The final dot is out: from here on the upstream may have taken the message, and
        // silence does not mean it did not (RFC 1047).
        let reply = tokio::time::timeout(data, async {
            match &mut self.client {
                Client::Tls(client) => client.read().await,
                Client::Plain(client) => client.read().await,
            }
        })
        .await;
        match reply {
            Ok(Ok(response)) => reply_or_broken(Ok(response)),
            Ok(Err(error)) => Err(Broken::OutcomeUnknown(format!(
                "the connection failed after the final dot ({error})"
            ))),
            Err(_) => Err(Broken::OutcomeUnknown(format!(
                "no reply to the final dot within {} (data_timeout)",
                humantime::format_duration(data)
            ))),
        }
    }

    /// One transaction: a reply for every recipient, in order. Recipients refused at RCPT get
    /// that refusal; the others get the reply to MAIL, to DATA, or to the end of data.
    pub async fn send(
        &mut self,
        transaction: &Transaction<'_>,
    ) -> Result<Vec<UpstreamReply>, Broken> {
        self.set_timeout(self.timeouts.command);
        self.messages += 1;
        let mut mail = format!("MAIL FROM:<{}>", transaction.sender);
        // RFC 1870 6: SIZE only to a server that offers it.
        if self.capabilities.size.is_some() {
            mail.push_str(&format!(" SIZE={}", transaction.body.len()));
        }
        if transaction.eight_bit_mime {
            mail.push_str(" BODY=8BITMIME");
        }
        if transaction.smtputf8 {
            mail.push_str(" SMTPUTF8");
        }
        mail.push_str("\r\n");
        if self.pipelining {
            return self.send_pipelined(mail, transaction).await;
        }
        let mail_reply = self.command(&mail).await?;
        if !mail_reply.is_positive() {
            self.reset().await;
            return Ok(vec![mail_reply; transaction.recipients.len()]);
        }
        let mut replies = Vec::with_capacity(transaction.recipients.len());
        for recipient in transaction.recipients {
            replies.push(self.command(&format!("RCPT TO:<{recipient}>\r\n")).await?);
        }
        if !replies.iter().any(UpstreamReply::is_positive) {
            self.reset().await;
            return Ok(replies);
        }
        let data_reply = self.command("DATA\r\n").await?;
        let final_reply = if data_reply.code == 354 {
            self.send_body(transaction.body).await?
        } else {
            self.reset().await;
            data_reply
        };
        for reply in replies.iter_mut().filter(|r| r.is_positive()) {
            *reply = final_reply.clone();
        }
        Ok(replies)
    }

    /// MAIL, every RCPT and DATA in one write, then their replies in order (RFC 2920 3.1): one
    /// round trip instead of one per command.
    async fn send_pipelined(
        &mut self,
        mail: String,
        transaction: &Transaction<'_>,
    ) -> Result<Vec<UpstreamReply>, Broken> {
        let mut commands = mail;
        for recipient in transaction.recipients {
            commands.push_str(&format!("RCPT TO:<{recipient}>\r\n"));
        }
        commands.push_str("DATA\r\n");
        let count = transaction.recipients.len() + 2;
        let responses = tokio::time::timeout(self.timeouts.command, async {
            match &mut self.client {
                Client::Tls(client) => write_and_read(client, commands.as_bytes(), count).await,
                Client::Plain(client) => write_and_read(client, commands.as_bytes(), count).await,
            }
        })
        .await
        .map_err(|_| Broken::Lost("no reply to MAIL, RCPT and DATA in time".into()))?
        .map_err(|e| Broken::Lost(e.to_string()))?;
        let mut replies = Vec::with_capacity(responses.len());
        for response in responses {
            let reply = reply_of(response);
            if reply.code == 421 {
                return Err(Broken::ServiceUnavailable(reply));
            }
            replies.push(reply);
        }
        let (Some(data_reply), Some(mail_reply)) = (replies.pop(), replies.first().cloned()) else {
            return Err(Broken::Lost("fewer replies than commands".into()));
        };
        let mut recipient_replies = replies.split_off(1);
        let accepted =
            mail_reply.is_positive() && recipient_replies.iter().any(UpstreamReply::is_positive);
        match (accepted, data_reply.code == 354) {
            // RFC 2920 requires DATA to fail without valid recipients; a server that says
            // 354 anyway cannot be trusted with this connection.
            (false, true) => Err(Broken::Lost(
                "upstream accepted DATA without a valid transaction".into(),
            )),
            (false, false) => {
                self.reset().await;
                if !mail_reply.is_positive() {
                    return Ok(vec![mail_reply; transaction.recipients.len()]);
                }
                Ok(recipient_replies)
            }
            (true, sending) => {
                let final_reply = if sending {
                    self.send_body(transaction.body).await?
                } else {
                    self.reset().await;
                    data_reply
                };
                for reply in recipient_replies.iter_mut().filter(|r| r.is_positive()) {
                    *reply = final_reply.clone();
                }
                Ok(recipient_replies)
            }
        }
    }

    /// RSET after a failed transaction, so the connection can carry the next one. A failure
    /// here only means the connection will be found broken next time.
    async fn reset(&mut self) {
        let _ = self.command("RSET\r\n").await;
    }

    fn set_timeout(&mut self, timeout: Duration) {
        match &mut self.client {
            Client::Tls(client) => client.timeout = timeout,
            Client::Plain(client) => client.timeout = timeout,
        }
    }

    pub async fn quit(mut self) {
        self.set_timeout(Duration::from_secs(5));
        let _ = self.command("QUIT\r\n").await;
    }
}
