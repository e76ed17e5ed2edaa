//! Applies one [`Record`] to the target Redis.

use crate::image::{Kind, Omitted, Value};
use crate::record::{Action, Record};
use crate::Error;
use redis::Pipeline;

/// The most elements (list elements, set members, hash or zset pairs) one
/// write command carries; a larger value is written by several commands in
/// the same transaction.
pub const CHUNK: usize = 1000;

/// What [`apply`] did to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Applied {
    /// Replaced the key by the after-image's value (and TTL).
    Wrote(Kind),
    /// Deleted the key.
    Deleted,
    /// `FLUSHDB`.
    FlushedDb,
    /// `FLUSHALL`.
    FlushedAll,
    /// `SWAPDB`.
    Swapped,
    /// A `snapshot_begin` / `snapshot_end` marker: nothing done.
    Marker,
    /// The after-image has no value: the key was left as it was.
    Unapplied {
        /// The value's type.
        kind: Kind,
        /// Why the message does not carry it.
        omitted: Omitted,
    },
}

/// Applies `rec` to the target behind `conn`:
///
/// - a delete event (`del`, `expired`, `evicted`, `rename_from`,
///   `move_from`), or any other key event without an after-image: `DEL`;
/// - an after-image with a value: in one `MULTI`/`EXEC`, `SELECT db`,
///   `DEL key`, then `SET` / `RPUSH` / `HSET` / `SADD` / `ZADD` (at most
///   [`CHUNK`] elements per command), then `PEXPIREAT` when the image has
///   `pexpireat`;
/// - an after-image without a value (`omitted`): nothing;
/// - `flushdb`, `flushall`, `swapdb`: the same command;
/// - `snapshot_begin` / `snapshot_end`: nothing.
///
/// Key events leave the connection's database selected as the record's.
pub fn apply(conn: &mut redis::Connection, rec: &Record) -> Result<Applied, Error> {
    let key = rec.key.as_slice();
    match rec.action()? {
        Action::Marker => Ok(Applied::Marker),
        Action::Unapplied { kind, omitted } => Ok(Applied::Unapplied { kind, omitted }),
        Action::Delete { db } => {
            in_db(db, |p| {
                p.cmd("DEL").arg(key).ignore();
            })
            .query::<()>(conn)?;
            Ok(Applied::Deleted)
        }
        Action::Write {
            db,
            value,
            pexpireat,
        } => {
            in_db(db, |p| {
                p.cmd("DEL").arg(key).ignore();
                write(p, key, value);
                if let Some(at) = pexpireat {
                    p.cmd("PEXPIREAT").arg(key).arg(at).ignore();
                }
            })
            .query::<()>(conn)?;
            Ok(Applied::Wrote(value.kind()))
        }
        Action::FlushDb { db } => {
            in_db(db, |p| {
                p.cmd("FLUSHDB").ignore();
            })
            .query::<()>(conn)?;
            Ok(Applied::FlushedDb)
        }
        Action::FlushAll => {
            redis::cmd("FLUSHALL").query::<()>(conn)?;
            Ok(Applied::FlushedAll)
        }
        Action::SwapDb { a, b } => {
            redis::cmd("SWAPDB").arg(a).arg(b).query::<()>(conn)?;
            Ok(Applied::Swapped)
        }
    }
}

/// A transaction that selects `db`, then runs what `f` adds.
fn in_db(db: u8, f: impl FnOnce(&mut Pipeline)) -> Pipeline {
    let mut p = redis::pipe();
    p.atomic().cmd("SELECT").arg(db).ignore();
    f(&mut p);
    p
}

/// Adds the commands that write `value` at `key` (which does not exist).
fn write(p: &mut Pipeline, key: &[u8], value: &Value) {
    match value {
        Value::String(s) => {
            p.cmd("SET").arg(key).arg(s.as_slice()).ignore();
        }
        Value::List(elems) => {
            for chunk in elems.chunks(CHUNK) {
                p.cmd("RPUSH").arg(key).arg(chunk).ignore();
            }
        }
        Value::Set(members) => {
            for chunk in members.chunks(CHUNK) {
                p.cmd("SADD").arg(key).arg(chunk).ignore();
            }
        }
        Value::Hash(pairs) => {
            for chunk in pairs.chunks(CHUNK) {
                let c = p.cmd("HSET").arg(key);
                for (field, v) in chunk {
                    c.arg(field.as_slice()).arg(v.as_slice());
                }
                c.ignore();
            }
        }
        Value::Zset(pairs) => {
            for chunk in pairs.chunks(CHUNK) {
                let c = p.cmd("ZADD").arg(key);
                for (member, score) in chunk {
                    c.arg(score_arg(*score)).arg(member.as_slice());
                }
                c.ignore();
            }
        }
    }
}

/// A score as ZADD reads it: the shortest text that reads back to the same
/// double (`1.5`, `1e300`), `inf` or `-inf`.
fn score_arg(score: f64) -> String {
    format!("{score:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_as_zadd_reads_them() {
        assert_eq!(score_arg(1.5), "1.5");
        assert_eq!(score_arg(2.0), "2.0");
        assert_eq!(score_arg(-2.5e300), "-2.5e300");
        assert_eq!(score_arg(f64::INFINITY), "inf");
        assert_eq!(score_arg(f64::NEG_INFINITY), "-inf");
        assert_eq!(score_arg(0.1).parse::<f64>().unwrap(), 0.1);
    }

    #[test]
    fn large_values_are_chunked() {
        let elems: Vec<Vec<u8>> = (0..2500).map(|i| i.to_string().into_bytes()).collect();
        let mut p = redis::pipe();
        write(&mut p, b"k", &Value::List(elems));
        let cmds: Vec<usize> = p.cmd_iter().map(|c| c.args_iter().count()).collect();
        assert_eq!(cmds, [1002, 1002, 502]);
        let pairs: Vec<(Vec<u8>, f64)> = (0..1001).map(|i| (vec![b'm'; i], 1.0)).collect();
        let mut p = redis::pipe();
        write(&mut p, b"k", &Value::Zset(pairs));
        let cmds: Vec<usize> = p.cmd_iter().map(|c| c.args_iter().count()).collect();
        assert_eq!(cmds, [2002, 4]);
    }
}
