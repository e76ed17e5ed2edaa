//! The snapshot walk (`key_evt_amqp.snapshot`): which databases are left,
//! where it is, what it sent, and what it tells INFO. Pure: the host walks
//! the keyspace with the module scan API and asks this state what to do.
//!
//! Each database walked is framed by a `snapshot_begin` and a
//! `snapshot_end` record; between them comes one `snapshot` record per key
//! that passes the masks, queued at the moment the key is read. A write to
//! a key after its `snapshot` record is queued after it, so a consumer that
//! applies records in order ends with the newest value.

use std::time::{Duration, Instant};

/// Where a walk stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Phase {
    /// No snapshot asked for since load.
    #[default]
    Idle,
    /// Walking.
    Running,
    /// Walked every database asked for.
    Done,
    /// Stopped by `key_evt_amqp.snapshot CANCEL`.
    Cancelled,
    /// Stopped by the server (the node is no longer a master).
    Aborted(String),
}

impl Phase {
    /// The name INFO shows.
    pub fn name(&self) -> String {
        match self {
            Self::Idle => "idle".into(),
            Self::Running => "running".into(),
            Self::Done => "done".into(),
            Self::Cancelled => "cancelled".into(),
            Self::Aborted(why) => format!("aborted ({why})"),
        }
    }
}

/// The database being walked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// Its index.
    pub db: i32,
    /// The `snapshot_begin` record was queued.
    pub began: bool,
    /// `snapshot` records queued for it.
    pub keys: u64,
}

/// One node's snapshot.
#[derive(Debug, Default, Clone)]
pub struct Walk {
    /// Where it stands.
    pub phase: Phase,
    /// Databases still to walk, in order.
    todo: Vec<i32>,
    /// The database being walked.
    pub current: Option<Current>,
    /// Key names read by the scan and not yet sent (the time slice ran out).
    pub carry: Vec<Vec<u8>>,
    /// `snapshot` records queued by this walk.
    pub keys_sent: u64,
    /// Databases walked to their end, in order.
    pub dbs_done: Vec<i32>,
    /// Waiting for the backlog to drain (the last step found it too long).
    pub paused: bool,
    /// Walks started since load.
    pub runs: u64,
    started: Option<Instant>,
    ended: Option<Instant>,
}

impl Walk {
    /// Starts a walk of `dbs` (in that order), from scratch: a walk under
    /// way is abandoned (it is always safe to walk again: a `snapshot`
    /// record only ever says what the key holds when it is read).
    pub fn start(&mut self, mut dbs: Vec<i32>, now: Instant) {
        dbs.reverse();
        *self = Self {
            phase: Phase::Running,
            todo: dbs,
            runs: self.runs + 1,
            started: Some(now),
            ..Self::default()
        };
    }

    /// Stops the walk (`CANCEL`, or the server's `why`).
    pub fn stop(&mut self, phase: Phase, now: Instant) {
        if self.phase == Phase::Running {
            self.phase = phase;
            self.ended = Some(now);
            self.carry.clear();
            self.current = None;
            self.todo.clear();
            self.paused = false;
        }
    }

    /// True while walking.
    #[inline]
    pub fn running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// The database to walk now: the current one, or the next (which then
    /// becomes current). `None` when every database is done: the walk ends.
    pub fn db(&mut self, now: Instant) -> Option<i32> {
        if let Some(c) = &self.current {
            return Some(c.db);
        }
        match self.todo.pop() {
            Some(db) => {
                self.current = Some(Current {
                    db,
                    began: false,
                    keys: 0,
                });
                Some(db)
            }
            None => {
                if self.phase == Phase::Running {
                    self.phase = Phase::Done;
                    self.ended = Some(now);
                }
                None
            }
        }
    }

    /// `SWAPDB a b` ran during the walk: each database that is walked, or
    /// being walked, now holds the other one's keys, which were not all
    /// read: it is walked again (after those still to walk). Returns true
    /// when the current database must start over (a new scan cursor).
    pub fn swapped(&mut self, a: i32, b: i32) -> bool {
        if !self.running() || a == b {
            return false;
        }
        let mut again: Vec<i32> = Vec::new();
        self.dbs_done.retain(|d| {
            let hit = *d == a || *d == b;
            if hit {
                again.push(*d);
            }
            !hit
        });
        for d in again {
            if !self.todo.contains(&d) {
                // `todo` is taken from its end: these go last.
                self.todo.insert(0, d);
            }
        }
        let restart = self
            .current
            .as_ref()
            .is_some_and(|c| c.db == a || c.db == b);
        if restart {
            self.carry.clear();
        }
        restart
    }

    /// One `snapshot` record was queued.
    pub fn sent(&mut self) {
        self.keys_sent += 1;
        if let Some(c) = &mut self.current {
            c.keys += 1;
        }
    }

    /// The current database's scan ended: returns it and its key count
    /// (for the `snapshot_end` record).
    pub fn db_done(&mut self) -> Option<(i32, u64)> {
        let c = self.current.take()?;
        self.dbs_done.push(c.db);
        Some((c.db, c.keys))
    }

    /// Seconds the walk took, or has taken so far.
    pub fn elapsed(&self, now: Instant) -> Duration {
        match (self.started, self.ended) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            (Some(s), None) => now.saturating_duration_since(s),
            _ => Duration::ZERO,
        }
    }

    /// What INFO and `STATUS` show: `(name, value)` pairs.
    pub fn status(&self, now: Instant) -> Vec<(&'static str, String)> {
        let state = match (&self.phase, self.paused) {
            (Phase::Running, true) => "paused (backlog)".to_string(),
            (p, _) => p.name(),
        };
        vec![
            ("state", state),
            ("keys_sent", self.keys_sent.to_string()),
            (
                "db",
                self.current
                    .as_ref()
                    .map_or(String::new(), |c| c.db.to_string()),
            ),
            (
                "dbs_done",
                self.dbs_done
                    .iter()
                    .map(i32::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("seconds", format!("{:.3}", self.elapsed(now).as_secs_f64())),
            ("runs", self.runs.to_string()),
        ]
    }
}

/// What `key_evt_amqp.snapshot` was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Walk every database, or only `DB n`.
    Start(Option<i32>),
    /// Stop the walk under way.
    Cancel,
    /// Show where it stands (this node only).
    Status,
}

/// A snapshot request that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    /// A word that is not `DB`, `CANCEL` or `STATUS`, or extra words.
    #[error("syntax error: use key_evt_amqp.snapshot [DB <index> | CANCEL | STATUS]")]
    Syntax,
    /// `DB` with an index that is not a number in range.
    #[error("invalid DB '{0}': must be a database index 0..2147483647")]
    Db(String),
}

impl Request {
    /// Parses the arguments.
    pub fn parse(args: &[&[u8]]) -> Result<Self, BadRequest> {
        match args {
            [] => Ok(Self::Start(None)),
            [w] if w.eq_ignore_ascii_case(b"cancel") => Ok(Self::Cancel),
            [w] if w.eq_ignore_ascii_case(b"status") => Ok(Self::Status),
            [w, n] if w.eq_ignore_ascii_case(b"db") => std::str::from_utf8(n)
                .ok()
                .and_then(|t| t.parse::<i32>().ok())
                .filter(|d| *d >= 0)
                .map(|d| Self::Start(Some(d)))
                .ok_or_else(|| BadRequest::Db(crate::keymask::printable(n))),
            _ => Err(BadRequest::Syntax),
        }
    }

    /// The arguments, as given (for the cluster bus).
    pub fn args(&self) -> Vec<Vec<u8>> {
        match self {
            Self::Start(None) => Vec::new(),
            Self::Start(Some(db)) => vec![b"DB".to_vec(), db.to_string().into_bytes()],
            Self::Cancel => vec![b"CANCEL".to_vec()],
            Self::Status => vec![b"STATUS".to_vec()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_databases_in_order_and_counts() {
        let t = Instant::now();
        let mut w = Walk::default();
        assert_eq!(w.phase, Phase::Idle);
        w.start(vec![0, 3], t);
        assert_eq!(w.db(t), Some(0));
        w.sent();
        w.sent();
        assert_eq!(w.db(t), Some(0));
        assert_eq!(w.db_done(), Some((0, 2)));
        assert_eq!(w.db(t), Some(3));
        assert_eq!(w.db_done(), Some((3, 0)));
        assert_eq!(w.db(t), None);
        assert_eq!(w.phase, Phase::Done);
        assert_eq!((w.keys_sent, w.dbs_done.clone()), (2, vec![0, 3]));
        // Again, from scratch.
        w.start(vec![1], t);
        assert_eq!((w.keys_sent, w.runs, w.db(t)), (0, 2, Some(1)));
        w.stop(Phase::Cancelled, t);
        assert_eq!(w.phase, Phase::Cancelled);
        assert_eq!(w.db(t), None);
        assert_eq!(w.phase, Phase::Cancelled);
    }

    #[test]
    fn a_swap_walks_the_swapped_databases_again() {
        let t = Instant::now();
        let mut w = Walk::default();
        w.start(vec![0, 1, 2, 3], t);
        assert_eq!(w.db(t), Some(0));
        w.db_done();
        assert_eq!(w.db(t), Some(1));
        // 0 is done, 1 is being walked, 3 is still to walk.
        assert!(w.swapped(0, 1));
        assert!(!w.swapped(2, 3));
        assert_eq!(w.dbs_done, Vec::<i32>::new());
        let mut order = Vec::new();
        while let Some(db) = w.db(t) {
            order.push(db);
            w.db_done();
        }
        assert_eq!(order, [1, 2, 3, 0]);
        assert!(!w.swapped(0, 1), "a finished walk ignores swaps");
    }

    #[test]
    fn parses_requests() {
        let p = |s: &[&str]| Request::parse(&s.iter().map(|a| a.as_bytes()).collect::<Vec<_>>());
        assert_eq!(p(&[]), Ok(Request::Start(None)));
        assert_eq!(p(&["db", "7"]), Ok(Request::Start(Some(7))));
        assert_eq!(p(&["CANCEL"]), Ok(Request::Cancel));
        assert_eq!(p(&["Status"]), Ok(Request::Status));
        assert_eq!(p(&["DB", "-1"]), Err(BadRequest::Db("-1".into())));
        assert_eq!(p(&["DB", "x%n"]), Err(BadRequest::Db("x%n".into())));
        assert_eq!(p(&["go"]), Err(BadRequest::Syntax));
        assert_eq!(p(&["DB"]), Err(BadRequest::Syntax));
        for r in [
            Request::Start(Some(2)),
            Request::Cancel,
            Request::Start(None),
        ] {
            let a = r.args();
            let refs: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
            assert_eq!(Request::parse(&refs), Ok(r));
        }
    }
}
