//! The text form of a mask set (the `keymasks` config): masks separated by
//! spaces; a mask that is empty or holds a space, a quote, a backslash or a
//! byte outside printable ASCII is written double-quoted, with `\"`, `\\`,
//! `\n`, `\r`, `\t` and `\xHH` escapes. Read back as Redis's own
//! `sdssplitargs` reads a config line (single quotes too), so that
//! `^user: ^session:` stays as it always was and every set of byte strings
//! survives `CONFIG GET`, `CONFIG SET`, `CONFIG REWRITE` and a restart.

/// Text that [`split`] cannot read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextError {
    /// A quoted mask that does not end.
    Unbalanced,
    /// A closing quote followed by something other than a space.
    AfterQuote,
}

impl TextError {
    /// Why the text is refused.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unbalanced => "unbalanced quotes",
            Self::AfterQuote => "a closing quote must be followed by a space",
        }
    }
}

/// True when `m` can be written as it is.
fn plain(m: &[u8]) -> bool {
    !m.is_empty()
        && m.iter()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\'))
}

/// The text form of `masks` (empty for no mask).
pub fn join<M: AsRef<[u8]>>(masks: &[M]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, m) in masks.iter().enumerate() {
        let m = m.as_ref();
        if i > 0 {
            out.push(b' ');
        }
        if plain(m) {
            out.extend_from_slice(m);
            continue;
        }
        out.push(b'"');
        for &b in m {
            match b {
                b'"' => out.extend_from_slice(b"\\\""),
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b' '..=b'~' => out.push(b),
                _ => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            }
        }
        out.push(b'"');
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// `isspace` of the C locale.
fn blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Reads the masks of a text form (see the module doc).
pub fn split(text: &[u8]) -> Result<Vec<Vec<u8>>, TextError> {
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < text.len() && blank(text[i]) {
            i += 1;
        }
        if i >= text.len() {
            return Ok(out);
        }
        let mut cur = Vec::new();
        let (mut inq, mut insq) = (false, false);
        loop {
            let c = text.get(i).copied();
            let next = text.get(i + 1).copied();
            if inq {
                match (c, next) {
                    (None, _) => return Err(TextError::Unbalanced),
                    (Some(b'\\'), Some(b'x')) => {
                        let hi = text.get(i + 2).copied().and_then(hex);
                        let lo = text.get(i + 3).copied().and_then(hex);
                        if let (Some(hi), Some(lo)) = (hi, lo) {
                            cur.push(hi * 16 + lo);
                            i += 3;
                        } else {
                            cur.push(b'x');
                            i += 1;
                        }
                    }
                    (Some(b'\\'), Some(e)) => {
                        cur.push(match e {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        i += 1;
                    }
                    (Some(b'"'), n) => {
                        if n.is_some_and(|n| !blank(n)) {
                            return Err(TextError::AfterQuote);
                        }
                        i += 1;
                        break;
                    }
                    (Some(b), _) => cur.push(b),
                }
            } else if insq {
                match (c, next) {
                    (None, _) => return Err(TextError::Unbalanced),
                    (Some(b'\\'), Some(b'\'')) => {
                        cur.push(b'\'');
                        i += 1;
                    }
                    (Some(b'\''), n) => {
                        if n.is_some_and(|n| !blank(n)) {
                            return Err(TextError::AfterQuote);
                        }
                        i += 1;
                        break;
                    }
                    (Some(b), _) => cur.push(b),
                }
            } else {
                match c {
                    None => break,
                    Some(b) if blank(b) => break,
                    Some(b'"') => inq = true,
                    Some(b'\'') => insq = true,
                    Some(b) => cur.push(b),
                }
            }
            i += 1;
        }
        out.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_masks_stay_as_they_were() {
        assert_eq!(join(&[&b"^user:"[..], b"^session:"]), b"^user: ^session:");
        assert_eq!(
            split(b"^user: ^session:").unwrap(),
            vec![b"^user:".to_vec(), b"^session:".to_vec()]
        );
        assert_eq!(join::<&[u8]>(&[]), b"");
        assert!(split(b"").unwrap().is_empty());
        assert!(split(b"   ").unwrap().is_empty());
    }

    #[test]
    fn odd_masks_are_quoted() {
        let masks: Vec<&[u8]> = vec![b"", b"a b", b"q\"", b"b\\", b"\x00\xff\n", b"it's"];
        let text = join(&masks);
        assert_eq!(
            text,
            b"\"\" \"a b\" \"q\\\"\" \"b\\\\\" \"\\x00\\xff\\n\" \"it's\""
        );
        assert_eq!(split(&text).unwrap(), masks);
    }

    #[test]
    fn reads_what_sdssplitargs_reads() {
        assert_eq!(
            split(b"'a b' x").unwrap(),
            vec![b"a b".to_vec(), b"x".to_vec()]
        );
        assert_eq!(split(b"a\"b c\"").unwrap(), vec![b"ab c".to_vec()]);
        assert_eq!(split(b"\"\\x4g\"").unwrap(), vec![b"x4g".to_vec()]);
        assert_eq!(split(b"\"a"), Err(TextError::Unbalanced));
        assert_eq!(split(b"\"a\"b"), Err(TextError::AfterQuote));
        assert_eq!(split(b"'a"), Err(TextError::Unbalanced));
    }

    proptest! {
        #[test]
        fn every_byte_mask_set_round_trips(
            masks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 0..8)
        ) {
            let text = join(&masks);
            prop_assert_eq!(split(&text).unwrap(), masks);
            // Printable ASCII only: Redis writes it back unchanged.
            prop_assert!(text.iter().all(|b| (b' '..=b'~').contains(b)));
        }
    }
}
