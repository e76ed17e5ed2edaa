//! Settings: the positional load/command arguments, their validation, and
//! the module configs (`CONFIG SET key_evt_amqp.*`) that tune the pipeline.

use crate::event::{BadEventType, EventTypes};
use crate::json::{Format, Values};
use crate::keymask::{KeyMasks, MaskError};
use thiserror::Error;

pub mod address;
pub mod setting;
pub mod tunables;

pub use tunables::*;

/// A bad argument; the message names it and never echoes a password.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// An argument that does not parse or is out of range.
    #[error("invalid {name} '{value}': {reason}")]
    Invalid {
        /// The argument's name.
        name: &'static str,
        /// The value given (never a password).
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A bad event-type string.
    #[error("invalid event_types: {0}")]
    EventTypes(#[from] BadEventType),
    /// Key masks beyond the limits.
    #[error("invalid keymask: {0}")]
    Mask(#[from] MaskError),
    /// A bad `uri` (the text names the entry, never the URI).
    #[error("invalid uri '***': {0}")]
    Uri(String),
    /// A command got the wrong number of arguments.
    #[error("wrong number of arguments")]
    Arity,
    /// Not one of the module's commands.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// A bad `key_evt_amqp.snapshot` request.
    #[error("{0}")]
    Snapshot(#[from] crate::snapshot::BadRequest),
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

/// Connection settings for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmqpSettings {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password (never shown).
    pub password: Secret,
    /// Heartbeat in seconds (0 turns heartbeats off).
    pub heartbeat: u16,
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key.
    pub routing_key: String,
    /// 1 non-persistent, 2 persistent.
    pub delivery_mode: u8,
    /// This node's name for the broker (connection name, `node` header).
    pub node: String,
    /// The broker's virtual host.
    pub vhost: String,
    /// Connect with TLS (`amqps`).
    pub tls: bool,
    /// PEM file of the CA(s) that sign the broker's certificate; empty:
    /// the system's trusted roots.
    pub tls_ca_file: String,
    /// `amqp://`/`amqps://` URI, or a comma-separated list of them; when
    /// set it wins over `host`, `port` and `tls` (see [`crate::endpoint::targets`]).
    /// Secret: it may hold a password.
    pub uri: Secret,
    /// How the entries of the list are tried.
    pub host_order: HostOrder,
    /// PEM file of the client certificate (mutual TLS); empty: none.
    pub tls_cert_file: String,
    /// PEM file of the client certificate's private key.
    pub tls_key_file: String,
    /// The name checked against the broker's certificate (and sent as
    /// SNI); empty: the entry's host.
    pub tls_server_name: String,
    /// Verify the broker's certificate (`tls-verify`).
    pub tls_verify: bool,
    /// SASL EXTERNAL instead of PLAIN (`auth-mechanism external`).
    pub external: bool,
    /// Put the `event`, `db`, `key` and `node` headers on every message.
    /// They cost the broker about a third of its publish rate (it decodes
    /// the table of every message), so a consumer that reads the body can
    /// do without them.
    pub headers: bool,
    /// Put the CloudEvents attributes (`cloudEvents_*` headers) on every
    /// JSON message (`key_evt_amqp.cloudevents`).
    pub cloudevents: bool,
}

/// A password: shown as `***` by `Debug` and `Display`, everywhere.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The password itself, for the one place that needs it (the AMQP URI).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 5672,
            user: "guest".into(),
            password: Secret::new("guest"),
            heartbeat: 30,
            exchange: "amq.direct".into(),
            routing_key: "redis_keyspace_events".into(),
            delivery_mode: 1,
            node: String::new(),
            vhost: "/".into(),
            tls: false,
            tls_ca_file: String::new(),
            uri: Secret::default(),
            host_order: HostOrder::Ordered,
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            tls_server_name: String::new(),
            tls_verify: true,
            external: false,
            headers: true,
            cloudevents: false,
        }
    }
}

/// Everything the positional arguments set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Broker connection.
    pub amqp: AmqpSettings,
    /// >0 cap, 0 unlimited, <0 off.
    pub fallback_size: i64,
    /// Which keys are forwarded.
    pub masks: KeyMasks,
    /// The message body: seed or JSON (`key_evt_amqp.format`).
    pub format: Format,
    /// The values a JSON message carries (`key_evt_amqp.values`).
    pub values: Values,
    /// Values over this many raw bytes are left out (`key_evt_amqp.value-max-bytes`).
    pub value_max_bytes: u64,
}

/// The default `value-max-bytes`.
pub const VALUE_MAX_BYTES_DEFAULT: u64 = 65_536;

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp: AmqpSettings::default(),
            fallback_size: 10_000_000,
            masks: KeyMasks::None,
            format: Format::Seed,
            values: Values::None,
            value_max_bytes: VALUE_MAX_BYTES_DEFAULT,
        }
    }
}

impl Settings {
    /// Checks what one setting alone cannot: values need `format json`.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.values != Values::None && self.format != Format::Json {
            return Err(ConfigError::Invalid {
                name: "values",
                value: self.values.name().into(),
                reason: "values need format json (set key_evt_amqp.format json first, or in the same CONFIG SET)",
            });
        }
        Ok(())
    }
}

/// The limit of every text argument: AMQP short strings hold 255 bytes.
const TEXT_MAX: usize = 255;
const TOO_LONG: &str = "too long (255 bytes at most)";

/// A text argument: UTF-8, no NUL, at most [`TEXT_MAX`] bytes (the one
/// limit [`TOO_LONG`] names).
pub(crate) fn text(name: &'static str, v: &[u8]) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::Invalid {
        name,
        value: if name == "password" || name == "uri" {
            "***".into()
        } else {
            crate::keymask::printable(v)
        },
        reason,
    };
    let s = std::str::from_utf8(v).map_err(|_| invalid("must be UTF-8"))?;
    if s.contains('\0') {
        return Err(invalid("must not contain NUL bytes"));
    }
    if s.len() > TEXT_MAX {
        return Err(invalid(TOO_LONG));
    }
    Ok(s.to_owned())
}

/// Longest `fallback-key` accepted, in bytes.
pub const FALLBACK_KEY_MAX: usize = 512;

/// Checks a `fallback-key` value: not empty, UTF-8, no NUL, no `{` or `}`
/// (the module adds the cluster hash tag itself), at most
/// [`FALLBACK_KEY_MAX`] bytes.
pub fn fallback_key(v: &[u8]) -> Result<String, ConfigError> {
    let invalid = |reason| ConfigError::Invalid {
        name: "fallback-key",
        value: crate::keymask::printable(v),
        reason,
    };
    if v.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if v.len() > FALLBACK_KEY_MAX {
        return Err(invalid("too long (512 bytes at most)"));
    }
    if v.contains(&0) {
        return Err(invalid("must not contain NUL bytes"));
    }
    if v.iter().any(|b| matches!(b, b'{' | b'}')) {
        return Err(invalid(
            "must not contain { or } (the hash tag is the module's)",
        ));
    }
    std::str::from_utf8(v)
        .map(str::to_owned)
        .map_err(|_| invalid("must be UTF-8"))
}

fn number<T: std::str::FromStr>(
    name: &'static str,
    v: &[u8],
    reason: &'static str,
) -> Result<T, ConfigError> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ConfigError::Invalid {
            name,
            value: crate::keymask::printable(v),
            reason,
        })
}

/// Parses `fallback_storage_size`.
pub fn parse_fallback_size(v: &[u8]) -> Result<i64, ConfigError> {
    number("fallback_storage_size", v, "must be an integer")
}

impl Settings {
    /// The fallback list's cap in records; 0 when there is none (also when
    /// the list is off: see `fallback_size`).
    pub fn fallback_cap(&self) -> u64 {
        u64::try_from(self.fallback_size).unwrap_or(0)
    }

    /// Returns a copy with the positional arguments (host first) applied.
    /// Arguments not given keep their current value; masks given replace the old ones.
    pub fn with_args<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Self, ConfigError> {
        let mut s = self.clone();
        for (i, arg) in args.iter().take(9).enumerate() {
            let v = arg.as_ref();
            match i {
                0 => {
                    s.amqp.host = text("host", v)?;
                    if s.amqp.host.is_empty() {
                        return Err(ConfigError::Invalid {
                            name: "host",
                            value: String::new(),
                            reason: "must not be empty",
                        });
                    }
                    address::parse_hosts(&s.amqp.host).map_err(|reason| ConfigError::Invalid {
                        name: "host",
                        value: crate::keymask::printable(v),
                        reason,
                    })?;
                }
                1 => {
                    let port: u32 = number("port", v, "must be 1..65535")?;
                    s.amqp.port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
                        ConfigError::Invalid {
                            name: "port",
                            value: port.to_string(),
                            reason: "must be 1..65535",
                        }
                    })?;
                }
                2 => s.amqp.user = text("user", v)?,
                3 => s.amqp.password = Secret::new(text("password", v)?),
                4 => s.amqp.heartbeat = number("heartbeat", v, "must be 0..65535 seconds")?,
                5 => s.amqp.exchange = text("exchange", v)?,
                6 => s.amqp.routing_key = text("routing_key", v)?,
                7 => {
                    s.amqp.delivery_mode = match v {
                        b"1" => 1,
                        b"2" => 2,
                        _ => {
                            return Err(ConfigError::Invalid {
                                name: "delivery_mode",
                                value: crate::keymask::printable(v),
                                reason: "must be 1 (non-persistent) or 2 (persistent)",
                            })
                        }
                    }
                }
                _ => s.fallback_size = parse_fallback_size(v)?,
            }
        }
        if args.len() > 9 {
            s.masks = KeyMasks::from_args(&args[9..])?;
        }
        Ok(s)
    }

    /// Parses the load arguments: event types first, then [`Settings::with_args`].
    pub fn from_load_args<A: AsRef<[u8]>>(args: &[A]) -> Result<(EventTypes, Self), ConfigError> {
        let types = match args.first() {
            Some(t) => EventTypes::parse(t.as_ref())?,
            None => EventTypes::parse(b"xe")?,
        };
        let rest = args.get(1..).unwrap_or(&[]);
        Ok((types, Self::default().with_args(rest)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let (t, s) = Settings::from_load_args::<&[u8]>(&[]).unwrap();
        assert_eq!(t.to_string(), "xe");
        assert_eq!(s, Settings::default());
        assert_eq!(s.amqp.heartbeat, 30);
        assert_eq!(s.amqp.exchange, "amq.direct");
        assert_eq!(s.amqp.routing_key, "redis_keyspace_events");
        assert_eq!(s.fallback_size, 10_000_000);
        assert_eq!(s.masks, KeyMasks::None);
    }

    #[test]
    fn spec_example() {
        let args: Vec<&[u8]> =
            "xe 127.0.0.1 5672 user pass 20 exchange_name routing_key 2 10000000 ALL"
                .split(' ')
                .map(str::as_bytes)
                .collect();
        let (t, s) = Settings::from_load_args(&args).unwrap();
        assert_eq!(t.to_string(), "xe");
        assert_eq!(s.amqp.user, "user");
        assert_eq!(s.amqp.password.expose(), "pass");
        assert!(format!("{:?}", s.amqp).contains("password: ***"));
        assert_eq!(s.amqp.heartbeat, 20);
        assert_eq!(s.amqp.exchange, "exchange_name");
        assert_eq!(s.amqp.delivery_mode, 2);
        assert_eq!(s.masks, KeyMasks::All);
    }

    #[test]
    fn partial_args_keep_the_rest() {
        let base = Settings::default()
            .with_args(&["h", "1", "u", "p", "5", "ex", "rk", "2", "-1", "^a"])
            .unwrap();
        let s = base.with_args(&["other"]).unwrap();
        assert_eq!(s.amqp.host, "other");
        assert_eq!(s.amqp.exchange, "ex");
        assert_eq!(s.fallback_size, -1);
        assert_eq!(s.masks.count(), 1);
    }

    #[test]
    fn errors_name_the_argument() {
        let bad = |args: &[&str]| Settings::default().with_args(args).unwrap_err().to_string();
        assert!(bad(&["h", "0"]).contains("port"));
        assert!(bad(&["h", "65536"]).contains("port"));
        assert!(bad(&["h", "x"]).contains("port"));
        assert!(bad(&["h", "1", "u", "p", "-3"]).contains("heartbeat"));
        assert!(bad(&["h", "1", "u", "p", "1", "e", "r", "3"]).contains("delivery_mode"));
        assert!(
            bad(&["h", "1", "u", "p", "1", "e", "r", "1", "ten"]).contains("fallback_storage_size")
        );
        assert!(bad(&[""]).contains("host"));
        assert!(bad(&["a,,b"]).contains("host"));
        assert!(bad(&["::1"]).contains("brackets"));
        let list = Settings::default().with_args(&["a:5673,[::1],b"]).unwrap();
        assert_eq!(list.amqp.host, "a:5673,[::1],b");
        let e = Settings::from_load_args(&["xq"]).unwrap_err().to_string();
        assert!(e.contains("event_types") && e.contains('q'), "{e}");
    }

    #[test]
    fn fallback_key_is_checked() {
        assert_eq!(fallback_key(b"k:list").unwrap(), "k:list");
        for bad in [&b""[..], b"a\0b", b"a{b", b"}", b"\xff"] {
            let e = fallback_key(bad).unwrap_err().to_string();
            assert!(e.contains("fallback-key"), "{e}");
        }
        assert!(fallback_key(&[b'k'; FALLBACK_KEY_MAX]).is_ok());
        assert!(fallback_key(&[b'k'; FALLBACK_KEY_MAX + 1]).is_err());
    }

    #[test]
    fn password_is_never_echoed() {
        let e = Settings::default()
            .with_args(&[&b"h"[..], b"1", b"u", b"\xffsecret"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("password") && !e.contains("secret"), "{e}");
        let s = Settings::default()
            .with_args(&["h", "1", "u", "topsecret"])
            .unwrap();
        assert!(!format!("{s:?}").contains("topsecret"));
    }
}
