//! Typed failures of one exchange, and the single mapping from a failure to what the client
//! sees. Each failure knows which side caused it, so a client that hangs up is never blamed on
//! the canary.

use http::StatusCode;

use crate::http::canned::Canned;
use crate::upstream::body::ClientFailure;
use crate::upstream::h2::H2Error;

/// Why an exchange could not be completed normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeError {
    /// The upstream refused or could not be reached (TCP connect failed or timed out).
    Connect,
    /// No response headers within `timeouts.request` of the request being sent in full.
    Timeout,
    /// The upstream closed or reset the connection before its response headers.
    Reset,
    /// The upstream answered something that is not HTTP.
    Protocol,
    /// The client's request body broke off: the client's fault.
    ClientBody,
    /// The client's request body stalled past `timeouts.body_read`: the client's fault.
    ClientStalled,
}

/// Who caused a failure, which decides whether it counts against a cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    Upstream,
    Client,
}

impl ExchangeError {
    pub fn status(self) -> StatusCode {
        match self {
            ExchangeError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ExchangeError::ClientBody => StatusCode::BAD_REQUEST,
            ExchangeError::ClientStalled => StatusCode::REQUEST_TIMEOUT,
            ExchangeError::Connect | ExchangeError::Reset | ExchangeError::Protocol => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    pub fn blame(self) -> Blame {
        match self {
            ExchangeError::ClientBody | ExchangeError::ClientStalled => Blame::Client,
            _ => Blame::Upstream,
        }
    }

    /// The `kind` label of `canary_upstream_failures_total`.
    pub fn kind(self) -> &'static str {
        match self {
            ExchangeError::Connect => "connect",
            ExchangeError::Timeout => "timeout",
            ExchangeError::Reset => "reset",
            ExchangeError::Protocol => "protocol",
            ExchangeError::ClientBody => "client_body",
            ExchangeError::ClientStalled => "body_timeout",
        }
    }

    /// What the client is answered. A client that broke its own request is answered (if it
    /// still listens) and its connection closed: what else it sent cannot be trusted.
    pub fn canned(self) -> Canned {
        match self.blame() {
            Blame::Upstream => Canned::keep(self.status(), self.message()),
            Blame::Client => Canned::closing(self.status(), self.message()),
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            ExchangeError::Connect => "bad gateway: the upstream refused or could not be reached\n",
            ExchangeError::Timeout => "gateway timeout: the upstream did not answer in time\n",
            ExchangeError::Reset => {
                "bad gateway: the upstream closed the connection before answering\n"
            }
            ExchangeError::Protocol => "bad gateway: the upstream sent an invalid response\n",
            ExchangeError::ClientBody => "bad request: the request body could not be read\n",
            ExchangeError::ClientStalled => "request timeout: the request body stalled\n",
        }
    }

    /// Classifies an error of the pooled client. `client` says whether our own
    /// request-body stream saw the client fail first: then it is the client's.
    pub fn classify(
        err: &hyper_util::client::legacy::Error,
        client: Option<ClientFailure>,
    ) -> Self {
        match client {
            Some(c) => Self::client(c),
            None if err.is_connect() => ExchangeError::Connect,
            None => Self::on_connection(err),
        }
    }

    /// Classifies an error of the HTTP/2 client (gRPC), as `classify` does.
    pub fn classify_h2(err: &H2Error, client: Option<ClientFailure>) -> Self {
        match (client, err) {
            (Some(c), _) => Self::client(c),
            (None, H2Error::Connect(_)) => ExchangeError::Connect,
            (None, H2Error::Exchange(e)) => Self::on_connection(e),
        }
    }

    pub fn client(c: ClientFailure) -> Self {
        match c {
            ClientFailure::Aborted => ExchangeError::ClientBody,
            ClientFailure::Stalled => ExchangeError::ClientStalled,
        }
    }

    /// A failure on an established connection: an answer that is not HTTP, or a reset.
    fn on_connection(err: &(dyn std::error::Error + 'static)) -> Self {
        let mut source = Some(err);
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<hyper::Error>() {
                if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                    return ExchangeError::Protocol;
                }
                return ExchangeError::Reset;
            }
            source = s.source();
        }
        ExchangeError::Reset
    }
}
