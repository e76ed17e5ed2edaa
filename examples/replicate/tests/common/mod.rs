//! A throwaway redis-server for the integration tests: a free port, a temp
//! directory, no persistence; killed and removed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One running server.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

/// The server binary: `$REPLICATE_REDIS_SERVER`, else `redis-server`.
fn binary() -> String {
    std::env::var("REPLICATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn unique_dir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "replicate-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

impl Server {
    /// Starts a server and waits until it answers PING (another port if the
    /// one it got was taken meanwhile).
    pub fn start() -> Self {
        for _ in 0..5 {
            let dir = unique_dir();
            std::fs::create_dir_all(&dir).expect("temp dir");
            let port = free_port();
            let child = Command::new(binary())
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .arg("--logfile")
                .arg(dir.join("redis.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server");
            let mut server = Self { port, dir, child };
            if server.wait_ready() {
                return server;
            }
        }
        panic!("redis-server did not start in 5 attempts");
    }

    /// Polls PING until it answers (true) or the process exits (false).
    fn wait_ready(&mut self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let pong = self
                .client()
                .get_connection()
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "redis-server on port {} did not answer PING in 20 s",
            self.port
        );
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// A client for it.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("client")
    }

    /// A connection to db 0.
    pub fn conn(&self) -> redis::Connection {
        self.client().get_connection().expect("connect")
    }

    /// A connection to `db`.
    pub fn conn_db(&self, db: u8) -> redis::Connection {
        let mut c = self.conn();
        redis::cmd("SELECT").arg(db).exec(&mut c).expect("select");
        c
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs a command given as words, returning the reply as `T`.
pub fn run<T: redis::FromRedisValue>(c: &mut redis::Connection, words: &[&str]) -> T {
    let mut cmd = redis::cmd(words[0]);
    for w in &words[1..] {
        cmd.arg(*w);
    }
    cmd.query(c).unwrap_or_else(|e| panic!("{words:?}: {e}"))
}

/// A message body: the fixed members plus `extra` (an object).
pub fn body(db: i64, event: &str, key: serde_json::Value, extra: serde_json::Value) -> Vec<u8> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(1);
    let mut o = serde_json::json!({
        "id": format!("test-{}", SEQ.fetch_add(1, Ordering::Relaxed)),
        "time": 1_764_572_700u64,
        "node": "6379/test",
        "db": db,
        "event": event,
        "key": key,
    });
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            o.insert(k.clone(), v.clone());
        }
    }
    o.to_string().into_bytes()
}

/// Unix ms now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .expect("clock")
}
