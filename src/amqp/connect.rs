//! Opening a connection: one attempt, bounded by `connect-timeout-ms`, that
//! answers requests while it waits and can be cut short.
//!
//! lapin's async connect has no timeout of its own: a broker that accepts TCP
//! and then stalls (SIGSTOP, overload), a TLS handshake that hangs, or a peer
//! that is not AMQP at all would hold the attempt forever. Dropping the
//! future is not enough either: lapin's I/O thread owns the socket and would
//! keep waiting on it. So the TCP connection is made here, through lapin's
//! connector hook, and a duplicate of its descriptor is kept: shutting it
//! down ends lapin's I/O thread and the attempt with it.

use super::*;
use lapin::tcp::AsyncTcpStream;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};

/// How one connection attempt ended.
pub(super) enum Attempt {
    /// Connected, with a confirm-mode channel.
    Open(Connection, Channel),
    /// Failed or timed out.
    Failed(String),
    /// A request replaced it: new settings, or `None` to stay disconnected.
    Replaced(Option<AmqpSettings>),
    /// The main thread is gone.
    Stop,
}

/// The socket of the attempt in progress (a duplicate descriptor).
type Socket = Arc<Mutex<Option<TcpStream>>>;

/// One connection attempt. Requests are answered meanwhile: publishes fail
/// at once, a `Connect` with other settings or a `Disconnect` ends the
/// attempt. An attempt that ends without a connection shuts its socket
/// down, so nothing of it stays behind.
pub(super) async fn try_open(
    settings: &AmqpSettings,
    rx: &Receiver<Request>,
    tx: &Sender<Outcome>,
) -> Attempt {
    enum Step {
        Done(Attempt),
        Req(Result<Request, async_channel::RecvError>),
    }
    let ms = crate::config::CONNECT_TIMEOUT_MS.get().unsigned_abs();
    let socket = Socket::default();
    let opening = future::or(
        async {
            match open(settings, &socket).await {
                Ok((conn, channel)) => Attempt::Open(conn, channel),
                Err(e) => Attempt::Failed(e),
            }
        },
        async {
            sleep_ms(ms).await;
            Attempt::Failed(format!("connection attempt timed out after {ms} ms"))
        },
    );
    let mut opening = std::pin::pin!(opening);
    let attempt = loop {
        let step = future::or(async { Step::Done((&mut opening).await) }, async {
            Step::Req(rx.recv().await)
        })
        .await;
        match step {
            Step::Done(done) => break done,
            Step::Req(Err(_)) => break Attempt::Stop,
            Step::Req(Ok(Request::Publish(b))) => {
                let _ = tx.send(fail_batch(b, "not connected")).await;
            }
            Step::Req(Ok(Request::Connect(s))) if s == *settings => {}
            Step::Req(Ok(Request::Connect(s))) => break Attempt::Replaced(Some(s)),
            Step::Req(Ok(Request::Disconnect)) => break Attempt::Replaced(None),
        }
    };
    let dup = socket.lock().ok().and_then(|mut s| s.take());
    if let Some(dup) = dup {
        if !matches!(attempt, Attempt::Open(..)) {
            let _ = dup.shutdown(Shutdown::Both);
        }
    }
    attempt
}

pub(super) fn uri(s: &AmqpSettings) -> AMQPUri {
    AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: s.user.clone(),
                password: s.password.expose().to_string(),
            },
            host: s.host.clone(),
            port: s.port,
        },
        vhost: s.vhost.clone(),
        query: AMQPQueryString {
            heartbeat: Some(s.heartbeat),
            ..AMQPQueryString::default()
        },
    }
}

/// TCP (and TLS) to the broker, keeping a duplicate of the socket in `socket`.
/// Runs on lapin's I/O thread, where blocking name resolution is fine.
async fn tcp(
    uri: &AMQPUri,
    tls: &lapin::tcp::OwnedTLSConfig,
    socket: &Socket,
) -> std::io::Result<AsyncTcpStream<async_io::Async<TcpStream>>> {
    let host = uri.authority.host.as_str();
    let ms = crate::config::CONNECT_TIMEOUT_MS.get().unsigned_abs();
    let mut last = None;
    for addr in (host, uri.authority.port).to_socket_addrs()? {
        // Bounded here too: a SYN that gets no answer would otherwise hold
        // lapin's I/O thread for the kernel's two minutes.
        let connect = future::or(async_io::Async::<TcpStream>::connect(addr), async {
            sleep_ms(ms).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TCP connect to {addr} timed out after {ms} ms"),
            ))
        });
        match connect.await {
            Ok(stream) => {
                stream.get_ref().set_nodelay(true)?;
                if let Ok(mut slot) = socket.lock() {
                    *slot = Some(stream.get_ref().try_clone()?);
                }
                let stream = AsyncTcpStream::Plain(stream);
                return match uri.scheme {
                    AMQPScheme::AMQPS => stream.into_tls(host, tls.as_ref()).await,
                    AMQPScheme::AMQP => Ok(stream),
                };
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("'{host}' resolves to no address"),
        )
    }))
}

async fn open(s: &AmqpSettings, socket: &Socket) -> Result<(Connection, Channel), String> {
    // A name per node, so the broker's management UI tells nodes apart.
    let name = format!("key_evt_amqp {}", s.node);
    let props = ConnectionProperties::default().with_connection_name(name.as_str().into());
    let mut u = uri(s);
    let mut tls = lapin::tcp::OwnedTLSConfig::default();
    if s.tls {
        u.scheme = AMQPScheme::AMQPS;
        if !s.tls_ca_file.is_empty() {
            let pem = std::fs::read_to_string(&s.tls_ca_file)
                .map_err(|e| format!("tls-ca-file '{}': {e}", s.tls_ca_file))?;
            tls.cert_chain = Some(pem);
        }
    }
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    let socket = Arc::clone(socket);
    let tls = Arc::new(tls);
    let connect = async move |uri: AMQPUri, _runtime| {
        tcp(&uri, &tls, &socket).await.map_err(lapin::Error::from)
    };
    let conn = Connection::connector(u, runtime, connect, props)
        .await
        .map_err(|e| e.to_string())?;
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok((conn, channel))
}
