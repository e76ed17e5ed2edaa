//! Where the broker is: the address list of `host` (`host[:port],...`),
//! the `uri` setting (the RabbitMQ URI spec, one URI or a comma-separated
//! list), what one connection attempt uses ([`Target`]), and the order in
//! which the entries are tried ([`Rotation`]). Pure: no Redis, no network.

use crate::config::{AmqpSettings, Secret};

/// One `host[:port]` entry of the address list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or IP literal (IPv6 without its brackets).
    pub host: String,
    /// The entry's port, if it gave one.
    pub port: Option<u16>,
}

/// `host:port`, with an IPv6 literal in brackets.
pub fn address(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn port_of(s: &str) -> Result<u16, &'static str> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or("a port must be 1..65535")
}

/// Splits `host[:port]` (or `[v6]:port`) into host and port.
fn host_port(entry: &str) -> Result<Endpoint, &'static str> {
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("an IPv6 literal needs its closing ]")?;
        let port = match after {
            "" => None,
            p => Some(port_of(
                p.strip_prefix(':')
                    .ok_or("only :port may follow an IPv6 literal")?,
            )?),
        };
        (host, port)
    } else {
        match entry.split_once(':') {
            None => (entry, None),
            Some((_, p)) if p.contains(':') => {
                return Err("IPv6 literals go in brackets: [::1]:5672");
            }
            Some((h, p)) => (h, Some(port_of(p)?)),
        }
    };
    if host.is_empty() {
        return Err("an entry has no host");
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == '@')
    {
        return Err("a host must not contain spaces, / or @");
    }
    Ok(Endpoint {
        host: host.to_string(),
        port,
    })
}

/// Parses the address list `host[:port],host[:port],...`; spaces around
/// entries are ignored, an empty entry is refused.
pub fn parse_hosts(list: &str) -> Result<Vec<Endpoint>, &'static str> {
    list.split(',').map(|e| host_port(e.trim())).collect()
}

/// One URI of the `uri` setting; what it leaves out is `None` (the
/// separate setting applies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriEntry {
    /// `amqps`.
    pub tls: bool,
    /// Host (`localhost` when the URI has none).
    pub host: String,
    /// Port (5672, or 5671 for `amqps`, when the URI has none).
    pub port: u16,
    /// User name.
    pub user: Option<String>,
    /// Password.
    pub password: Option<Secret>,
    /// Virtual host (the path, percent-decoded; `None` without a path).
    pub vhost: Option<String>,
    /// `heartbeat` query parameter, seconds.
    pub heartbeat: Option<u16>,
    /// `connection_timeout` query parameter, milliseconds.
    pub connection_timeout_ms: Option<u64>,
    /// `channel_max` query parameter.
    pub channel_max: Option<u16>,
    /// `auth_mechanism` query parameter: `Some(true)` for `external`.
    pub external: Option<bool>,
}

/// Percent-decodes `s` (UTF-8 required).
fn decode(s: &str) -> Result<String, &'static str> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b.get(i + 1..i + 3).ok_or("a % escape is cut short")?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err("a bad % escape");
            }
            let hex = std::str::from_utf8(hex).map_err(|_| "a bad % escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "a bad % escape")?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let s = String::from_utf8(out).map_err(|_| "a part does not decode to UTF-8")?;
    if s.contains('\0') {
        return Err("a part decodes to a NUL byte");
    }
    Ok(s)
}

/// Parses one `amqp://` or `amqps://` URI per the RabbitMQ URI spec. The
/// error never quotes the URI (it may hold a password).
pub fn parse_uri(uri: &str) -> Result<UriEntry, &'static str> {
    let (tls, rest) = if let Some(r) = uri.strip_prefix("amqp://") {
        (false, r)
    } else if let Some(r) = uri.strip_prefix("amqps://") {
        (true, r)
    } else {
        return Err("must start with amqp:// or amqps://");
    };
    let rest = rest.split('#').next().unwrap_or_default();
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(decode(n)?), Some(Secret::new(decode(p)?))),
            None => (Some(decode(u)?), None),
        },
    };
    let default_port = if tls { 5671 } else { 5672 };
    let (host, port) = if hostport.is_empty() {
        ("localhost".to_string(), default_port)
    } else {
        let e = host_port(hostport)?;
        let host = if hostport.starts_with('[') {
            e.host
        } else {
            decode(&e.host)?
        };
        // The decoded host reaches INFO and the log: no control character,
        // space or URI delimiter may hide in an escape.
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_control() || c.is_whitespace() || "/@,?#%".contains(c))
        {
            return Err("the host is not a plain host name");
        }
        (host, e.port.unwrap_or(default_port))
    };
    let vhost = match path {
        None => None,
        Some(p) if p.contains('/') => {
            return Err("the vhost is one path segment: write / as %2F");
        }
        Some(p) => Some(decode(p)?),
    };
    let mut e = UriEntry {
        tls,
        host,
        port,
        user,
        password,
        vhost,
        heartbeat: None,
        connection_timeout_ms: None,
        channel_max: None,
        external: None,
    };
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v)?;
        match decode(k)?.as_str() {
            "heartbeat" => e.heartbeat = Some(v.parse().map_err(|_| "heartbeat must be 0..65535")?),
            "connection_timeout" => {
                e.connection_timeout_ms = Some(
                    v.parse()
                        .ok()
                        .filter(|ms| *ms > 0)
                        .ok_or("connection_timeout must be a positive number of ms")?,
                )
            }
            "channel_max" => {
                e.channel_max = Some(v.parse().map_err(|_| "channel_max must be 0..65535")?)
            }
            "auth_mechanism" => {
                e.external = Some(match v.to_ascii_lowercase().as_str() {
                    "external" => true,
                    "plain" => false,
                    _ => return Err("auth_mechanism must be plain or external"),
                })
            }
            // The spec lets clients ignore what they do not know
            // (frame_max, the Erlang client's TLS options).
            _ => {}
        }
    }
    Ok(e)
}

/// Parses the `uri` setting: one URI, or several separated by commas (a
/// comma followed by `amqp://` or `amqps://` starts the next one, so a
/// comma inside a password needs no escaping). Empty: no URI.
pub fn parse_uri_list(s: &str) -> Result<Vec<UriEntry>, String> {
    if s.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut starts = vec![0];
    for (i, _) in s.match_indices(',') {
        let next = s[i + 1..].trim_start();
        if next.starts_with("amqp://") || next.starts_with("amqps://") {
            starts.push(i + 1);
        }
    }
    starts.push(s.len() + 1);
    starts
        .windows(2)
        .enumerate()
        .map(|(n, w)| {
            let part = &s[w[0]..w[1] - 1];
            parse_uri(part.trim()).map_err(|why| format!("entry {}: {why}", n + 1))
        })
        .collect()
}

/// What one connection attempt uses: one entry of the list, with every
/// setting resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `amqps`.
    pub tls: bool,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// Virtual host.
    pub vhost: String,
    /// Heartbeat, seconds.
    pub heartbeat: u16,
    /// The URI's `connection_timeout` (else `connect-timeout-ms` applies).
    pub connection_timeout_ms: Option<u64>,
    /// The URI's `channel_max`.
    pub channel_max: Option<u16>,
    /// SASL EXTERNAL (the client certificate names the user).
    pub external: bool,
}

impl Target {
    /// `host:port` (no credentials): what INFO and the log show.
    pub fn address(&self) -> String {
        address(&self.host, self.port)
    }
}

/// Every entry to try, in list order. With `uri` set, the URIs win: each
/// gives scheme, host and port, and what it leaves out (user, password,
/// vhost, heartbeat, auth mechanism) comes from the separate settings;
/// `host`, `port` and `tls` are then not used. Without it, `host` is the
/// list and an entry without a port uses `port`.
pub fn targets(a: &AmqpSettings) -> Result<Vec<Target>, String> {
    let uris = parse_uri_list(a.uri.expose()).map_err(|e| format!("invalid uri: {e}"))?;
    if !uris.is_empty() {
        return Ok(uris
            .into_iter()
            .map(|u| Target {
                tls: u.tls,
                host: u.host,
                port: u.port,
                user: u.user.unwrap_or_else(|| a.user.clone()),
                password: u.password.unwrap_or_else(|| a.password.clone()),
                vhost: u.vhost.unwrap_or_else(|| a.vhost.clone()),
                heartbeat: u.heartbeat.unwrap_or(a.heartbeat),
                connection_timeout_ms: u.connection_timeout_ms,
                channel_max: u.channel_max,
                external: u.external.unwrap_or(a.external),
            })
            .collect());
    }
    let hosts = parse_hosts(&a.host).map_err(|e| format!("invalid host: {e}"))?;
    Ok(hosts
        .into_iter()
        .map(|h| Target {
            tls: a.tls,
            port: h.port.unwrap_or(a.port),
            host: h.host,
            user: a.user.clone(),
            password: a.password.clone(),
            vhost: a.vhost.clone(),
            heartbeat: a.heartbeat,
            connection_timeout_ms: None,
            channel_max: None,
            external: a.external,
        })
        .collect())
}

/// The addresses of [`targets`] (empty when the settings do not parse).
pub fn addresses(a: &AmqpSettings) -> Vec<String> {
    targets(a)
        .map(|t| t.iter().map(Target::address).collect())
        .unwrap_or_default()
}

/// `host-order`: how the entries are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostOrder {
    /// The first that answers; on loss, the next one.
    #[default]
    Ordered,
    /// Shuffled at the start of every round (as the Java client does).
    Random,
}

impl HostOrder {
    /// Config names, in the enum config's order.
    pub const ALL: [(HostOrder, &'static str); 2] =
        [(Self::Ordered, "ordered"), (Self::Random, "random")];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ordered => "ordered",
            Self::Random => "random",
        }
    }

    /// Parses a config name.
    pub fn parse(s: &[u8]) -> Option<Self> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.as_bytes() == s)
            .map(|(o, _)| *o)
    }
}

/// Which entry the next attempt goes to. A round tries every entry once;
/// a failed attempt moves on to the next entry at once, and only a round
/// in which every entry failed waits out the backoff. After the loss of a
/// connection the next entry is tried at once (the lost one counts as
/// tried in that round). With one entry this is the plain retry with
/// backoff.
#[derive(Debug, Clone)]
pub struct Rotation {
    order: Vec<usize>,
    pos: usize,
    tried: usize,
    random: bool,
    seed: u64,
}

impl Rotation {
    /// A rotation over `n` entries (at least one).
    pub fn new(n: usize, order: HostOrder, seed: u64) -> Self {
        let mut r = Self {
            order: (0..n.max(1)).collect(),
            pos: 0,
            tried: 0,
            random: order == HostOrder::Random,
            seed: seed | 1,
        };
        r.new_round();
        r
    }

    fn next_rand(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    fn new_round(&mut self) {
        self.pos = 0;
        self.tried = 0;
        if self.random {
            for i in (1..self.order.len()).rev() {
                let j = (self.next_rand() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
        }
    }

    /// The entry the next attempt goes to.
    pub fn current(&self) -> usize {
        self.order[self.pos]
    }

    /// The attempt connected: the next round starts with this entry.
    pub fn connected(&mut self) {
        self.tried = 0;
    }

    /// The attempt failed; true when the round is over (every entry
    /// failed): back off before the next one.
    pub fn failed(&mut self) -> bool {
        self.tried += 1;
        if self.tried >= self.order.len() {
            self.new_round();
            return true;
        }
        self.pos = (self.pos + 1) % self.order.len();
        false
    }

    /// The connection to the current entry was lost; true when there is
    /// no other entry to go to at once (back off).
    pub fn lost(&mut self) -> bool {
        self.tried = 0;
        self.failed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(host: &str, port: Option<u16>) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn host_lists_parse_with_ports_and_ipv6() {
        assert_eq!(parse_hosts("h"), Ok(vec![ep("h", None)]));
        assert_eq!(
            parse_hosts("a:5673, b ,[::1]:5674,[fe80::1]"),
            Ok(vec![
                ep("a", Some(5673)),
                ep("b", None),
                ep("::1", Some(5674)),
                ep("fe80::1", None)
            ])
        );
        for bad in [
            "", "a,", ",a", "a:0", "a:65536", "a:x", "::1", "[::1", "[::1]x", "a b", ":5672",
        ] {
            assert!(parse_hosts(bad).is_err(), "{bad}");
        }
        assert_eq!(address("::1", 5672), "[::1]:5672");
        assert_eq!(address("h", 1), "h:1");
    }

    #[test]
    fn uris_follow_the_rabbitmq_spec() {
        let u = parse_uri(
            "amqp://user:pa%40ss@host:5673/v%2Fh?heartbeat=7&connection_timeout=900&channel_max=9",
        )
        .unwrap();
        assert!(!u.tls);
        assert_eq!((u.host.as_str(), u.port), ("host", 5673));
        assert_eq!(u.user.as_deref(), Some("user"));
        assert_eq!(u.password.as_ref().map(Secret::expose), Some("pa@ss"));
        assert_eq!(u.vhost.as_deref(), Some("v/h"));
        assert_eq!(u.heartbeat, Some(7));
        assert_eq!(u.connection_timeout_ms, Some(900));
        assert_eq!(u.channel_max, Some(9));
        let u = parse_uri("amqps://h").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 5671);
        assert_eq!((u.user, u.password, u.vhost), (None, None, None));
        // The spec's examples.
        assert_eq!(parse_uri("amqp://").unwrap().host, "localhost");
        assert_eq!(
            parse_uri("amqp://host/").unwrap().vhost.as_deref(),
            Some("")
        );
        assert_eq!(parse_uri("amqp:///vhost").unwrap().host, "localhost");
        assert_eq!(
            parse_uri("amqp://h/%2f").unwrap().vhost.as_deref(),
            Some("/")
        );
        let u = parse_uri("amqp://:@h").unwrap();
        assert_eq!(u.user.as_deref(), Some(""));
        assert_eq!(u.password.as_ref().map(Secret::expose), Some(""));
        assert_eq!(parse_uri("amqp://[::1]:1/x").unwrap().host, "::1");
        assert_eq!(
            parse_uri("amqps://h?auth_mechanism=external")
                .unwrap()
                .external,
            Some(true)
        );
        for bad in [
            "http://h",
            "amqp://h/a/b",
            "amqp://h:0",
            "amqp://h?heartbeat=x",
            "amqp://u:%zz@h",
            "amqp://h?auth_mechanism=x",
            "amqp://h?connection_timeout=0",
        ] {
            let e = parse_uri(bad).unwrap_err();
            assert!(!e.contains("zz"), "{e}");
        }
    }

    #[test]
    fn uri_lists_split_before_each_scheme() {
        let l = parse_uri_list("amqp://u:a,b@h1, amqps://h2:1").unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].password.as_ref().map(Secret::expose), Some("a,b"));
        assert_eq!((l[1].host.as_str(), l[1].port, l[1].tls), ("h2", 1, true));
        assert!(parse_uri_list("").unwrap().is_empty());
        let e = parse_uri_list("amqp://u:secret@h,amqp://h/a/b").unwrap_err();
        assert!(e.contains("entry 2") && !e.contains("secret"), "{e}");
    }

    #[test]
    fn the_uri_wins_and_the_settings_fill_in() {
        let mut a = AmqpSettings {
            host: "ignored".into(),
            port: 1,
            user: "su".into(),
            password: Secret::new("sp"),
            vhost: "sv".into(),
            ..AmqpSettings::default()
        };
        a.uri = Secret::new("amqps://h1,amqp://u:p@h2:7/%2F?heartbeat=3");
        let t = targets(&a).unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].tls, t[0].port, t[0].user.as_str()),
            (true, 5671, "su")
        );
        assert_eq!((t[0].password.expose(), t[0].vhost.as_str()), ("sp", "sv"));
        assert_eq!((t[1].user.as_str(), t[1].password.expose()), ("u", "p"));
        assert_eq!((t[1].vhost.as_str(), t[1].heartbeat), ("/", 3));
        assert_eq!(addresses(&a), ["h1:5671", "h2:7"]);
        a.uri = Secret::default();
        a.host = "x,[::1]:9".into();
        let t = targets(&a).unwrap();
        assert_eq!(
            t.iter().map(Target::address).collect::<Vec<_>>(),
            ["x:1", "[::1]:9"]
        );
        assert_eq!(t[0].user, "su");
    }

    #[test]
    fn an_ordered_rotation_backs_off_per_round_and_moves_on_after_a_loss() {
        let mut r = Rotation::new(3, HostOrder::Ordered, 1);
        assert_eq!(r.current(), 0);
        assert!(!r.failed());
        assert_eq!(r.current(), 1);
        assert!(!r.failed());
        assert_eq!(r.current(), 2);
        assert!(r.failed(), "a whole round failed");
        assert_eq!(r.current(), 0, "the next round starts at the first");
        assert!(!r.failed());
        r.connected();
        assert_eq!(r.current(), 1);
        assert!(!r.lost(), "another entry is there");
        assert_eq!(r.current(), 2);
        assert!(!r.failed());
        assert_eq!(r.current(), 0);
        assert!(
            r.failed(),
            "2, 0 failed after 1 was lost: the round is over"
        );
        let mut one = Rotation::new(1, HostOrder::Ordered, 1);
        assert!(one.failed());
        assert!(one.lost(), "one entry: back off as before");
        assert_eq!(one.current(), 0);
    }

    #[test]
    fn a_random_rotation_tries_every_entry_once_per_round() {
        let mut r = Rotation::new(5, HostOrder::Random, 42);
        let mut orders = std::collections::HashSet::new();
        for _ in 0..20 {
            let mut seen = Vec::new();
            loop {
                seen.push(r.current());
                if r.failed() {
                    break;
                }
            }
            let mut sorted = seen.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2, 3, 4]);
            orders.insert(seen);
        }
        assert!(orders.len() > 1, "shuffled");
        assert_eq!(HostOrder::parse(b"random"), Some(HostOrder::Random));
        assert_eq!(HostOrder::parse(b"x"), None);
    }

    #[test]
    fn escapes_are_two_hex_digits_and_hosts_stay_plain() {
        assert!(parse_uri("amqp://u:%+f@h/").is_err());
        assert!(parse_uri("amqp://u:p@h%0d%0aevil/").is_err());
        assert!(parse_uri("amqp://u:p@h%20x/").is_err());
        assert_eq!(
            parse_uri("amqp://u:p%2Bq@host/").map(|e| e.host),
            Ok("host".to_string())
        );
    }
}
