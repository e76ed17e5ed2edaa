//! Key masks: the small matcher from Kernighan and Pike's "The Practice of
//! Programming".
//!
//! Syntax: `c` literal byte, `.` any byte, `*` zero or more of the previous
//! item, `^` anchors the start (first byte only), `$` anchors the end (last
//! byte only). Nothing else is special. Without `^` a mask matches anywhere.
//!
//! - [`mask`]: one mask, matched in linear time: the matcher of record.
//! - [`automaton`]: every mask of a set in one lazy DFA, so that a key costs
//!   the same with 1 mask or 100,000.
//! - [`compile`]: builds that automaton on a thread of its own when a set is
//!   first used. Until it is ready the set matches with the linear matcher:
//!   the answers are the same, only slower.

pub mod automaton;
mod compile;
pub mod mask;
pub mod reference;
pub mod text;

pub use automaton::{Automaton, BuildError};
pub use mask::KeyMask;

/// True while a thread of the module builds a mask automaton.
pub fn compiling() -> bool {
    compile::running()
}

use crate::knob::Tunable;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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

/// `key_evt_amqp.keymask-max-bytes`: memory for the automaton of the key masks
/// (its NFA and its cache of DFA states). A set whose NFA needs more is matched
/// by the linear matcher instead. Read when a set is built.
pub static KEYMASK_MAX_BYTES: Tunable =
    Tunable::new("keymask-max-bytes", 128 << 20, 1 << 20, 16 << 30);

/// Masks and, once built, their automaton. Clones share both.
#[derive(Clone)]
pub struct MaskSet(Arc<SetInner>);

struct SetInner {
    masks: Vec<KeyMask>,
    automaton: OnceLock<Result<Automaton, BuildError>>,
    requested: AtomicBool,
}

impl SetInner {
    /// Builds the automaton unless it is built; waits for a build under way.
    fn build(&self) -> &Result<Automaton, BuildError> {
        self.automaton.get_or_init(|| {
            std::panic::catch_unwind(|| {
                Automaton::build(&self.masks, KEYMASK_MAX_BYTES.get_usize())
            })
            .unwrap_or_else(|_| Err(BuildError::Failed("the build panicked".into())))
        })
    }
}

/// Which matcher a set uses now (INFO `keymask_matcher`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// No mask, or `ALL`: no matching at all.
    Trivial,
    /// The automaton is being built; the linear matcher answers meanwhile.
    Building,
    /// The automaton answers.
    Automaton,
    /// The automaton could not be built; the linear matcher answers.
    Linear(BuildError),
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Trivial => f.write_str("none"),
            Self::Building => f.write_str("building"),
            Self::Automaton => f.write_str("automaton"),
            Self::Linear(e) => write!(f, "linear ({e})"),
        }
    }
}

impl MaskSet {
    fn new(masks: Vec<KeyMask>) -> Self {
        Self(Arc::new(SetInner {
            masks,
            automaton: OnceLock::new(),
            requested: AtomicBool::new(false),
        }))
    }

    /// The masks, in the order given.
    pub fn masks(&self) -> &[KeyMask] {
        &self.0.masks
    }

    /// True when a mask matches `key`. The first call asks for the
    /// automaton to be built; until it is, the linear matcher answers.
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self.0.automaton.get() {
            Some(Ok(a)) => {
                if let Some(hit) = a.is_match(key) {
                    return hit;
                }
            }
            Some(Err(_)) => {}
            None => {
                if !self.0.requested.load(Ordering::Relaxed)
                    && !self.0.requested.swap(true, Ordering::Relaxed)
                {
                    compile::request(&self.0);
                }
            }
        }
        self.linear_matches(key)
    }

    /// The linear matcher's answer (the matcher of record).
    pub fn linear_matches(&self, key: &[u8]) -> bool {
        self.0.masks.iter().any(|m| m.matches(key))
    }

    /// Builds the automaton now, on this thread (tests, fuzzing, benches).
    pub fn build_now(&self) -> Result<&Automaton, &BuildError> {
        self.0.build().as_ref()
    }

    /// Which matcher answers now.
    pub fn matcher(&self) -> Matcher {
        match self.0.automaton.get() {
            None => Matcher::Building,
            Some(Ok(_)) => Matcher::Automaton,
            Some(Err(e)) => Matcher::Linear(e.clone()),
        }
    }

    /// Bytes held: the masks, and the automaton once built.
    pub fn memory(&self) -> usize {
        let masks: usize = self
            .0
            .masks
            .iter()
            .map(|m| std::mem::size_of::<KeyMask>() + m.source().len() * 3)
            .sum();
        let automaton = match self.0.automaton.get() {
            Some(Ok(a)) => a.memory(),
            _ => 0,
        };
        masks + automaton
    }
}

impl PartialEq for MaskSet {
    fn eq(&self, other: &Self) -> bool {
        self.0.masks == other.0.masks
    }
}

impl Eq for MaskSet {}

impl std::fmt::Debug for MaskSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MaskSet")
            .field("masks", &self.0.masks.len())
            .field("matcher", &self.matcher())
            .finish()
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
    Some(MaskSet),
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
        Ok(Self::Some(MaskSet::new(
            args.iter().map(|a| KeyMask::new(a.as_ref())).collect(),
        )))
    }

    /// Returns the set with `args` added (`keymask_add`); `self` is unchanged on error.
    pub fn with_added<A: AsRef<[u8]>>(&self, args: &[A]) -> Result<Self, MaskError> {
        let added = Self::from_args(args)?;
        Ok(match (self, added) {
            (Self::All, _) | (_, Self::All) => Self::All,
            (Self::None, other) => other,
            (this, Self::None) => this.clone(),
            (Self::Some(a), Self::Some(b)) => {
                let total = a.masks().len() + b.masks().len();
                if total > MAX_MASKS {
                    return Err(MaskError::TooMany(total));
                }
                let mut all = Vec::with_capacity(total);
                all.extend_from_slice(a.masks());
                all.extend_from_slice(b.masks());
                Self::Some(MaskSet::new(all))
            }
        })
    }

    /// True when `key` must be forwarded.
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Some(set) => set.matches(key),
        }
    }

    /// Which matcher answers now.
    pub fn matcher(&self) -> Matcher {
        match self {
            Self::None | Self::All => Matcher::Trivial,
            Self::Some(set) => set.matcher(),
        }
    }

    /// Bytes held by the masks and their automaton (INFO `keymask_bytes`).
    pub fn memory(&self) -> usize {
        match self {
            Self::None | Self::All => 0,
            Self::Some(set) => set.memory(),
        }
    }

    /// Every mask as given (`ALL` for all keys).
    pub fn sources(&self) -> Vec<Vec<u8>> {
        match self {
            Self::None => Vec::new(),
            Self::All => vec![b"ALL".to_vec()],
            Self::Some(set) => set.masks().iter().map(|m| m.source().to_vec()).collect(),
        }
    }

    /// The first few masks as given, and how many more there are, for INFO.
    pub fn describe(&self) -> String {
        match self {
            Self::None => String::new(),
            Self::All => "ALL".to_string(),
            Self::Some(set) => {
                let masks = set.masks();
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
            Self::Some(set) => set.masks().len(),
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
        super::reference::reference_match(re, text).expect("within the work budget")
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
