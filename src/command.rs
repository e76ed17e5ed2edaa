//! The module commands as one type: parsed once, applied to the
//! settings, carried over the cluster bus, and shown in logs with the
//! password masked. Pure: no Redis import.

use crate::bus;
use crate::config::{parse_fallback_size, ConfigError, Settings};
use crate::keymask::{printable, KeyMasks};

/// A module command with its arguments (without the `key_evt_amqp.` prefix).
#[derive(Clone, PartialEq, Eq)]
pub enum Command {
    /// `config_set host [port user pass heartbeat exchange routing_key delivery_mode fallback_size keymask...]`
    ConfigSet(Vec<Vec<u8>>),
    /// `connect [same arguments as config_set]`
    Connect(Vec<Vec<u8>>),
    /// `disconnect`
    Disconnect,
    /// `fallback_storage_size_set N`
    FallbackStorageSizeSet(i64),
    /// `keymask_clean`
    KeymaskClean,
    /// `keymask_add MASK...`
    KeymaskAdd(Vec<Vec<u8>>),
    /// `keymask_set MASK...`
    KeymaskSet(Vec<Vec<u8>>),
    /// `snapshot [DB n | CANCEL | STATUS]`: no setting changes (the host
    /// runs the walk, see [`crate::snapshot`]).
    Snapshot(crate::snapshot::Request),
}

/// What a command asks of the broker connection once applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAction {
    /// Nothing.
    Keep,
    /// Connect now (a replica waits until it is promoted).
    Connect,
    /// The broker settings changed: reconnect if a connection is active.
    Reconnect,
    /// Close the connection and stay closed.
    Disconnect,
}

impl LinkAction {
    /// What a change of settings from `old` to `new` asks of the
    /// connection: a reconnect when the broker settings changed.
    pub fn after(old: &Settings, new: &Settings) -> Self {
        if new.amqp != old.amqp {
            Self::Reconnect
        } else {
            Self::Keep
        }
    }
}

impl Command {
    /// Every command name, in the order of the bus index.
    pub const NAMES: [&'static str; 8] = bus::NAMES;

    /// Parses a command name and its arguments; checks the arity and what
    /// can be checked without the current settings.
    pub fn parse(name: &str, args: &[&[u8]]) -> Result<Self, ConfigError> {
        let owned = || args.iter().map(|a| a.to_vec()).collect::<Vec<_>>();
        let arity = |ok: bool| if ok { Ok(()) } else { Err(ConfigError::Arity) };
        Ok(match name {
            "config_set" => {
                arity(!args.is_empty())?;
                Self::ConfigSet(owned())
            }
            "connect" => Self::Connect(owned()),
            "disconnect" => {
                arity(args.is_empty())?;
                Self::Disconnect
            }
            "fallback_storage_size_set" => {
                arity(args.len() == 1)?;
                Self::FallbackStorageSizeSet(parse_fallback_size(args[0])?)
            }
            "keymask_clean" => {
                arity(args.is_empty())?;
                Self::KeymaskClean
            }
            "keymask_add" => {
                arity(!args.is_empty())?;
                Self::KeymaskAdd(owned())
            }
            "keymask_set" => {
                arity(!args.is_empty())?;
                Self::KeymaskSet(owned())
            }
            "snapshot" => Self::Snapshot(crate::snapshot::Request::parse(args)?),
            _ => return Err(ConfigError::UnknownCommand(printable(name.as_bytes()))),
        })
    }

    /// The name, without the module prefix.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConfigSet(_) => "config_set",
            Self::Connect(_) => "connect",
            Self::Disconnect => "disconnect",
            Self::FallbackStorageSizeSet(_) => "fallback_storage_size_set",
            Self::KeymaskClean => "keymask_clean",
            Self::KeymaskAdd(_) => "keymask_add",
            Self::KeymaskSet(_) => "keymask_set",
            Self::Snapshot(_) => "snapshot",
        }
    }

    /// The arguments, as given.
    pub fn args(&self) -> Vec<Vec<u8>> {
        match self {
            Self::ConfigSet(a) | Self::Connect(a) | Self::KeymaskAdd(a) | Self::KeymaskSet(a) => {
                a.clone()
            }
            Self::FallbackStorageSizeSet(n) => vec![n.to_string().into_bytes()],
            Self::Disconnect | Self::KeymaskClean => Vec::new(),
            Self::Snapshot(r) => r.args(),
        }
    }

    /// Applies the command to `settings`: the new settings and what the
    /// connection must do. On error nothing is changed.
    pub fn apply(&self, settings: &Settings) -> Result<(Settings, LinkAction), ConfigError> {
        let mut new = settings.clone();
        let action = match self {
            Self::ConfigSet(args) => {
                new = settings.with_args(args)?;
                LinkAction::after(settings, &new)
            }
            Self::Connect(args) => {
                new = settings.with_args(args)?;
                LinkAction::Connect
            }
            Self::Disconnect => LinkAction::Disconnect,
            Self::FallbackStorageSizeSet(n) => {
                new.fallback_size = *n;
                LinkAction::Keep
            }
            Self::KeymaskClean => {
                new.masks = KeyMasks::None;
                LinkAction::Keep
            }
            Self::KeymaskAdd(masks) => {
                new.masks = settings.masks.with_added(masks)?;
                LinkAction::Keep
            }
            Self::KeymaskSet(masks) => {
                new.masks = KeyMasks::None.with_added(masks)?;
                LinkAction::Keep
            }
            Self::Snapshot(_) => LinkAction::Keep,
        };
        Ok((new, action))
    }

    /// The cluster-bus payload.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let args = self.args();
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        bus::encode(self.name(), &refs)
    }

    /// A command from a cluster-bus payload: `None` when the payload is not
    /// one of ours, an error when it is but does not parse.
    pub fn decode(payload: &[u8]) -> Option<Result<Self, ConfigError>> {
        let (name, args) = bus::decode(payload)?;
        Some(Self::parse(name, &args))
    }
}

/// Shown with the password (4th argument of `config_set` and `connect`)
/// masked, and every argument printable.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let args = self.args();
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        write!(f, "{} {}", self.name(), bus::loggable(self.name(), &refs))
    }
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Command({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_apply_and_round_trip() {
        let args: Vec<&[u8]> = vec![b"h", b"5673", b"u", b"secret"];
        let c = Command::parse("config_set", &args).unwrap();
        assert!(!format!("{c} {c:?}").contains("secret"));
        let (s, action) = c.apply(&Settings::default()).unwrap();
        assert_eq!(s.amqp.port, 5673);
        assert_eq!(action, LinkAction::Reconnect);
        let back = Command::decode(&c.encode().unwrap()).unwrap().unwrap();
        assert_eq!(back, c);
        assert_eq!(
            Command::parse("disconnect", &[b"x"]),
            Err(ConfigError::Arity)
        );
        assert!(Command::parse("nope", &[]).is_err());
        assert!(Command::parse("fallback_storage_size_set", &[b"x"]).is_err());
        for name in Command::NAMES {
            let args: Vec<&[u8]> = if name.starts_with("keymask_a") || name.ends_with("set") {
                vec![b"1"]
            } else if name == "snapshot" {
                vec![b"STATUS"]
            } else {
                vec![]
            };
            assert_eq!(Command::parse(name, &args).map(|c| c.name()), Ok(name));
        }
    }
}
