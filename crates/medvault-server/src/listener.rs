//! The TLS listener and the connection loop.
//!
//! [`TlsListener`] accepts TCP connections and runs each TLS handshake in its own
//! task under a timeout (one slow client never blocks the others).
//! [`serve_connections`] hands finished connections to hyper with bounded header
//! read time and HTTP/2 keep-alive, attaches the per-connection
//! [`ConnectionInfo`] to every request, and on shutdown stops accepting and lets
//! in-flight requests finish.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt as _;

use crate::client_auth::ClientCertificate;

/// How many finished handshakes may wait for `accept`.
const ACCEPT_QUEUE: usize = 256;

/// A connection whose handshake finished, with its slot in the connection limits.
type Accepted = (TlsStream<TcpStream>, SocketAddr, ConnectionSlot);

/// Open connections per peer address.
type PerIp = Arc<std::sync::Mutex<HashMap<IpAddr, usize>>>;

/// How many connections a listener holds at once.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// In all (handshaking or open).
    pub max_connections: usize,
    /// From one peer address.
    pub max_connections_per_ip: usize,
}

/// A connection's place in both limits; released when dropped.
#[derive(Debug)]
pub struct ConnectionSlot {
    _global: OwnedSemaphorePermit,
    ip: IpAddr,
    per_ip: PerIp,
}

impl ConnectionSlot {
    fn take(
        global: OwnedSemaphorePermit,
        per_ip: &PerIp,
        ip: IpAddr,
        max_per_ip: usize,
    ) -> Option<Self> {
        let mut counts = per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            return None;
        }
        *count += 1;
        Some(Self {
            _global: global,
            ip,
            per_ip: per_ip.clone(),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self
            .per_ip
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = counts.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// Accepts TCP connections and completes TLS handshakes in the background.
///
/// At most `max_connections` connections (handshaking or open) exist at once;
/// at the limit the listener stops accepting, so further clients wait in the
/// kernel's backlog instead of consuming tasks and file descriptors. One peer
/// address gets at most `max_connections_per_ip`; more are closed at once.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    ready: mpsc::Receiver<Accepted>,
    accept_loop: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` with `acceptor`.
    pub fn new(
        tcp: TcpListener,
        acceptor: TlsAcceptor,
        handshake_timeout: Duration,
        limits: ConnectionLimits,
    ) -> std::io::Result<Self> {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        let max_per_ip = limits.max_connections_per_ip;
        let per_ip: PerIp = Arc::default();
        let local_addr = tcp.local_addr()?;
        let (sender, ready) = mpsc::channel(ACCEPT_QUEUE);
        let accept_loop = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (stream, remote) = match tcp.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Some(slot) = ConnectionSlot::take(slot, &per_ip, remote.ip(), max_per_ip)
                else {
                    tracing::info!(peer = %remote.ip(), "connection refused: too many from this address");
                    drop(stream);
                    continue;
                };
                let acceptor = acceptor.clone();
                let handshake_done = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = handshake_done.send((tls, remote, slot)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
                if sender.is_closed() {
                    break;
                }
            }
        });
        Ok(Self {
            local_addr,
            ready,
            accept_loop,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl TlsListener {
    /// The next connection whose handshake finished.
    async fn accept(&mut self) -> Accepted {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// What handlers know about the connection a request came on (extract it with
/// `ConnectInfo<ConnectionInfo>`).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The client certificate presented in the handshake, parsed (mTLS listener only).
    pub client_certificate: Option<Arc<ClientCertificate>>,
}

impl ConnectionInfo {
    fn of(stream: &TlsStream<TcpStream>, remote_addr: SocketAddr) -> Self {
        let (_, connection) = stream.get_ref();
        let client_certificate = connection
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|leaf| ClientCertificate::parse(leaf).ok())
            .map(Arc::new);
        Self {
            remote_addr,
            client_certificate,
        }
    }
}

/// Limits of the HTTP layer.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Longest a client may take to send a request head (slow-loris bound).
    pub header_read_timeout: Duration,
    /// Most concurrent HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

/// Serves `router` on every connection `listener` yields until `shutdown` turns
/// true; then stops accepting and returns once every in-flight request finished.
pub async fn serve_connections(
    mut listener: TlsListener,
    router: axum::Router,
    limits: HttpLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(64 * 1024)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    loop {
        let (stream, remote_addr, slot) = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let info = ConnectionInfo::of(&stream, remote_addr);
        let router = router.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(info.clone()));
            router.clone().oneshot(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = watched.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
