//! The fuzz properties (`redis_keyspace_amqp::fuzzing`) at high case counts,
//! plus every input kept in the corpus under `fuzz/corpus/<target>/`.
//! `KEA_FUZZ_CASES` sets the case count (default 200,000 per target).
//! `cargo fuzz run <target>` in `fuzz/` explores further (nightly).

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis_keyspace_amqp::fuzzing;
use std::path::Path;

fn cases() -> u32 {
    std::env::var("KEA_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000)
}

/// Runs `check` on the kept corpus, then on `cases()` generated inputs.
fn fuzz(target: &str, strategy: impl Strategy<Value = Vec<u8>>, check: fn(&[u8])) {
    fuzz_n(target, strategy, check, cases());
}

/// [`fuzz`] with `n` generated inputs.
fn fuzz_n(target: &str, strategy: impl Strategy<Value = Vec<u8>>, check: fn(&[u8]), n: u32) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut kept = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        check(&data);
        kept += 1;
    }
    assert!(kept > 0, "no corpus in {}", dir.display());
    let mut runner = TestRunner::new(Config {
        cases: n,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |data| {
            check(&data);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{target}: {e}"));
}

/// Bytes that matter to the matcher, and some that do not.
fn mask_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => prop::sample::select(b"ab.*^$".to_vec()),
        1 => any::<u8>(),
    ]
}

#[test]
fn matcher_agrees_with_the_reference() {
    let input = (vec(mask_byte(), 0..14), vec(mask_byte(), 0..24)).prop_map(|(m, k)| {
        let mut v = m;
        v.push(0);
        v.extend(k);
        v
    });
    fuzz("matcher", input, fuzzing::matcher);
}

#[test]
fn matcher_on_raw_bytes() {
    fuzz("matcher", vec(any::<u8>(), 0..64), fuzzing::matcher);
}

#[test]
fn mask_sets_agree_with_the_reference() {
    // One automaton per case: a tenth of the cases of the other properties.
    let mask = vec(mask_byte(), 0..10);
    let input = (
        vec(mask, 1..5),
        vec(
            prop_oneof![4 => mask_byte(), 1 => Just(b'\n'), 1 => Just(0u8)],
            0..24,
        ),
    )
        .prop_map(|(masks, key)| {
            let mut v = vec![(masks.len() - 1) as u8];
            for m in masks {
                v.push(m.len() as u8);
                v.extend(m);
            }
            v.extend(key);
            v
        });
    fuzz_n("mask_set", input, fuzzing::mask_set, cases() / 10);
}

#[test]
fn bus_round_trip() {
    let framed = (0u8..9, vec(vec(any::<u8>(), 0..12), 0..6)).prop_map(|(idx, args)| {
        let mut v = b"KEVA\x01".to_vec();
        v.push(idx);
        v.extend((args.len() as u32).to_le_bytes());
        for a in &args {
            v.extend((a.len() as u32).to_le_bytes());
            v.extend(a);
        }
        v
    });
    let input = prop_oneof![framed, vec(any::<u8>(), 0..80)];
    fuzz("bus", input, fuzzing::bus);
}

#[test]
fn record_split_and_properties() {
    let shaped = (
        vec(prop::sample::select(b"ab1-\n\xff".to_vec()), 0..300),
        any::<u64>(),
        vec(any::<u8>(), 0..40),
    )
        .prop_map(|(id, ts, body)| {
            [
                id,
                b"\n".to_vec(),
                ts.to_string().into_bytes(),
                b"\n".to_vec(),
                body,
            ]
            .concat()
        });
    let input = prop_oneof![shaped, vec(any::<u8>(), 0..80)];
    fuzz("record", input, fuzzing::record);
}

#[test]
fn argument_parsing() {
    let arg = prop_oneof![
        Just(b"1".to_vec()),
        Just(b"65536".to_vec()),
        Just(b"-1".to_vec()),
        Just(b"A".to_vec()),
        Just(b"%s%n".to_vec()),
        vec(any::<u8>(), 0..6).prop_filter("no separator", |a| !a.contains(&0)),
        vec(Just(b'x'), 250..260),
    ];
    let input = vec(arg, 0..14).prop_map(|args| args.join(&0u8));
    fuzz("args", input, fuzzing::args);
}
