//! Connections to the axon: the port is open to the internet, so each connection is bounded
//! before any request on it is read (a place per address and in all, a header deadline, a
//! write-stall deadline, a lifetime and a request count; see `limits`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{HeaderValue, CONNECTION};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::request::handle;
use super::Axon;
use crate::limits::{self, Connections, StallGuardedIo};

/// Accepts connections until the task is dropped. A connection over the caps is closed as soon
/// as it is accepted (cheapest refusal: no byte read, no task spawned).
pub async fn serve(listener: TcpListener, axon: Arc<Axon>) {
    let connections = Connections::new(limits::connection_cap(), axon.connections_per_address);
    tracing::info!(
        "axon: at most {} connections, {} per address",
        connections.cap(),
        axon.connections_per_address
    );
    let mut last_warning: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let guard = match connections.enter(peer.ip()) {
            Ok(g) => g,
            Err(why) => {
                axon.stats.turned_away.fetch_add(1, Ordering::Relaxed);
                // One line a minute at most: a flood must not flood the journal.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    last_warning = Some(Instant::now());
                    tracing::warn!(
                        "axon: turning connections away ({why:?}, {} open; latest from {})",
                        connections.open(),
                        peer.ip()
                    );
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let axon = axon.clone();
        tokio::spawn(async move {
            serve_connection(axon, stream, peer).await;
            drop(guard);
        });
    }
}

/// One connection, within its deadlines and request count.
async fn serve_connection(axon: Arc<Axon>, stream: tokio::net::TcpStream, peer: SocketAddr) {
    let count = Arc::new(AtomicU32::new(0));
    let service = hyper::service::service_fn(move |req| {
        let (axon, count) = (axon.clone(), count.clone());
        async move {
            let n = count.fetch_add(1, Ordering::Relaxed) + 1;
            let mut response = handle(&axon, req, peer).await;
            if n >= limits::REQUESTS_PER_CONNECTION {
                response
                    .headers_mut()
                    .insert(CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let io = TokioIo::new(StallGuardedIo::new(stream, limits::WRITE_STALL));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits::HEADER_TIMEOUT)
        .max_buf_size(limits::MAX_HEADER_BYTES.max(8192))
        .keep_alive(true)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = tokio::time::sleep(limits::CONNECTION_LIFETIME) => {
            // Finish the request in progress, then close; a peer that will not let it finish
            // is dropped after the grace period.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(limits::CLOSE_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("connection from {peer} dropped at the end of its lifetime");
                    Ok(())
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!("connection from {peer}: {e}");
    }
}
