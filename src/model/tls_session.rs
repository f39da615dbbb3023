/// What a client's TLS session negotiated, as the Received header reports it (RFC 8314 7.4
/// asks for the version and cipher in trace fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The IANA name, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
}
