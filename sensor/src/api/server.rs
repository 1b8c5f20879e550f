//! The API's listener: connections, their limits and timeouts, TLS, and stopping.
//!
//! Rules:
//! - At most [`ServerLimits::max_connections`] connections are served at once. One more
//!   gets a short `503` and is closed, so a flood of idle sockets cannot take the sensor's
//!   descriptors (the store needs them).
//! - A client must send a whole request head within [`ServerLimits::header_timeout`] of
//!   connecting or of its previous response (hyper's header read timeout covers idle
//!   keep-alive connections too), and finish a TLS handshake within the same time: slow
//!   and idle clients are closed.
//! - On stop no connection is accepted; open ones are asked to close after the response in
//!   flight, and whatever is still open [`ServerLimits::shutdown_grace`] later is dropped,
//!   so the sensor exits within seconds whatever clients hold open (the chart gives it 30).
//! - With TLS (`--tls-cert`, `--tls-key`: PEM files) every connection is TLS 1.2 or 1.3;
//!   the files are read once at start.
use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};

use crate::shutdown::Shutdown;

/// The listener's limits (see the module rules).
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time a client has for its request head (and for a TLS handshake).
    pub header_timeout: Duration,
    /// Time open connections get to finish once the sensor stops.
    pub shutdown_grace: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// A TLS configuration could not be made from the files given.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("--tls-cert {path}: {reason}")]
    Certificate { path: String, reason: String },
    #[error("--tls-key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("--tls-cert and --tls-key do not go together: {0}")]
    Pair(String),
}

/// The server side of TLS, from PEM files.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
    let certificate_error = |reason: String| TlsError::Certificate {
        path: cert.display().to_string(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| certificate_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(certificate_error("no certificate in the file".into()));
    }
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        reason: e.to_string(),
    })?;
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, private_key)
            .map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves `app` on `listener` until a stop is requested, by the rules.
pub async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: ServerLimits,
    stop: Shutdown,
) {
    let limit = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closing_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stopped(&stop) => break,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                log::warn!("API: cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&limit).try_acquire_owned() else {
            connections.spawn(refuse(stream));
            continue;
        };
        let (app, tls, closing) = (app.clone(), tls.clone(), closing_rx.clone());
        connections.spawn(async move {
            let _permit = permit;
            let timeout = limits.header_timeout;
            match tls {
                None => serve_connection(stream, app, timeout, closing).await,
                Some(acceptor) => match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, app, timeout, closing).await,
                    Ok(Err(e)) => log::debug!("API: TLS handshake failed: {e}"),
                    Err(_) => log::debug!("API: TLS handshake timed out"),
                },
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let open = connections.len();
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        log::info!(
            "API: {} of {open} connections still open after {:?}; closed",
            connections.len(),
            limits.shutdown_grace
        );
        connections.abort_all();
    }
}

/// Waits until the sensor stops.
async fn stopped(stop: &Shutdown) {
    while !stop.requested() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves one connection, closing it gracefully when the sensor stops.
async fn serve_connection<S>(
    stream: S,
    app: Router,
    header_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                log::debug!("API: connection ended: {e}");
            }
        }
        // The value only ever turns true, once: any change means stop.
        _ = closing.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Answers a connection over the limit with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: 55\r\nconnection: close\r\nretry-after: 1\r\n\r\n{\"error\":\"too many connections at once; retry shortly\"}";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(BUSY)).await;
    let _ = stream.shutdown().await;
}

/// Where the API listens, for the log.
#[must_use]
pub fn describe(addr: SocketAddr, tls: bool) -> String {
    format!("{}://{addr}", if tls { "https" } else { "http" })
}
