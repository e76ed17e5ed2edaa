//! Command-line arguments of the two binaries (`--name value` or
//! `--name=value`).

use crate::{compare, consume, Error};
use std::collections::HashMap;
use std::time::Duration;

/// Usage of `replicate`.
pub const REPLICATE_USAGE: &str =
    "usage: replicate --amqp URI --queue NAME --target redis://HOST:PORT \
[--idle-exit SECS] [--prefetch N]";

/// Usage of `compare`.
pub const COMPARE_USAGE: &str = "usage: compare --source redis://h:p[,redis://h2:p2...] \
--target redis://h:p [--dbs 0-15] [--ignore-prefix key_evt_amqp:fallback] [--ttl-slack-ms 2000]";

/// The consumer's options from its arguments (without the program name).
pub fn replicate_args(args: impl IntoIterator<Item = String>) -> Result<consume::Options, Error> {
    let mut a = Args::parse(
        args,
        &["amqp", "queue", "target", "idle-exit", "prefetch"],
        REPLICATE_USAGE,
    )?;
    Ok(consume::Options {
        amqp: a.required("amqp")?,
        queue: a.required("queue")?,
        target: a.required("target")?,
        idle_exit: a
            .number::<f64>("idle-exit")?
            .map(|s| {
                Duration::try_from_secs_f64(s)
                    .map_err(|_| a.usage(&format!("--idle-exit {s}: not a duration in seconds")))
            })
            .transpose()?,
        prefetch: a.number("prefetch")?.unwrap_or(300),
    })
}

/// The comparison's source URLs, target URL and options from its
/// arguments (without the program name).
pub fn compare_args(
    args: impl IntoIterator<Item = String>,
) -> Result<(Vec<String>, String, compare::Options), Error> {
    let mut a = Args::parse(
        args,
        &["source", "target", "dbs", "ignore-prefix", "ttl-slack-ms"],
        COMPARE_USAGE,
    )?;
    let sources: Vec<String> = a
        .required("source")?
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if sources.is_empty() {
        return Err(a.usage("--source names no server"));
    }
    let target = a.required("target")?;
    let mut options = compare::Options::default();
    if let Some(dbs) = a.take("dbs") {
        options.dbs = parse_dbs(&dbs).ok_or_else(|| {
            a.usage(&format!(
                "--dbs {dbs:?}: expected db numbers 0..15, as `0-15` or `0,3,5`"
            ))
        })?;
    }
    if let Some(p) = a.take("ignore-prefix") {
        options.ignore_prefix = p.into_bytes();
    }
    if let Some(ms) = a.number("ttl-slack-ms")? {
        options.ttl_slack_ms = ms;
    }
    Ok((sources, target, options))
}

/// `0-15`, `3`, `0,3,8-9`: the listed dbs, sorted, each once.
pub fn parse_dbs(s: &str) -> Option<Vec<u8>> {
    let mut dbs = Vec::new();
    for part in s.split(',') {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse::<u8>().ok()?, hi.trim().parse::<u8>().ok()?),
            None => {
                let d = part.trim().parse::<u8>().ok()?;
                (d, d)
            }
        };
        if lo > hi || hi > 15 {
            return None;
        }
        dbs.extend(lo..=hi);
    }
    dbs.sort_unstable();
    dbs.dedup();
    Some(dbs)
}

/// Parsed `--name value` pairs.
struct Args {
    values: HashMap<String, String>,
    usage: &'static str,
}

impl Args {
    fn parse(
        args: impl IntoIterator<Item = String>,
        known: &[&str],
        usage: &'static str,
    ) -> Result<Self, Error> {
        let mut values = HashMap::new();
        let mut it = args.into_iter();
        let fail = |what: String| Error::Usage(format!("{what}\n{usage}"));
        while let Some(arg) = it.next() {
            if arg == "-h" || arg == "--help" {
                return Err(Error::Usage(usage.to_owned()));
            }
            let Some(flag) = arg.strip_prefix("--") else {
                return Err(fail(format!("unexpected argument {arg:?}")));
            };
            let (name, value) = match flag.split_once('=') {
                Some((n, v)) => (n.to_owned(), v.to_owned()),
                None => {
                    let v = it
                        .next()
                        .ok_or_else(|| fail(format!("--{flag} needs a value")))?;
                    (flag.to_owned(), v)
                }
            };
            if !known.contains(&name.as_str()) {
                return Err(fail(format!("unknown option --{name}")));
            }
            if values.insert(name.clone(), value).is_some() {
                return Err(fail(format!("--{name} given twice")));
            }
        }
        Ok(Self { values, usage })
    }

    fn usage(&self, what: &str) -> Error {
        Error::Usage(format!("{what}\n{}", self.usage))
    }

    fn take(&mut self, name: &str) -> Option<String> {
        self.values.remove(name)
    }

    fn required(&mut self, name: &str) -> Result<String, Error> {
        self.take(name)
            .ok_or_else(|| self.usage(&format!("--{name} is required")))
    }

    fn number<T: std::str::FromStr>(&mut self, name: &str) -> Result<Option<T>, Error> {
        self.take(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| self.usage(&format!("--{name} {v:?}: not a valid number")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn replicate_arguments() {
        let o = replicate_args(args(
            "--amqp amqp://h --queue q --target=redis://t:1 --idle-exit 2.5",
        ))
        .unwrap();
        assert_eq!(
            (o.amqp.as_str(), o.queue.as_str(), o.target.as_str()),
            ("amqp://h", "q", "redis://t:1")
        );
        assert_eq!(o.idle_exit, Some(Duration::from_millis(2500)));
        assert_eq!(o.prefetch, 300);
        assert!(replicate_args(args("--amqp a --queue q")).is_err());
        assert!(replicate_args(args("--amqp a --queue q --target t --idle-exit -1")).is_err());
        assert!(replicate_args(args("--amqp a --queue q --target t --bogus 1")).is_err());
        assert!(replicate_args(args("--amqp a --queue q --target t --queue r")).is_err());
    }

    #[test]
    fn compare_arguments() {
        let (s, t, o) = compare_args(args(
            "--source redis://a:1,redis://b:2 --target redis://c:3 --dbs 0,2-3 --ttl-slack-ms 10",
        ))
        .unwrap();
        assert_eq!(s, ["redis://a:1", "redis://b:2"]);
        assert_eq!(t, "redis://c:3");
        assert_eq!(o.dbs, [0, 2, 3]);
        assert_eq!(o.ttl_slack_ms, 10);
        assert_eq!(o.ignore_prefix, b"key_evt_amqp:fallback");
        let (_, _, o) = compare_args(args("--source a --target b --ignore-prefix=")).unwrap();
        assert!(o.ignore_prefix.is_empty());
        assert_eq!(o.dbs, (0..=15).collect::<Vec<u8>>());
        assert!(compare_args(args("--source , --target b")).is_err());
    }

    #[test]
    fn db_lists() {
        assert_eq!(parse_dbs("0-15").unwrap().len(), 16);
        assert_eq!(parse_dbs("3").unwrap(), [3]);
        assert_eq!(parse_dbs("5,1-2,2").unwrap(), [1, 2, 5]);
        for bad in ["16", "3-1", "a", "0-16", ""] {
            assert_eq!(parse_dbs(bad), None, "{bad}");
        }
    }
}
