//! Key masks: the small matcher from Kernighan and Pike's "The Practice of
//! Programming", run as a linear-time state-set simulation so that no mask
//! can make Redis spend more than `O(key length x mask length)` on a key.
//!
//! Syntax: `c` literal byte, `.` any byte, `*` zero or more of the previous
//! item, `^` anchors the start (first byte only), `$` anchors the end (last
//! byte only). Nothing else is special. Without `^` a mask matches anywhere.

use smallvec::SmallVec;
use thiserror::Error;

/// Longest mask accepted, in bytes.
pub const MAX_MASK_LEN: usize = 1024;
/// Most masks held at once.
pub const MAX_MASKS: usize = 100_000;
/// Masks shown by [`KeyMasks::describe`] before the rest is summed up.
const DESCRIBE_FIRST: usize = 10;

/// A mask set the limits refuse.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MaskError {
    /// One mask is longer than [`MAX_MASK_LEN`].
    #[error("a mask of {0} bytes is longer than {MAX_MASK_LEN} bytes")]
    TooLong(usize),
    /// The set would hold more than [`MAX_MASKS`] masks.
    #[error("{0} masks are more than {MAX_MASKS}")]
    TooMany(usize),
}

/// One item of a compiled mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Item {
    /// `None` is `.` (any byte).
    byte: Option<u8>,
    /// Followed by `*`.
    star: bool,
}

impl Item {
    fn accepts(self, c: u8) -> bool {
        self.byte.is_none_or(|b| b == c)
    }
}

/// One compiled mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMask {
    source: Vec<u8>,
    items: Vec<Item>,
    anchored_start: bool,
    anchored_end: bool,
}

type Bits = SmallVec<[u64; 4]>;

fn set(bits: &mut Bits, i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn get(bits: &Bits, i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

impl KeyMask {
    /// Compiles a mask. Every byte string is a valid mask.
    pub fn new(source: &[u8]) -> Self {
        let mut rest = source;
        let anchored_start = rest.first() == Some(&b'^');
        if anchored_start {
            rest = &rest[1..];
        }
        let anchored_end = rest.last() == Some(&b'$');
        if anchored_end {
            rest = &rest[..rest.len() - 1];
        }
        let mut items: Vec<Item> = Vec::with_capacity(rest.len());
        let mut i = 0;
        while i < rest.len() {
            let byte = if rest[i] == b'.' { None } else { Some(rest[i]) };
            let star = rest.get(i + 1) == Some(&b'*');
            items.push(Item { byte, star });
            i += if star { 2 } else { 1 };
        }
        Self {
            source: source.to_vec(),
            items,
            anchored_start,
            anchored_end,
        }
    }

    /// The mask as given.
    pub fn source(&self) -> &[u8] {
        &self.source
    }

    /// Adds state `i` and everything reachable from it by skipping starred items.
    /// A state already present has its closure present too, so the walk stops
    /// there: all closures of one step cost `O(mask length)` together.
    fn close(&self, bits: &mut Bits, mut i: usize) {
        loop {
            if get(bits, i) {
                return;
            }
            set(bits, i);
            if i < self.items.len() && self.items[i].star {
                i += 1;
            } else {
                return;
            }
        }
    }

    /// True when the mask matches `key`.
    pub fn matches(&self, key: &[u8]) -> bool {
        let n = self.items.len();
        let words = n / 64 + 1;
        let mut cur: Bits = SmallVec::from_elem(0, words);
        let mut next: Bits = SmallVec::from_elem(0, words);
        self.close(&mut cur, 0);
        for &c in key {
            if !self.anchored_end && get(&cur, n) {
                return true;
            }
            next.iter_mut().for_each(|w| *w = 0);
            for i in 0..n {
                if get(&cur, i) && self.items[i].accepts(c) {
                    if self.items[i].star {
                        self.close(&mut next, i);
                    } else {
                        self.close(&mut next, i + 1);
                    }
                }
            }
            if !self.anchored_start {
                self.close(&mut next, 0);
            } else if next.iter().all(|w| *w == 0) {
                // No state is alive and none can start again: no match.
                return false;
            }
            std::mem::swap(&mut cur, &mut next);
        }
        get(&cur, n)
    }
}

/// The set of masks a key is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum KeyMasks {
    /// No mask: nothing is forwarded.
    #[default]
    None,
    /// `ALL`: every key is forwarded.
    All,
    /// Forward a key when any mask matches it.
    Some(Vec<KeyMask>),
}

impl KeyMasks {
    /// Builds the set from command or load arguments; `ALL` anywhere wins.
    /// Refuses a mask over [`MAX_MASK_LEN`] bytes or more than [`MAX_MASKS`] masks.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Result<Self, MaskError> {
        if args.is_empty() {
            return Ok(Self::None);
        }
        if args.iter().any(|a| a.as_ref() == b"ALL") {
            return Ok(Self::All);
        }
        if args.len() > MAX_MASKS {
            return Err(MaskError::TooMany(args.len()));
        }
        if let Some(long) = args.iter().find(|a| a.as_ref().len() > MAX_MASK_LEN) {
            return Err(MaskError::TooLong(long.as_ref().len()));
        }
        Ok(Self::Some(
            args.iter().map(|a| KeyMask::new(a.as_ref())).collect(),
        ))
    }

    /// Returns the set with `args` added (`keymask_add`); `self` is unchanged on error.
    pub fn with_added<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Self, MaskError> {
        let added = Self::from_args(args)?;
        Ok(match (self, added) {
            (Self::All, _) | (_, Self::All) => Self::All,
            (Self::None, other) => other,
            (this, Self::None) => this.clone(),
            (Self::Some(a), Self::Some(b)) => {
                let total = a.len() + b.len();
                if total > MAX_MASKS {
                    return Err(MaskError::TooMany(total));
                }
                let mut all = Vec::with_capacity(total);
                all.extend_from_slice(a);
                all.extend(b);
                Self::Some(all)
            }
        })
    }

    /// True when `key` must be forwarded.
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Some(masks) => masks.iter().any(|m| m.matches(key)),
        }
    }

    /// Every mask as given (`ALL` for all keys).
    pub fn sources(&self) -> Vec<Vec<u8>> {
        match self {
            Self::None => Vec::new(),
            Self::All => vec![b"ALL".to_vec()],
            Self::Some(masks) => masks.iter().map(|m| m.source().to_vec()).collect(),
        }
    }

    /// The first few masks as given, and how many more there are, for INFO.
    pub fn describe(&self) -> String {
        match self {
            Self::None => String::new(),
            Self::All => "ALL".to_string(),
            Self::Some(masks) => {
                let mut out = masks
                    .iter()
                    .take(DESCRIBE_FIRST)
                    .map(|m| printable(m.source()))
                    .collect::<Vec<_>>()
                    .join(" ");
                if masks.len() > DESCRIBE_FIRST {
                    out.push_str(&format!(" ...({} more)", masks.len() - DESCRIBE_FIRST));
                }
                out
            }
        }
    }

    /// How many masks are set (`ALL` counts as one).
    pub fn count(&self) -> usize {
        match self {
            Self::None => 0,
            Self::All => 1,
            Self::Some(m) => m.len(),
        }
    }
}

/// Shows bytes on one INFO or log line: anything outside printable ASCII as `\\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The book's recursive matcher (shared with the fuzz target).
    fn reference(re: &[u8], text: &[u8]) -> bool {
        crate::fuzzing::reference_match(re, text).expect("within the work budget")
    }

    fn m(mask: &str, key: &str) -> bool {
        KeyMask::new(mask.as_bytes()).matches(key.as_bytes())
    }

    #[test]
    fn examples_from_the_spec() {
        assert!(m("^prefix.*$", "prefix:1"));
        assert!(m("^prefix.*$", "prefix"));
        assert!(!m("^prefix.*$", "xprefix"));
        assert!(m(".*substring.*", "a substring b"));
        assert!(m("other_key.*postfix$", "other_key:1:postfix"));
        assert!(!m("other_key.*postfix$", "other_key:1:postfix:x"));
        assert!(m("user", "the user key"));
        assert!(m("", "anything"));
        assert!(m("^$", ""));
        assert!(!m("^$", "x"));
        assert!(m("a$b", "xa$b"), "$ in the middle is a literal");
        assert!(m("x^", "x^"), "^ after the start is a literal");
    }

    #[test]
    fn binary_keys() {
        let mask = KeyMask::new(b"^a\n.\x00$");
        assert!(mask.matches(b"a\n\xff\x00"));
        assert!(!mask.matches(b"a\n\xff\x00z"));
    }

    #[test]
    fn pathological_mask_is_fast() {
        let mask = KeyMask::new(b"a*a*a*a*a*a*a*a*a*a*a*a*b");
        let key = vec![b'a'; 10_000];
        assert!(!mask.matches(&key));
    }

    #[test]
    fn long_masks_spill_past_inline_bits() {
        let long = "a".repeat(300);
        assert!(m(&long, &format!("x{long}y")));
        assert!(!m(&long, &"a".repeat(299)));
    }

    #[test]
    fn set_semantics() {
        assert_eq!(KeyMasks::from_args::<&[u8]>(&[]), Ok(KeyMasks::None));
        assert!(!KeyMasks::None.matches(b"k"));
        let all = KeyMasks::from_args(&[&b"^x"[..], b"ALL"]).unwrap();
        assert_eq!(all, KeyMasks::All);
        let s = KeyMasks::from_args(&[&b"^a"[..]]).unwrap();
        let mut s = s.with_added(&[&b"^b"[..]]).unwrap();
        assert!(s.matches(b"a1") && s.matches(b"b1") && !s.matches(b"c1"));
        assert_eq!(s.count(), 2);
        assert_eq!(
            KeyMasks::from_args(&[&b"a b\n\x00"[..]])
                .unwrap()
                .describe(),
            "a\\x20b\\x0a\\x00"
        );
        s = s.with_added(&[&b"ALL"[..]]).unwrap();
        assert_eq!(s, KeyMasks::All);
    }

    #[test]
    fn limits() {
        let long = vec![b'a'; MAX_MASK_LEN + 1];
        assert_eq!(
            KeyMasks::from_args(&[&long[..]]),
            Err(MaskError::TooLong(MAX_MASK_LEN + 1))
        );
        assert!(KeyMasks::from_args(&[&long[1..]]).is_ok());
        let many: Vec<String> = (0..MAX_MASKS).map(|i| format!("^t{i}:")).collect();
        let set = KeyMasks::from_args(&many).unwrap();
        assert_eq!(set.count(), MAX_MASKS);
        assert_eq!(
            set.with_added(&["x"]),
            Err(MaskError::TooMany(MAX_MASKS + 1))
        );
        let d = set.describe();
        assert!(d.len() < 200 && d.ends_with("...(99990 more)"), "{d}");
    }

    #[test]
    fn many_stars_stay_linear() {
        // 500 starred items and a 20,000-byte key: quadratic work would take seconds.
        let mask = [&b"a*".repeat(500)[..], b"b"].concat();
        let key = vec![b'a'; 20_000];
        let t = std::time::Instant::now();
        assert!(!KeyMask::new(&mask).matches(&key));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );
    }

    proptest! {
        #[test]
        fn agrees_with_reference(
            mask in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'.'), Just(b'*'), Just(b'^'), Just(b'$')], 0..8),
            key in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), Just(b'$'), Just(b'^')], 0..10),
        ) {
            prop_assert_eq!(KeyMask::new(&mask).matches(&key), reference(&mask, &key), "mask {:?} key {:?}", String::from_utf8_lossy(&mask), String::from_utf8_lossy(&key));
        }
    }
}
