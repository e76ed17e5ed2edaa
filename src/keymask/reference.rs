//! The matcher of "Beautiful Code" (Kernighan and Pike), recursive, as
//! the reference the linear matcher and the automaton are checked against
//! (unit tests, the property tests, the fuzz targets).

/// Work budget of the reference matcher, in steps; inputs that need more
/// are not compared (the reference is exponential with many stars).
const REFERENCE_BUDGET: u32 = 200_000;

/// The recursive matcher from "Beautiful Code" (Kernighan and Pike), with a
/// work budget: `None` when the budget runs out.
pub fn reference_match(re: &[u8], text: &[u8]) -> Option<bool> {
    let mut budget = REFERENCE_BUDGET;
    let r = if let Some(rest) = re.strip_prefix(b"^") {
        here(rest, text, &mut budget)
    } else {
        let mut t = text;
        loop {
            if here(re, t, &mut budget) {
                break true;
            }
            if t.is_empty() {
                break false;
            }
            t = &t[1..];
        }
    };
    (budget > 0).then_some(r)
}

fn here(re: &[u8], text: &[u8], budget: &mut u32) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    let Some((&first, rest)) = re.split_first() else {
        return true;
    };
    if rest.first() == Some(&b'*') {
        return star(first, &rest[1..], text, budget);
    }
    if re == b"$" {
        return text.is_empty();
    }
    match text.split_first() {
        Some((&c, tail)) if first == b'.' || first == c => here(rest, tail, budget),
        _ => false,
    }
}

fn star(c: u8, re: &[u8], mut text: &[u8], budget: &mut u32) -> bool {
    loop {
        if here(re, text, budget) {
            return true;
        }
        match text.split_first() {
            Some((&t, tail)) if t == c || c == b'.' => text = tail,
            _ => return false,
        }
    }
}
