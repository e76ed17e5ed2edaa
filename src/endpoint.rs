//! Where the broker is: what one connection attempt uses ([`Target`]),
//! from the address list of `host` or the `uri` setting (both parsed by
//! [`crate::config::address`]), and the order in which the entries are
//! tried ([`Rotation`]). Pure: no Redis, no network.

use crate::config::address::{address, parse_hosts, parse_uri_list};
use crate::config::{AmqpSettings, HostOrder, Secret};

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
}
