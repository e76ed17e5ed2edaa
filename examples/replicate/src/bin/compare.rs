//! `compare --source redis://h:p[,redis://h2:p2...] --target redis://h:p [--dbs 0-15]
//! [--ignore-prefix key_evt_amqp:fallback] [--ttl-slack-ms 2000]`: diffs two
//! data sets key by key; exit status 1 when a key differs, 2 on an error.

use std::process::ExitCode;

/// Differing keys printed before the rest are only counted.
const MAX_LINES: usize = 50;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::from(2)
        }
    }
}

/// True when nothing differs.
fn run() -> Result<bool, replicate::Error> {
    let (sources, target, options) = replicate::cli::compare_args(std::env::args().skip(1))?;
    let sources = sources
        .iter()
        .map(|s| redis::Client::open(s.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let target = redis::Client::open(target.as_str())?;
    let report = replicate::compare(&sources, &target, &options)?;
    for d in report.diffs.iter().take(MAX_LINES) {
        println!("{d}");
    }
    if report.diffs.len() > MAX_LINES {
        println!(
            "... and {} more differing keys",
            report.diffs.len() - MAX_LINES
        );
    }
    if report.dbs != options.dbs {
        println!("dbs compared: {:?} (a cluster has db 0 only)", report.dbs);
    }
    if report.type_only > 0 {
        println!(
            "{} stream or module keys compared by type only",
            report.type_only
        );
    }
    if report.ignored > 0 {
        println!(
            "{} keys ignored (prefix {:?})",
            report.ignored,
            String::from_utf8_lossy(&options.ignore_prefix)
        );
    }
    println!("{}", report.summary());
    Ok(report.diffs.is_empty())
}
