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

use super::tls::Tls;
use super::*;
use crate::endpoint::Target;
use lapin::tcp::AsyncTcpStream;
use lapin::uri::SASLMechanism;
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Instant;

/// How one connection attempt ended.
pub(super) enum Attempt {
    /// Connected, with a confirm-mode channel.
    Open(Connection, Channel),
    /// Failed or timed out. `retry_now`: a `connect` for these same settings
    /// came meanwhile, so the next attempt skips the backoff.
    Failed { error: String, retry_now: bool },
    /// A request replaced it: new settings, or `None` to stay disconnected.
    Replaced(Option<AmqpSettings>),
    /// The main thread is gone.
    Stop,
}

/// Where the TCP connection of an attempt stands, shared between the
/// attempt and the connector that lapin's I/O thread runs.
enum Conn {
    /// Not connected yet.
    Pending,
    /// Connected: a duplicate of the socket.
    Up(TcpStream),
    /// The attempt is over: a connection made now is closed at once.
    Over,
}

/// The TCP side of one attempt.
#[derive(Clone)]
struct Socket(Arc<Mutex<Conn>>);

impl Socket {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Conn::Pending)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Conn> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a duplicate of a new connection, unless the attempt is over.
    fn keep(&self, stream: &TcpStream) -> std::io::Result<()> {
        let mut conn = self.lock();
        if matches!(*conn, Conn::Over) {
            let _ = stream.shutdown(Shutdown::Both);
            return Err(abandoned());
        }
        *conn = Conn::Up(stream.try_clone()?);
        Ok(())
    }

    fn is_over(&self) -> bool {
        matches!(*self.lock(), Conn::Over)
    }

    /// Ends the attempt; `cut` shuts its connection down, which ends
    /// lapin's I/O thread wherever it waits (TLS, handshake, channel).
    fn end(&self, cut: bool) {
        if let Conn::Up(dup) = std::mem::replace(&mut *self.lock(), Conn::Over) {
            if cut {
                let _ = dup.shutdown(Shutdown::Both);
            }
        }
    }
}

fn abandoned() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        "connection attempt abandoned",
    )
}

/// One connection attempt. Requests are answered meanwhile: publishes fail
/// at once, a `Connect` with other settings or a `Disconnect` ends the
/// attempt. An attempt that times out or is replaced shuts its connection
/// down (or refuses one that comes later), so that lapin's I/O thread ends;
/// one that failed on its own leaves lapin to close what it opened.
/// `connect-timeout-ms` (or the URI's `connection_timeout`) is read when
/// the attempt starts.
pub(super) async fn try_open(
    settings: &AmqpSettings,
    target: &Target,
    rx: &Receiver<Request>,
    tx: &Sender<Outcome>,
) -> Attempt {
    enum Step {
        Opened(Result<Box<(Connection, Channel)>, String>),
        TimedOut,
        Req(Result<Request, async_channel::RecvError>),
    }
    let ms = target
        .connection_timeout_ms
        .unwrap_or_else(|| crate::config::CONNECT_TIMEOUT_MS.get().unsigned_abs());
    let deadline = Instant::now() + Duration::from_millis(ms);
    let socket = Socket::new();
    let opening = future::or(
        async {
            Step::Opened(
                open(settings, target, &socket, deadline)
                    .await
                    .map(Box::new),
            )
        },
        async {
            sleep_ms(ms).await;
            Step::TimedOut
        },
    );
    let mut opening = std::pin::pin!(opening);
    let mut retry_now = false;
    loop {
        let step = future::or(&mut opening, async { Step::Req(rx.recv().await) }).await;
        let (attempt, cut) = match step {
            Step::Opened(Ok(open)) => {
                let (conn, channel) = *open;
                (Attempt::Open(conn, channel), false)
            }
            Step::Opened(Err(error)) => (Attempt::Failed { error, retry_now }, false),
            Step::TimedOut => (
                Attempt::Failed {
                    error: format!("connection attempt timed out after {ms} ms"),
                    retry_now,
                },
                true,
            ),
            Step::Req(Err(_)) => (Attempt::Stop, true),
            Step::Req(Ok(Request::Publish(b))) => {
                let _ = tx.send(fail_batch(b, "not connected")).await;
                continue;
            }
            Step::Req(Ok(Request::Connect(s))) if *s == *settings => {
                retry_now = true;
                continue;
            }
            Step::Req(Ok(Request::Connect(s))) => (Attempt::Replaced(Some(*s)), true),
            Step::Req(Ok(Request::Disconnect)) => (Attempt::Replaced(None), true),
        };
        socket.end(cut);
        return attempt;
    }
}

/// lapin's URI for one entry of the list.
pub(super) fn uri(t: &Target) -> AMQPUri {
    AMQPUri {
        scheme: if t.tls {
            AMQPScheme::AMQPS
        } else {
            AMQPScheme::AMQP
        },
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: t.user.clone(),
                password: t.password.expose().to_string(),
            },
            host: t.host.clone(),
            port: t.port,
        },
        vhost: t.vhost.clone(),
        query: AMQPQueryString {
            heartbeat: Some(t.heartbeat),
            channel_max: t.channel_max,
            auth_mechanism: t.external.then_some(SASLMechanism::External),
            ..AMQPQueryString::default()
        },
    }
}

/// The addresses of `host`, resolved on a thread of its own (name
/// resolution blocks, and the executor runs the supervisor too) and given
/// up on at `deadline`: a resolver that does not answer cannot stretch an
/// attempt past `connect-timeout-ms`.
async fn resolve(host: &str, port: u16, deadline: Instant) -> std::io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (tx, rx) = async_channel::bounded(1);
    let name = host.to_string();
    std::thread::Builder::new()
        .name("kea-resolve".into())
        .spawn(move || {
            let got = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>);
            let _ = tx.send_blocking(got);
        })?;
    let left = deadline.saturating_duration_since(Instant::now());
    future::or(
        async {
            rx.recv()
                .await
                .unwrap_or_else(|_| Err(std::io::Error::other("the resolver thread ended")))
        },
        async {
            async_io::Timer::after(left).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("resolving '{host}' timed out"),
            ))
        },
    )
    .await
}

/// TCP (and TLS) to the broker by `deadline`, keeping a duplicate of the
/// socket in `socket`. Runs on the module's executor (the first attempt) or
/// on lapin's I/O thread (a reconnect of the protocol header); it blocks
/// neither.
async fn tcp(
    uri: &AMQPUri,
    tls: &Tls,
    socket: &Socket,
    deadline: Instant,
) -> std::io::Result<AsyncTcpStream<async_io::Async<TcpStream>>> {
    let host = uri.authority.host.as_str();
    let mut last = None;
    for addr in resolve(host, uri.authority.port, deadline).await? {
        if socket.is_over() {
            return Err(abandoned());
        }
        // Bounded here too: a SYN that gets no answer would otherwise hold
        // lapin's I/O thread for the kernel's two minutes.
        let left = deadline.saturating_duration_since(Instant::now());
        let connect = future::or(async_io::Async::<TcpStream>::connect(addr), async {
            async_io::Timer::after(left).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("TCP connect to {addr} timed out"),
            ))
        });
        match connect.await {
            Ok(stream) => {
                stream.get_ref().set_nodelay(true)?;
                socket.keep(stream.get_ref())?;
                let stream = AsyncTcpStream::Plain(stream);
                let name = if tls.server_name.is_empty() {
                    host
                } else {
                    tls.server_name.as_str()
                };
                return match (&uri.scheme, &tls.unverified) {
                    (AMQPScheme::AMQP, _) => Ok(stream),
                    (AMQPScheme::AMQPS, Some(connector)) => {
                        stream.into_rustls(connector, name).await
                    }
                    (AMQPScheme::AMQPS, None) => stream.into_tls(name, tls.config.as_ref()).await,
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

async fn open(
    s: &AmqpSettings,
    t: &Target,
    socket: &Socket,
    deadline: Instant,
) -> Result<(Connection, Channel), String> {
    // A name per node, so the broker's management UI tells nodes apart.
    let name = format!("key_evt_amqp {}", s.node);
    let props = ConnectionProperties::default().with_connection_name(name.as_str().into());
    let u = uri(t);
    let tls = if t.tls {
        super::tls::client(s)?
    } else {
        Tls::default()
    };
    let runtime = lapin::runtime::default_runtime().map_err(|e| e.to_string())?;
    // The TCP (and TLS) connection is made before lapin's connector runs:
    // lapin 4.12 leaks about 9.5 KB (its internal RPC task and the pending
    // protocol-header reply) when the connect closure it is given fails, so
    // a broker that refuses for hours would grow memory by every retry.
    let first = tcp(&u, &tls, socket, deadline)
        .await
        .map_err(|e| lapin::Error::from(e).to_string())?;
    let first = Mutex::new(Some(first));
    let socket = socket.clone();
    let tls = Arc::new(tls);
    let connect = async move |uri: AMQPUri, _runtime| {
        let ready = first.lock().unwrap_or_else(|e| e.into_inner()).take();
        match ready {
            Some(stream) => Ok(stream),
            // lapin connects again only to resend the protocol header.
            None => tcp(&uri, &tls, &socket, deadline)
                .await
                .map_err(lapin::Error::from),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A connected pair on loopback: (ours, the peer's).
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let ours = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (peer, _) = l.accept().expect("accept");
        (ours, peer)
    }

    fn peer_sees_eof(mut peer: TcpStream) -> bool {
        peer.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        matches!(peer.read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn ending_a_cut_attempt_shuts_its_connection_down() {
        let (ours, peer) = pair();
        let socket = Socket::new();
        socket.keep(&ours).expect("kept");
        socket.end(true);
        assert!(peer_sees_eof(peer));
    }

    #[test]
    fn a_connection_made_after_the_attempt_ended_is_refused() {
        let (ours, peer) = pair();
        let socket = Socket::new();
        socket.end(true);
        assert!(socket.is_over());
        assert!(socket.keep(&ours).is_err());
        assert!(peer_sees_eof(peer));
    }

    #[test]
    fn a_successful_attempt_keeps_its_connection() {
        let (ours, mut peer) = pair();
        let socket = Socket::new();
        socket.keep(&ours).expect("kept");
        socket.end(false);
        drop(socket);
        std::io::Write::write_all(&mut &ours, b"x").expect("still open");
        let mut b = [0u8; 1];
        peer.read_exact(&mut b).expect("read");
        assert_eq!(&b, b"x");
    }
}
