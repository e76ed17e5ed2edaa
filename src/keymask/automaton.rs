//! One automaton for a whole mask set: a lazy DFA (regex-automata's hybrid
//! DFA, bytes only, no Unicode) over the alternation of every mask. Matching
//! costs one table step per key byte however many masks there are; a DFA
//! state not built yet costs one step of the NFA, so a key never costs more
//! than the linear matcher.
//!
//! The mask items translate one to one: a byte is a literal, `.` the class
//! of all 256 bytes, `*` a greedy `{0,}` repetition, `^` the start of the
//! key and `$` its end.

use super::mask::{Item, KeyMask};
use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::{Class, ClassBytes, ClassBytesRange, Hir, Look, Repetition};
use std::sync::{Mutex, PoisonError};
use thiserror::Error;

/// The NFA takes at least this per mask item (measured: about 28).
const MIN_NFA_BYTES_PER_ITEM: usize = 16;

/// The lazy DFA's cache never gets less than this.
const MIN_CACHE_BYTES: usize = 2 << 20;

/// Why a set has no automaton (it is then matched by the linear matcher).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum BuildError {
    /// The NFA alone would need more than `keymask-max-bytes`.
    #[error("the masks need more than keymask-max-bytes ({0} bytes)")]
    TooBig(usize),
    /// regex-automata refused the set (not expected: every mask translates).
    #[error("the automaton could not be built: {0}")]
    Failed(String),
}

/// The compiled set.
pub struct Automaton {
    dfa: DFA,
    /// Used on the Redis main thread only; the lock is never contended.
    cache: Mutex<Cache>,
    /// Every mask starts with `^`: searches are anchored and stop at the
    /// first byte no mask can take.
    anchored: bool,
    nfa_bytes: usize,
}

impl std::fmt::Debug for Automaton {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Automaton")
            .field("anchored", &self.anchored)
            .field("bytes", &self.memory())
            .finish()
    }
}

fn item_hir(item: Item) -> Hir {
    let one = match item.byte {
        Some(b) => Hir::literal([b]),
        None => Hir::class(Class::Bytes(ClassBytes::new([ClassBytesRange::new(
            0, 255,
        )]))),
    };
    if item.star {
        Hir::repetition(Repetition {
            min: 0,
            max: None,
            greedy: true,
            sub: Box::new(one),
        })
    } else {
        one
    }
}

fn mask_hir(mask: &KeyMask) -> Hir {
    let mut parts = Vec::with_capacity(mask.items().len() + 2);
    if mask.anchored_start() {
        parts.push(Hir::look(Look::Start));
    }
    parts.extend(mask.items().iter().map(|i| item_hir(*i)));
    if mask.anchored_end() {
        parts.push(Hir::look(Look::End));
    }
    Hir::concat(parts)
}

impl Automaton {
    /// Compiles `masks` into one automaton of at most about `max_bytes`
    /// (the NFA, then a cache of twice its size, within the bound, and never
    /// under 2 MiB). Takes tens of milliseconds for 10,000 masks: the host
    /// calls it off the main thread.
    pub fn build(masks: &[KeyMask], max_bytes: usize) -> Result<Self, BuildError> {
        // The NFA needs at least this much; refuse before the syntax tree
        // (several times larger) is built.
        let items: usize = masks.iter().map(|m| m.items().len() + 2).sum();
        if items.saturating_mul(MIN_NFA_BYTES_PER_ITEM) > max_bytes {
            return Err(BuildError::TooBig(max_bytes));
        }
        let hir = Hir::alternation(masks.iter().map(mask_hir).collect());
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .utf8(false)
                    .which_captures(thompson::WhichCaptures::None)
                    .nfa_size_limit(Some(max_bytes)),
            )
            .build_from_hir(&hir)
            .map_err(|e| match e.size_limit() {
                Some(limit) => BuildError::TooBig(limit),
                None => BuildError::Failed(e.to_string()),
            })?;
        let nfa_bytes = nfa.memory_usage();
        let cache_bytes = nfa_bytes
            .saturating_mul(2)
            .min(max_bytes.saturating_sub(nfa_bytes))
            .max(MIN_CACHE_BYTES);
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .cache_capacity(cache_bytes)
                    // Never give up: a cleared cache is rebuilt state by state,
                    // each step no dearer than the NFA's.
                    .minimum_cache_clear_count(None)
                    .skip_cache_capacity_check(true),
            )
            .build_from_nfa(nfa)
            .map_err(|e| BuildError::Failed(e.to_string()))?;
        let cache = Mutex::new(dfa.create_cache());
        Ok(Self {
            dfa,
            cache,
            anchored: masks.iter().all(KeyMask::anchored_start),
            nfa_bytes,
        })
    }

    /// True when a mask matches `key`; `None` if the lazy DFA failed (never
    /// expected: it has no quit bytes and never gives up).
    #[inline]
    pub fn is_match(&self, key: &[u8]) -> Option<bool> {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let input = Input::new(key).earliest(true).anchored(if self.anchored {
            Anchored::Yes
        } else {
            Anchored::No
        });
        self.dfa
            .try_search_fwd(&mut cache, &input)
            .ok()
            .map(|m| m.is_some())
    }

    /// Bytes held: the NFA and the DFA states built so far.
    pub fn memory(&self) -> usize {
        let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        self.nfa_bytes + cache.memory_usage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(masks: &[&str]) -> Automaton {
        let masks: Vec<KeyMask> = masks.iter().map(|m| KeyMask::new(m.as_bytes())).collect();
        Automaton::build(&masks, 64 << 20).expect("builds")
    }

    #[test]
    fn translates_the_syntax() {
        let a = build(&["^prefix.*$", "other_key.*postfix$", "x^", "a$b"]);
        for (key, want) in [
            ("prefix:1", true),
            ("xprefix", false),
            ("q other_key:1:postfix", true),
            ("other_key:1:postfix:x", false),
            ("ax^", true),
            ("xa$b", true),
            ("nothing", false),
        ] {
            assert_eq!(a.is_match(key.as_bytes()), Some(want), "{key}");
        }
        let anchored = build(&["^a\n.\x00$", "^b*c"]);
        assert!(anchored.anchored);
        assert_eq!(anchored.is_match(b"a\n\xff\x00"), Some(true));
        assert_eq!(anchored.is_match(b"a\n\xff\x00z"), Some(false));
        assert_eq!(anchored.is_match(b"bbbc"), Some(true));
        assert_eq!(anchored.is_match(b"c"), Some(true));
        assert_eq!(anchored.is_match(b"xc"), Some(false));
    }

    #[test]
    fn empty_masks_match_everything() {
        assert_eq!(build(&[""]).is_match(b"k"), Some(true));
        assert_eq!(build(&["^"]).is_match(b""), Some(true));
        assert_eq!(build(&["^$"]).is_match(b"x"), Some(false));
        assert_eq!(build(&["$"]).is_match(b"x"), Some(true));
    }

    #[test]
    fn the_bound_is_kept() {
        let masks: Vec<KeyMask> = (0..10_000)
            .map(|i| KeyMask::new(format!("^tenant{i}:.*x$").as_bytes()))
            .collect();
        assert!(matches!(
            Automaton::build(&masks, 100_000),
            Err(BuildError::TooBig(100_000))
        ));
        let a = Automaton::build(&masks, 64 << 20).expect("builds");
        assert!(a.memory() < 64 << 20, "{}", a.memory());
        assert_eq!(a.is_match(b"tenant9999:abcx"), Some(true));
        assert_eq!(a.is_match(b"tenant9999:abcy"), Some(false));
        assert_eq!(a.is_match(b"tenant10000:abcx"), Some(false));
    }
}
