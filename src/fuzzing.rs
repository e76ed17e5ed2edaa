//! Properties checked by the fuzz targets in `fuzz/` and by the high-count
//! property tests in `tests/fuzz.rs`. Each function takes raw bytes, cannot
//! fail on any input, and panics only when a property is broken. Pure: no
//! Redis import.

use crate::amqp::deliverable;
use crate::bus::{decode, encode, loggable, NAMES};
use crate::config::Settings;
use crate::event::{split, Encoder};
use crate::keymask::reference::reference_match;
use crate::keymask::{KeyMask, KeyMasks};
use lapin::types::ShortString;

/// The matcher agrees with the reference. The input is a mask and a key,
/// separated by the first NUL byte (no NUL: the whole input is the mask and
/// also the key).
pub fn matcher(data: &[u8]) {
    let (mask, key) = match memchr::memchr(0, data) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let got = KeyMask::new(mask).matches(key);
    if let Some(want) = reference_match(mask, key) {
        assert_eq!(
            got,
            want,
            "mask {:?} key {:?}",
            String::from_utf8_lossy(mask),
            String::from_utf8_lossy(key)
        );
    }
}

/// A mask set's automaton agrees with the reference on every mask: any
/// match is a match. Input: a count byte (1 to 4 masks), then each mask as a
/// length byte (0 to 15) and its bytes, then the key. Masks and keys hold any
/// byte, NUL and `\n` included.
pub fn mask_set(data: &[u8]) {
    let Some((&count, mut rest)) = data.split_first() else {
        return;
    };
    let mut masks: Vec<&[u8]> = Vec::new();
    for _ in 0..1 + count % 4 {
        let Some((&len, tail)) = rest.split_first() else {
            break;
        };
        let len = usize::from(len % 16).min(tail.len());
        masks.push(&tail[..len]);
        rest = &tail[len..];
    }
    if masks.is_empty() || masks.contains(&&b"ALL"[..]) {
        return;
    }
    let key = rest;
    let Ok(KeyMasks::Some(set)) = KeyMasks::from_args(&masks) else {
        panic!("masks under the limits are a set: {masks:?}");
    };
    let automaton = set.build_now().expect("a small set builds");
    let got = automaton.is_match(key).expect("the lazy DFA answers");
    let mut want = Some(false);
    for m in &masks {
        match reference_match(m, key) {
            Some(true) => {
                want = Some(true);
                break;
            }
            Some(false) => {}
            None => want = None,
        }
    }
    if let Some(want) = want {
        assert_eq!(
            got,
            want,
            "masks {:?} key {:?}",
            masks
                .iter()
                .map(|m| String::from_utf8_lossy(m))
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(key)
        );
    }
    assert_eq!(got, set.linear_matches(key), "automaton and linear matcher");
}

/// Every payload that decodes encodes back to the same bytes; commands built
/// from the input survive a round trip; the password never reaches a log line.
pub fn bus(data: &[u8]) {
    if let Some((name, args)) = decode(data) {
        assert_eq!(encode(name, &args).as_deref(), Some(data));
    }
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let args: Vec<&[u8]> = rest.split(|b| *b == 0xff).collect();
    let payload = encode(name, &args).expect("a known command encodes");
    assert_eq!(decode(&payload), Some((name, args.clone())));
    let line = loggable(name, &args);
    if matches!(name, "config_set" | "connect") {
        if let Some(shown) = line.split(' ').nth(3) {
            assert_eq!(shown, "***", "the password is masked: {line:?}");
        }
    }
}

/// Splitting any list element never panics; a deliverable record gives a
/// valid AMQP short string; an encoded event splits back into its parts.
pub fn record(data: &[u8]) {
    if let Some(p) = deliverable(data, usize::MAX) {
        assert!(ShortString::try_new(p.message_id).is_ok());
        assert_eq!(split(data), Some(p));
    }
    // An event built from the input: db from the first 4 bytes, then
    // event and key split at the first NUL.
    let (db, rest) = match data.split_first_chunk::<4>() {
        Some((d, rest)) => (i32::from_le_bytes(*d), rest),
        None => (0, data),
    };
    let (event, key) = match memchr::memchr(0, rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let mut enc = Encoder::new("f00d");
    let r = enc.record(1_700_000_000, db, event, key);
    let p = split(&r).expect("an encoded event splits");
    assert_eq!(p.message_id, "f00d-1");
    assert_eq!(p.timestamp, 1_700_000_000);
    assert_eq!(
        p.body,
        [format!("{db}\n").as_bytes(), event, b"\n", key].concat()
    );
}

/// Load and `config_set` arguments (split at NUL bytes) never panic, and
/// no error shows the password: checked with the password (the 5th load
/// argument, the 4th of `config_set`) replaced by a marker text.
pub fn args(data: &[u8]) {
    const MARK: &[u8] = b"Pw-5ecret-M4rk";
    let mut args: Vec<&[u8]> = data.split(|b| *b == 0).take(24).collect();
    if memchr::memmem::find(data, b"Pw-5ecret").is_some() {
        return;
    }
    let _ = Settings::from_load_args(&args);
    let _ = Settings::default().with_args(&args);
    let shown = |e: crate::config::ConfigError| {
        let text = e.to_string();
        assert!(!text.contains("Pw-5ecret"), "password in {text:?}");
    };
    if args.len() > 4 {
        let keep = args[4];
        args[4] = MARK;
        if let Err(e) = Settings::from_load_args(&args) {
            shown(e);
        }
        args[4] = keep;
    }
    if args.len() > 3 {
        args[3] = MARK;
        if let Err(e) = Settings::default().with_args(&args) {
            shown(e);
        }
    }
}
