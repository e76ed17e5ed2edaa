//! The cluster-bus codec: module commands as they travel between nodes.
//! A payload is a magic header, the command's index in [`NAMES`], then
//! length-prefixed, binary-safe arguments. Pure: no Redis import.

/// Names of the commands (without the module prefix), as broadcast.
pub const NAMES: [&str; 8] = [
    "config_set",
    "connect",
    "disconnect",
    "fallback_storage_size_set",
    "keymask_clean",
    "keymask_add",
    "keymask_set",
    "snapshot",
];

/// Cluster message type byte.
pub const MSG_TYPE: u8 = 0xA7;
/// Payload header: magic and version.
pub const MAGIC: &[u8; 5] = b"KEVA\x01";

/// Encodes a command for the bus: header, command index, then length-prefixed arguments.
pub fn encode(name: &str, args: &[&[u8]]) -> Option<Vec<u8>> {
    let idx = NAMES.iter().position(|n| *n == name)?;
    let mut out = MAGIC.to_vec();
    out.push(u8::try_from(idx).ok()?);
    out.extend_from_slice(&u32::try_from(args.len()).ok()?.to_le_bytes());
    for a in args {
        out.extend_from_slice(&u32::try_from(a.len()).ok()?.to_le_bytes());
        out.extend_from_slice(a);
    }
    Some(out)
}

/// Decodes a payload made by [`encode`]; `None` for anything else.
pub fn decode(payload: &[u8]) -> Option<(&'static str, Vec<&[u8]>)> {
    let rest = payload.strip_prefix(MAGIC.as_slice())?;
    let (&idx, mut rest) = rest.split_first()?;
    let name = *NAMES.get(usize::from(idx))?;
    let take = |r: &mut &[u8]| -> Option<u32> {
        let (n, tail) = r.split_first_chunk::<4>()?;
        *r = tail;
        Some(u32::from_le_bytes(*n))
    };
    let count = take(&mut rest)?;
    let mut args = Vec::new();
    for _ in 0..count {
        let len = take(&mut rest)? as usize;
        if rest.len() < len {
            return None;
        }
        let (a, tail) = rest.split_at(len);
        args.push(a);
        rest = tail;
    }
    rest.is_empty().then_some((name, args))
}

/// Arguments as they may be logged: the password (4th positional) masked.
pub fn loggable(name: &str, args: &[&[u8]]) -> String {
    args.iter()
        .enumerate()
        .map(|(i, a)| {
            if matches!(name, "config_set" | "connect") && i == 3 {
                "***".to_string()
            } else {
                crate::keymask::printable(a)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_binary_safe() {
        let args: Vec<&[u8]> = vec![b"h", b"", b"a\x00b\nc", b"secret"];
        let p = encode("config_set", &args).unwrap();
        let (name, back) = decode(&p).unwrap();
        assert_eq!(name, "config_set");
        assert_eq!(back, args);
        assert!(decode(&p[..p.len() - 1]).is_none());
        assert!(decode(b"other module payload").is_none());
        assert!(encode("nope", &[]).is_none());
    }

    #[test]
    fn password_is_masked_in_logs() {
        let args: Vec<&[u8]> = vec![b"h", b"1", b"u", b"secret", b"5"];
        let l = loggable("connect", &args);
        assert!(!l.contains("secret") && l.contains("***"));
        assert_eq!(loggable("keymask_add", &[b"secret"]), "secret");
        assert_eq!(loggable("keymask_add", &[b"a\x00b"]), "a\\x00b");
    }
}
