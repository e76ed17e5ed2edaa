//! A TCP proxy between the module and the broker that can cut, stall or
//! half-close the connections passing through it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Ctl {
    stalled: AtomicBool,
    /// Stalls only the broker-to-module direction.
    stalled_down: AtomicBool,
    refuse: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
    /// Connections accepted (refused ones too).
    accepted: AtomicUsize,
}

/// A running proxy.
pub struct Proxy {
    /// The port to point the module at.
    pub port: u16,
    ctl: Arc<Ctl>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, ctl: Arc<Ctl>, down: bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while ctl.stalled.load(Ordering::Relaxed)
            || (down && ctl.stalled_down.load(Ordering::Relaxed))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Proxy {
    /// Starts a proxy to `127.0.0.1:target`.
    pub fn new(target: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let ctl = Arc::new(Ctl::default());
        let c = Arc::clone(&ctl);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                c.accepted.fetch_add(1, Ordering::Relaxed);
                if c.refuse.load(Ordering::Relaxed) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                if let (Ok(c1), Ok(s1)) = (client.try_clone(), server.try_clone()) {
                    let mut list = c.streams.lock().unwrap_or_else(|e| e.into_inner());
                    list.push(c1);
                    list.push(s1);
                }
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                let (ca, cb) = (Arc::clone(&c), Arc::clone(&c));
                std::thread::spawn(move || pump(client, s2, ca, false));
                std::thread::spawn(move || pump(server, c2, cb, true));
            }
        });
        Self { port, ctl }
    }

    /// Connections the proxy has accepted so far.
    pub fn accepted(&self) -> usize {
        self.ctl.accepted.load(Ordering::Relaxed)
    }

    /// Resets every connection through the proxy.
    pub fn cut(&self) {
        let mut list = self.ctl.streams.lock().unwrap_or_else(|e| e.into_inner());
        for s in list.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Closes the broker-to-module direction only: the module reads EOF while its writes still go through.
    pub fn half_close(&self) {
        let list = self.ctl.streams.lock().unwrap_or_else(|e| e.into_inner());
        // Streams are stored as (client, server) pairs; shutting the client's write side ends broker->module.
        for s in list.iter().step_by(2) {
            let _ = s.shutdown(Shutdown::Write);
        }
    }

    /// Stops (true) or resumes (false) forwarding bytes, keeping connections open.
    pub fn stall(&self, on: bool) {
        self.ctl.stalled.store(on, Ordering::Relaxed);
    }

    /// Stops (true) or resumes (false) only the broker-to-module direction:
    /// publishes reach the broker, its confirms and heartbeats do not.
    pub fn stall_down(&self, on: bool) {
        self.ctl.stalled_down.store(on, Ordering::Relaxed);
    }

    /// Closes new connections at once while true.
    pub fn refuse(&self, on: bool) {
        self.ctl.refuse.store(on, Ordering::Relaxed);
    }
}

/// A peer that accepts TCP connections and never says a word, like a broker
/// that is stopped (SIGSTOP) or a port that is not AMQP. It counts the
/// connections it took and those still open (the other side has not closed).
pub struct Silent {
    /// The port to point the module at.
    pub port: u16,
    accepted: Arc<std::sync::atomic::AtomicUsize>,
    open: Arc<std::sync::atomic::AtomicUsize>,
}

impl Silent {
    /// Starts listening.
    pub fn new() -> Self {
        use std::sync::atomic::AtomicUsize;
        let listener = TcpListener::bind("127.0.0.1:0").expect("silent bind");
        let port = listener.local_addr().expect("silent addr").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (a, o) = (Arc::clone(&accepted), Arc::clone(&open));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                o.fetch_add(1, Ordering::SeqCst);
                a.fetch_add(1, Ordering::SeqCst);
                let o = Arc::clone(&o);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self {
            port,
            accepted,
            open,
        }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Connections the other side has not closed yet.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }
}
