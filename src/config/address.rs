//! The broker's address settings as text: the address list of `host`
//! (`host[:port],...`) and the `uri` setting (the RabbitMQ URI spec, one URI
//! or a comma-separated list). Parsed here when a setting is checked, and
//! resolved into connection targets by [`crate::endpoint`]. Pure.

use super::Secret;

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
