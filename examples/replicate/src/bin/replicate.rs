//! `replicate --amqp URI --queue NAME --target redis://HOST:PORT [--idle-exit SECS]`:
//! consumes key_evt_amqp's JSON messages into a target Redis.

use std::process::ExitCode;

fn main() -> ExitCode {
    let options = match replicate::cli::replicate_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("replicate: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stats = replicate::Stats::default();
    let result = replicate::consume::run(&options, &mut stats);
    println!("replicate: {}", stats.summary());
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("replicate: {e}");
            ExitCode::FAILURE
        }
    }
}
