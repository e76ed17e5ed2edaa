//! Every broker setting as a named module config (`key_evt_amqp.<name>`):
//! read from and written to the same [`Settings`] that the positional load
//! arguments and the commands change. Pure: no Redis import.

use crate::config::HostOrder;
use crate::config::{text, ConfigError, Secret, Settings};
use crate::json::{Format, Values};
use crate::keymask::KeyMasks;

/// One setting, exposed as a module config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// `host`
    Host,
    /// `port`
    Port,
    /// `vhost`
    Vhost,
    /// `user`
    User,
    /// `password` (hidden from `CONFIG GET` patterns, redacted in logs)
    Password,
    /// `heartbeat`
    Heartbeat,
    /// `exchange`
    Exchange,
    /// `routing-key` (a fixed key or a template)
    RoutingKey,
    /// `delivery-mode`
    DeliveryMode,
    /// `fallback-size`
    FallbackSize,
    /// `keymasks`: space-separated, odd masks double-quoted (see
    /// [`crate::keymask::text`]); `ALL` for every key
    Keymasks,
    /// `tls`: `yes` connects with `amqps`
    Tls,
    /// `tls-ca-file`: PEM file of the broker's CA (empty: system roots)
    TlsCaFile,
    /// `headers`: `yes` puts the `event`, `db`, `key` and `node` headers on each message
    Headers,
    /// `uri`: `amqp://`/`amqps://` URI or a comma-separated list of them
    /// (hidden from `CONFIG GET` patterns, redacted in logs)
    Uri,
    /// `host-order`: `ordered` or `random`
    HostOrder,
    /// `tls-cert-file`: PEM client certificate (mutual TLS)
    TlsCertFile,
    /// `tls-key-file`: PEM private key of the client certificate
    TlsKeyFile,
    /// `tls-server-name`: the name checked in the broker's certificate
    TlsServerName,
    /// `tls-verify`: `no` accepts any broker certificate (warned at every connect)
    TlsVerify,
    /// `auth-mechanism`: `plain` or `external`
    AuthMechanism,
    /// `format`: `seed` or `json`
    Format,
    /// `values`: `none`, `after`, `before` or `both` (needs `format json`)
    Values,
    /// `value-max-bytes`: values over this many raw bytes are left out
    ValueMaxBytes,
    /// `cloudevents`: `yes` puts the CloudEvents headers on JSON messages
    CloudEvents,
}

/// The largest `value-max-bytes` (512 MB, a string's limit).
pub const VALUE_MAX_BYTES_MAX: i64 = 512 << 20;

/// A setting's value: text (binary-safe) or a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A text config.
    Text(Vec<u8>),
    /// A numeric config.
    Number(i64),
}

impl Setting {
    /// Every setting, in the order of the README's table.
    pub const ALL: [Setting; 25] = [
        Self::Host,
        Self::Port,
        Self::Vhost,
        Self::User,
        Self::Password,
        Self::Heartbeat,
        Self::Exchange,
        Self::RoutingKey,
        Self::DeliveryMode,
        Self::FallbackSize,
        Self::Keymasks,
        Self::Tls,
        Self::TlsCaFile,
        Self::Headers,
        Self::Uri,
        Self::HostOrder,
        Self::TlsCertFile,
        Self::TlsKeyFile,
        Self::TlsServerName,
        Self::TlsVerify,
        Self::AuthMechanism,
        Self::Format,
        Self::Values,
        Self::ValueMaxBytes,
        Self::CloudEvents,
    ];

    /// The config name, without the module prefix.
    pub fn name(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Port => "port",
            Self::Vhost => "vhost",
            Self::User => "user",
            Self::Password => "password",
            Self::Heartbeat => "heartbeat",
            Self::Exchange => "exchange",
            Self::RoutingKey => "routing-key",
            Self::DeliveryMode => "delivery-mode",
            Self::FallbackSize => "fallback-size",
            Self::Keymasks => "keymasks",
            Self::Tls => "tls",
            Self::TlsCaFile => "tls-ca-file",
            Self::Headers => "headers",
            Self::Uri => "uri",
            Self::HostOrder => "host-order",
            Self::TlsCertFile => "tls-cert-file",
            Self::TlsKeyFile => "tls-key-file",
            Self::TlsServerName => "tls-server-name",
            Self::TlsVerify => "tls-verify",
            Self::AuthMechanism => "auth-mechanism",
            Self::Format => "format",
            Self::Values => "values",
            Self::ValueMaxBytes => "value-max-bytes",
            Self::CloudEvents => "cloudevents",
        }
    }

    /// The bounds of a numeric setting; `None` for text.
    pub fn range(self) -> Option<(i64, i64)> {
        match self {
            Self::Port => Some((1, 65535)),
            Self::Heartbeat => Some((0, 65535)),
            Self::DeliveryMode => Some((1, 2)),
            Self::FallbackSize => Some((i64::MIN, i64::MAX)),
            Self::ValueMaxBytes => Some((0, VALUE_MAX_BYTES_MAX)),
            _ => None,
        }
    }

    /// Position among the positional arguments (host first), if it has one.
    fn position(self) -> Option<usize> {
        match self {
            Self::Host => Some(0),
            Self::Port => Some(1),
            Self::User => Some(2),
            Self::Password => Some(3),
            Self::Heartbeat => Some(4),
            Self::Exchange => Some(5),
            Self::RoutingKey => Some(6),
            Self::DeliveryMode => Some(7),
            Self::FallbackSize => Some(8),
            Self::Vhost
            | Self::Keymasks
            | Self::Tls
            | Self::TlsCaFile
            | Self::Headers
            | Self::Uri
            | Self::HostOrder
            | Self::TlsCertFile
            | Self::TlsKeyFile
            | Self::TlsServerName
            | Self::TlsVerify
            | Self::AuthMechanism
            | Self::Format
            | Self::Values
            | Self::ValueMaxBytes
            | Self::CloudEvents => None,
        }
    }

    /// The value in `s`.
    pub fn get(self, s: &Settings) -> Value {
        let a = &s.amqp;
        let t = |x: &str| Value::Text(x.as_bytes().to_vec());
        match self {
            Self::Host => t(&a.host),
            Self::Port => Value::Number(a.port.into()),
            Self::Vhost => t(&a.vhost),
            Self::User => t(&a.user),
            Self::Password => t(a.password.expose()),
            Self::Heartbeat => Value::Number(a.heartbeat.into()),
            Self::Exchange => t(&a.exchange),
            Self::RoutingKey => t(&a.routing_key),
            Self::DeliveryMode => Value::Number(a.delivery_mode.into()),
            Self::FallbackSize => Value::Number(s.fallback_size),
            Self::Keymasks => Value::Text(crate::keymask::text::join(&s.masks.sources())),
            Self::Tls => t(yes_no(a.tls)),
            Self::TlsCaFile => t(&a.tls_ca_file),
            Self::Headers => t(yes_no(a.headers)),
            Self::Uri => t(a.uri.expose()),
            Self::HostOrder => t(a.host_order.name()),
            Self::TlsCertFile => t(&a.tls_cert_file),
            Self::TlsKeyFile => t(&a.tls_key_file),
            Self::TlsServerName => t(&a.tls_server_name),
            Self::TlsVerify => t(yes_no(a.tls_verify)),
            Self::AuthMechanism => t(if a.external { "external" } else { "plain" }),
            Self::Format => t(s.format.name()),
            Self::Values => t(s.values.name()),
            Self::ValueMaxBytes => {
                Value::Number(i64::try_from(s.value_max_bytes).unwrap_or(i64::MAX))
            }
            Self::CloudEvents => t(yes_no(a.cloudevents)),
        }
    }

    /// A copy of `s` with this setting changed to `v`, checked exactly as
    /// the positional argument is; on error nothing changes.
    pub fn set(self, s: &Settings, v: &Value) -> Result<Settings, ConfigError> {
        let bytes = match v {
            Value::Text(b) => b.clone(),
            Value::Number(n) => n.to_string().into_bytes(),
        };
        let mut out = s.clone();
        match self {
            // The positional ones are checked as their load argument is.
            Self::Host
            | Self::Port
            | Self::User
            | Self::Password
            | Self::Heartbeat
            | Self::Exchange
            | Self::RoutingKey
            | Self::DeliveryMode
            | Self::FallbackSize => {
                let mut args = positional(s);
                if let Some(i) = self.position() {
                    args[i] = bytes;
                }
                return s.with_args(&args);
            }
            Self::Vhost => out.amqp.vhost = text("vhost", &bytes)?,
            Self::Tls => out.amqp.tls = parse_yes_no("tls", &bytes)?,
            Self::TlsCaFile => out.amqp.tls_ca_file = text("tls-ca-file", &bytes)?,
            Self::Headers => out.amqp.headers = parse_yes_no("headers", &bytes)?,
            Self::Uri => out.amqp.uri = uri(&bytes)?,
            Self::HostOrder => {
                out.amqp.host_order =
                    HostOrder::parse(&bytes).ok_or_else(|| ConfigError::Invalid {
                        name: "host-order",
                        value: crate::keymask::printable(&bytes),
                        reason: "must be ordered or random",
                    })?
            }
            Self::TlsCertFile => out.amqp.tls_cert_file = text("tls-cert-file", &bytes)?,
            Self::TlsKeyFile => out.amqp.tls_key_file = text("tls-key-file", &bytes)?,
            Self::TlsServerName => out.amqp.tls_server_name = text("tls-server-name", &bytes)?,
            Self::TlsVerify => out.amqp.tls_verify = parse_yes_no("tls-verify", &bytes)?,
            Self::AuthMechanism => {
                out.amqp.external = match bytes.as_slice() {
                    b"plain" => false,
                    b"external" => true,
                    _ => {
                        return Err(ConfigError::Invalid {
                            name: "auth-mechanism",
                            value: crate::keymask::printable(&bytes),
                            reason: "must be plain or external",
                        })
                    }
                }
            }
            Self::CloudEvents => out.amqp.cloudevents = parse_yes_no("cloudevents", &bytes)?,
            Self::Format => {
                out.format = Format::parse(&bytes).ok_or_else(|| ConfigError::Invalid {
                    name: "format",
                    value: crate::keymask::printable(&bytes),
                    reason: "must be seed or json",
                })?
            }
            Self::Values => {
                out.values = Values::parse(&bytes).ok_or_else(|| ConfigError::Invalid {
                    name: "values",
                    value: crate::keymask::printable(&bytes),
                    reason: "must be none, after, before or both",
                })?
            }
            Self::ValueMaxBytes => {
                out.value_max_bytes = std::str::from_utf8(&bytes)
                    .ok()
                    .and_then(|t| t.parse::<i64>().ok())
                    .filter(|n| (0..=VALUE_MAX_BYTES_MAX).contains(n))
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| ConfigError::Invalid {
                        name: "value-max-bytes",
                        value: crate::keymask::printable(&bytes),
                        reason: "must be 0..536870912",
                    })?
            }
            Self::Keymasks => {
                let masks =
                    crate::keymask::text::split(&bytes).map_err(|e| ConfigError::Invalid {
                        name: "keymasks",
                        value: crate::keymask::printable(&bytes),
                        reason: e.reason(),
                    })?;
                out.masks = KeyMasks::from_args(&masks)?;
            }
        }
        Ok(out)
    }
}

/// The longest `uri` value, in bytes.
pub const URI_MAX: usize = 1024;

/// Checks a `uri` value (empty: none); the error never shows it.
fn uri(bytes: &[u8]) -> Result<Secret, ConfigError> {
    let invalid = |reason| ConfigError::Invalid {
        name: "uri",
        value: "***".into(),
        reason,
    };
    if bytes.len() > URI_MAX {
        return Err(invalid("too long (1024 bytes at most)"));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| invalid("must be UTF-8"))?;
    if s.contains('\0') {
        return Err(invalid("must not contain NUL bytes"));
    }
    // The reason names the entry and what is wrong, never the text.
    super::address::parse_uri_list(s).map_err(ConfigError::Uri)?;
    Ok(Secret::new(s))
}

/// A flag as its config text.
fn yes_no(on: bool) -> &'static str {
    if on {
        "yes"
    } else {
        "no"
    }
}

/// A flag's config text: `yes` or `no`, nothing else.
fn parse_yes_no(name: &'static str, bytes: &[u8]) -> Result<bool, ConfigError> {
    match bytes {
        b"yes" => Ok(true),
        b"no" => Ok(false),
        _ => Err(ConfigError::Invalid {
            name,
            value: crate::keymask::printable(bytes),
            reason: "must be yes or no",
        }),
    }
}

/// The positional arguments (host to fallback size) that give `s`.
fn positional(s: &Settings) -> Vec<Vec<u8>> {
    let a = &s.amqp;
    [
        a.host.clone(),
        a.port.to_string(),
        a.user.clone(),
        a.password.expose().to_string(),
        a.heartbeat.to_string(),
        a.exchange.clone(),
        a.routing_key.clone(),
        a.delivery_mode.to_string(),
        s.fallback_size.to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_round_trips_and_bad_values_change_nothing() {
        let s = Settings::default();
        for f in Setting::ALL {
            let v = f.get(&s);
            assert_eq!(f.set(&s, &v).map(|n| f.get(&n)), Ok(v), "{f:?}");
        }
        let s2 = Setting::Host
            .set(&s, &Value::Text(b"broker".to_vec()))
            .unwrap();
        assert_eq!(s2.amqp.host, "broker");
        assert_eq!(s2.amqp.port, s.amqp.port);
        assert!(Setting::Host.set(&s, &Value::Text(Vec::new())).is_err());
        assert!(Setting::DeliveryMode.set(&s, &Value::Number(3)).is_err());
        let m = Setting::Keymasks
            .set(&s, &Value::Text(b"^a ^b".to_vec()))
            .unwrap();
        assert_eq!(Setting::Keymasks.get(&m), Value::Text(b"^a ^b".to_vec()));
        let odd = Value::Text(b"\"\" \"a b\" \"\\x00\\\\\" ^c".to_vec());
        let m = Setting::Keymasks.set(&s, &odd).unwrap();
        assert_eq!(m.masks.count(), 4);
        assert_eq!(m.masks.sources()[1], b"a b");
        assert_eq!(m.masks.sources()[2], b"\x00\\");
        assert_eq!(Setting::Keymasks.get(&m), odd);
        assert!(Setting::Keymasks
            .set(&s, &Value::Text(b"\"open".to_vec()))
            .is_err());
        let j = Setting::Format
            .set(&s, &Value::Text(b"json".to_vec()))
            .unwrap();
        let v = Setting::Values
            .set(&j, &Value::Text(b"both".to_vec()))
            .unwrap();
        assert!(v.check().is_ok());
        let seed = Setting::Format
            .set(&v, &Value::Text(b"seed".to_vec()))
            .unwrap();
        assert!(seed.check().unwrap_err().to_string().contains("values"));
        assert!(Setting::Values
            .set(&s, &Value::Text(b"all".to_vec()))
            .is_err());
        assert!(Setting::ValueMaxBytes.set(&s, &Value::Number(-1)).is_err());
        assert_eq!(
            Setting::ValueMaxBytes
                .set(&s, &Value::Number(10))
                .unwrap()
                .value_max_bytes,
            10
        );
        let e = Setting::Port
            .set(&s, &Value::Number(0))
            .unwrap_err()
            .to_string();
        assert!(e.contains("port") && !e.contains("guest"), "{e}");
    }
}
