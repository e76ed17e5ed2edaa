//! Compares a source data set (one server, or a cluster's masters) with a
//! target server, key by key.

use crate::diff::{self, Difference};
use crate::state::{self, KeyState};
use crate::Error;
use redis::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Keys read per round trip.
const BATCH: usize = 256;

/// What to compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The databases (only db 0 when the source is a cluster).
    pub dbs: Vec<u8>,
    /// Keys starting with this are skipped on both sides (the module's
    /// fallback lists); empty skips nothing.
    pub ignore_prefix: Vec<u8>,
    /// How far apart two TTLs may be and still count as equal.
    pub ttl_slack_ms: u64,
}

impl Default for Options {
    /// Databases 0 to 15, the prefix `key_evt_amqp:fallback`, 2000 ms.
    fn default() -> Self {
        Self {
            dbs: (0..=15).collect(),
            ignore_prefix: b"key_evt_amqp:fallback".to_vec(),
            ttl_slack_ms: 2000,
        }
    }
}

/// A key that differs.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyDiff {
    /// Its database.
    pub db: u8,
    /// Its name.
    pub key: Vec<u8>,
    /// How it differs (at least one entry).
    pub differences: Vec<Difference>,
}

impl fmt::Display for KeyDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "db {} key {}: ", self.db, diff::show(&self.key))?;
        for (i, d) in self.differences.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// The result of [`compare`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The databases compared.
    pub dbs: Vec<u8>,
    /// Keys compared (in the source, the target or both; ignored ones not counted).
    pub compared: u64,
    /// Keys skipped for the ignore prefix.
    pub ignored: u64,
    /// Keys present on both sides as a stream or module type: compared by type only.
    pub type_only: u64,
    /// The keys that differ, by db then key.
    pub diffs: Vec<KeyDiff>,
}

impl Report {
    /// `compared N keys, M differ`.
    pub fn summary(&self) -> String {
        format!(
            "compared {} keys, {} differ",
            self.compared,
            self.diffs.len()
        )
    }
}

/// Compares every key of `sources` (one server, or every master of a
/// cluster: then only db 0) with `target`: type, value, and TTL within
/// the slack. Streams and module types are compared by type only.
pub fn compare(
    sources: &[redis::Client],
    target: &redis::Client,
    options: &Options,
) -> Result<Report, Error> {
    if sources.is_empty() {
        return Err(Error::Usage("no source to compare".into()));
    }
    let mut sources = sources
        .iter()
        .map(|c| c.get_connection())
        .collect::<Result<Vec<_>, _>>()?;
    let mut target = target.get_connection()?;
    let mut cluster = sources.len() > 1;
    for c in &mut sources {
        cluster |= cluster_enabled(c)?;
    }
    let dbs = if cluster {
        vec![0]
    } else {
        options.dbs.clone()
    };
    let mut report = Report {
        dbs: dbs.clone(),
        ..Report::default()
    };
    for db in dbs {
        compare_db(db, &mut sources, &mut target, options, &mut report)?;
    }
    Ok(report)
}

/// Compares one database.
fn compare_db(
    db: u8,
    sources: &mut [Connection],
    target: &mut Connection,
    options: &Options,
    report: &mut Report,
) -> Result<(), Error> {
    // Which source holds each key.
    let mut owner: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    for (i, c) in sources.iter_mut().enumerate() {
        select(c, db)?;
        for key in scan(c)? {
            owner.entry(key).or_insert(i);
        }
    }
    select(target, db)?;
    let mut all: BTreeSet<Vec<u8>> = scan(target)?.into_iter().collect();
    all.extend(owner.keys().cloned());
    let prefix = options.ignore_prefix.as_slice();
    let before = all.len();
    all.retain(|k| prefix.is_empty() || !k.starts_with(prefix));
    report.ignored += (before - all.len()) as u64;
    let all: Vec<Vec<u8>> = all.into_iter().collect();
    for batch in all.chunks(BATCH) {
        let in_target = state::fetch(target, batch)?;
        let mut in_source: Vec<Option<KeyState>> = vec![None; batch.len()];
        for (i, c) in sources.iter_mut().enumerate() {
            let (at, keys): (Vec<usize>, Vec<Vec<u8>>) = batch
                .iter()
                .enumerate()
                .filter(|(_, k)| owner.get(*k) == Some(&i))
                .map(|(j, k)| (j, k.clone()))
                .unzip();
            for (j, st) in at.into_iter().zip(state::fetch(c, &keys)?) {
                in_source[j] = st;
            }
        }
        for ((key, s), t) in batch.iter().zip(&in_source).zip(&in_target) {
            report.compared += 1;
            let differences = diff::diff(s.as_ref(), t.as_ref(), options.ttl_slack_ms);
            if let (Some(s), Some(t)) = (s, t) {
                if s.data.is_none() && s.type_name == t.type_name {
                    report.type_only += 1;
                }
            }
            if !differences.is_empty() {
                report.diffs.push(KeyDiff {
                    db,
                    key: key.clone(),
                    differences,
                });
            }
        }
    }
    Ok(())
}

/// True when the server runs in cluster mode.
fn cluster_enabled(c: &mut Connection) -> Result<bool, Error> {
    let info: String = redis::cmd("INFO").arg("cluster").query(c)?;
    Ok(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
}

fn select(c: &mut Connection, db: u8) -> Result<(), Error> {
    redis::cmd("SELECT").arg(db).query::<()>(c)?;
    Ok(())
}

/// Every key of the current database.
fn scan(c: &mut Connection) -> Result<Vec<Vec<u8>>, Error> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(c)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}
