//! The consumer: reads a queue, applies each message to the target in
//! order, and acks what it applied.

use crate::dedup::Dedup;
use crate::stats::Stats;
use crate::{apply, Applied, Error, Record};
use async_io::Timer;
use futures_lite::future;
use futures_lite::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, ConnectionProperties};
use std::time::{Duration, Instant};

/// Applied messages are acked once this many are waiting...
const ACK_EVERY: u64 = 100;
/// ... or when no message came for this long.
const ACK_DELAY: Duration = Duration::from_millis(50);
/// Message ids remembered to drop repeats.
const DEDUP_WINDOW: usize = 100_000;

/// Where to consume from and what to write to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The broker (`amqp://user:pass@host:port/vhost`).
    pub amqp: String,
    /// The queue to consume (it must exist).
    pub queue: String,
    /// The target Redis (`redis://host:port`).
    pub target: String,
    /// Stop when no message came for this long; `None` runs until the
    /// broker closes the consumer.
    pub idle_exit: Option<Duration>,
    /// Unacked messages the broker may send ahead.
    pub prefetch: u16,
}

/// Consumes `options.queue` into the target, counting in `stats`, until
/// `idle_exit` passes without a message or the broker ends the consumer.
///
/// Messages are applied in order and acked (`multiple`) only after they
/// were applied. On an error (a message that does not parse, a target
/// command that fails, the broker gone) it acks what it applied and
/// returns the error: the failing message stays in the queue.
pub fn run(options: &Options, stats: &mut Stats) -> Result<(), Error> {
    let mut target = redis::Client::open(options.target.as_str())?.get_connection()?;
    async_global_executor::block_on(consume(options, &mut target, stats))
}

async fn consume(
    options: &Options,
    target: &mut redis::Connection,
    stats: &mut Stats,
) -> Result<(), Error> {
    let conn = lapin::Connection::connect(&options.amqp, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(options.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            options.queue.as_str().into(),
            "replicate".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut acks = Acks::default();
    let mut dedup = Dedup::new(DEDUP_WINDOW);
    let mut last = Instant::now();
    let result = loop {
        let wait = if acks.pending > 0 {
            Some(ACK_DELAY)
        } else {
            options.idle_exit.map(|d| d.saturating_sub(last.elapsed()))
        };
        let timer = async {
            match wait {
                Some(d) => Timer::after(d).await,
                None => Timer::never().await,
            };
            None
        };
        match future::or(async { Some(consumer.next().await) }, timer).await {
            None if acks.pending > 0 => {
                if let Err(e) = acks.flush(&ch).await {
                    break Err(e);
                }
            }
            None => {
                if options.idle_exit.is_some_and(|d| last.elapsed() >= d) {
                    break Ok(());
                }
            }
            Some(None) => break Ok(()),
            Some(Some(Err(e))) => break Err(e.into()),
            Some(Some(Ok(delivery))) => {
                last = Instant::now();
                if let Err(e) = handle(&delivery.data, target, stats, &mut dedup) {
                    break Err(e);
                }
                acks.applied(delivery.delivery_tag);
                if acks.pending >= ACK_EVERY {
                    if let Err(e) = acks.flush(&ch).await {
                        break Err(e);
                    }
                }
            }
        }
    };
    let flushed = acks.flush(&ch).await;
    // The connection goes either way; a close that fails changes nothing.
    let _ = conn.close(200, "replicate done".into()).await;
    result.and(flushed)
}

/// Applies one message body.
fn handle(
    body: &[u8],
    target: &mut redis::Connection,
    stats: &mut Stats,
    dedup: &mut Dedup,
) -> Result<(), Error> {
    let rec = Record::parse(body)?;
    if !dedup.first_time(&rec.id) {
        stats.duplicates += 1;
        return Ok(());
    }
    let applied = apply(target, &rec)?;
    if stats.count(applied) {
        if let Applied::Unapplied { kind, omitted } = applied {
            eprintln!(
                "replicate: warning: a {kind} value {omitted} (first: db {} key {:?}): \
                 such keys are left as they were; the next ones are only counted",
                rec.db,
                String::from_utf8_lossy(&rec.key)
            );
        }
    }
    Ok(())
}

/// Delivery tags applied but not acked yet.
#[derive(Debug, Default)]
struct Acks {
    last: Option<u64>,
    pending: u64,
}

impl Acks {
    fn applied(&mut self, tag: u64) {
        self.last = Some(tag);
        self.pending += 1;
    }

    /// Acks every applied delivery up to the last one.
    async fn flush(&mut self, ch: &Channel) -> Result<(), Error> {
        if self.pending == 0 {
            return Ok(());
        }
        if let Some(tag) = self.last {
            ch.basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        self.pending = 0;
        Ok(())
    }
}
