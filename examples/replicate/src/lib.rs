//! A reference consumer of key_evt_amqp's JSON stream (`format json` with
//! `values after` or `values both`): it rebuilds a copy of the data in a
//! target Redis, and compares two data sets key by key.
//!
//! - [`Record::parse`] reads one message body;
//! - [`apply()`] applies a record to the target (the rules are on [`apply()`]);
//! - [`consume::run`] does both for every message of a queue, in order,
//!   acking what it applied;
//! - [`compare()`] diffs a source (a server, or a cluster's masters) with a
//!   target: type, value and TTL of every key.
//!
//! ```no_run
//! # fn main() -> Result<(), replicate::Error> {
//! let target = redis::Client::open("redis://127.0.0.1:7000")?;
//! let mut conn = target.get_connection()?;
//! let body = br#"{"id":"t-1","time":1,"node":"6379/t","db":0,"event":"set",
//!                "key":"k","after":{"type":"string","value":"v"}}"#;
//! replicate::apply(&mut conn, &replicate::Record::parse(body)?)?;
//! let source = redis::Client::open("redis://127.0.0.1:6379")?;
//! let report = replicate::compare(&[source], &target, &replicate::CompareOptions::default())?;
//! println!("{}", report.summary());
//! # Ok(())
//! # }
//! ```

pub mod apply;
pub mod cli;
pub mod compare;
pub mod consume;
pub mod dedup;
pub mod diff;
mod error;
pub mod image;
pub mod record;
pub mod state;
pub mod stats;
mod wire;

pub use apply::{apply, Applied};
pub use compare::{compare, KeyDiff, Options as CompareOptions, Report};
pub use diff::Difference;
pub use error::Error;
pub use image::{Body, Image, Kind, Omitted, Value};
pub use record::{Action, Record};
pub use stats::Stats;
