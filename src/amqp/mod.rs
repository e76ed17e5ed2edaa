//! The lapin side. Everything that waits on the broker runs here, on lapin's
//! executor; the Redis main thread only sends [`Request`]s and polls
//! [`Outcome`]s through channels, never blocking.
//!
//! One supervisor task owns the connection: it connects with capped,
//! jittered exponential backoff, keeps one confirm-mode channel, pushes the
//! frames of each batch in order and hands the confirms to a task per batch.

use crate::config::AmqpSettings;
use crate::event::split;
use crate::queue::Records;
use async_channel::{Receiver, Sender};
use futures_lite::{future, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, Event};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// What the main thread asks for.
#[derive(Debug)]
pub enum Request {
    /// Connect (or reconnect) with these settings, and keep reconnecting.
    Connect(Box<AmqpSettings>),
    /// Close the connection and stay closed.
    Disconnect,
    /// Publish these records, in order.
    Publish(Batch),
}

/// Records handed over in one go, shared with the main thread (which keeps
/// them until they are confirmed): the hand-off copies nothing.
#[derive(Debug)]
pub struct Batch {
    /// Sequence number chosen by the main thread.
    pub id: u64,
    /// Connection generation the batch is meant for.
    pub generation: u64,
    /// The encoded records (see [`crate::event`]).
    pub records: Arc<Records>,
    /// `on-unroutable store` was in force when the batch was made: a
    /// returned record stops the batch there (it goes back to the list).
    /// The engine settles the batch by the same policy.
    pub store_returns: bool,
}

/// What the AMQP side reports.
#[derive(Debug)]
pub enum Outcome {
    /// A connection with a confirm-mode channel is up.
    Connected {
        /// Generation to stamp on batches.
        generation: u64,
    },
    /// The connection failed or was lost; a retry is scheduled.
    Down {
        /// Why.
        error: String,
        /// Milliseconds until the next attempt.
        retry_in_ms: u64,
        /// The connection was recycled because confirms did not come in time.
        confirm_timeout: bool,
    },
    /// Closed on request.
    Closed,
    /// The broker blocked (true) or unblocked (false) the connection.
    Blocked(bool),
    /// A batch is settled.
    Settled(Settled),
    /// An attempt on one entry of the broker list connected or failed, or
    /// its connection was lost; sent before `Connected` or `Down`.
    Node(NodeReport),
}

/// What happened on one entry of the broker list (no credentials).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeReport {
    /// The entry's position in the list.
    pub index: usize,
    /// Entries in the list.
    pub count: usize,
    /// `host:port`.
    pub address: String,
    /// `None`: connected now; else why the attempt failed or the connection ended.
    pub error: Option<String>,
    /// Connected over TLS without checking the broker's certificate (`tls-verify no`).
    pub unverified: bool,
}

/// The fate of one batch.
#[derive(Debug, Default)]
pub struct Settled {
    /// The batch id.
    pub id: u64,
    /// Records confirmed from the start of the batch, in order.
    pub acked: usize,
    /// Records nacked by the broker.
    pub nacked: usize,
    /// Of `acked`: records never sent because they can never be delivered
    /// (not a record, message id over 255 bytes, body over the size limit).
    pub rejected: usize,
    /// Records the broker returned as unroutable (`mandatory`): inside
    /// `acked`, except with `on-unroutable store`, where the batch stops at
    /// the first one (which is not counted in `acked`).
    pub returned: usize,
    /// The first error, if any.
    pub error: Option<String>,
}

impl Settled {
    /// A batch of which nothing was confirmed, for `error`: every record of
    /// it is sent again.
    pub fn failed(id: u64, error: impl Into<String>) -> Self {
        Self {
            id,
            acked: 0,
            nacked: 0,
            rejected: 0,
            returned: 0,
            error: Some(error.into()),
        }
    }
}

/// Handle held by the main thread.
#[derive(Debug)]
pub struct Client {
    requests: Sender<Request>,
    outcomes: Receiver<Outcome>,
}

static EXECUTOR: Once = Once::new();

/// True once the executor's threads were started (they run until the
/// process exits: the module can no longer be unloaded).
pub fn executor_started() -> bool {
    EXECUTOR.is_completed()
}

impl Client {
    /// Starts the supervisor task on a one-thread executor.
    pub fn start() -> Self {
        EXECUTOR.call_once(|| {
            async_global_executor::init_with_config(
                async_global_executor::GlobalExecutorConfig::default()
                    .with_min_threads(1)
                    .with_max_threads(1)
                    .with_thread_name_fn(|| "key-evt-amqp".to_string()),
            );
        });
        let (requests, req_rx) = async_channel::unbounded();
        let (out_tx, outcomes) = async_channel::unbounded();
        async_global_executor::spawn(supervisor(req_rx, out_tx)).detach();
        Self { requests, outcomes }
    }

    /// Queues a request; never blocks.
    pub fn send(&self, req: Request) {
        // Unbounded: fails only if the supervisor is gone, which it never is while the client lives.
        let _ = self.requests.try_send(req);
    }

    /// False once the supervisor task is gone (it can only die by a panic).
    pub fn alive(&self) -> bool {
        !self.requests.is_closed()
    }

    /// Takes the next outcome if there is one; never blocks.
    pub fn poll(&self) -> Option<Outcome> {
        self.outcomes.try_recv().ok()
    }
}

/// Why [`serve`] returned.
enum Next {
    Lost(String),
    /// The broker left publishes unconfirmed past `confirm-timeout-ms`.
    ConfirmTimeout(String),
    Disconnect,
    Reconnect(Box<AmqpSettings>),
    Stop,
}

/// A small xorshift for backoff jitter.
fn jitter(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Delay before attempt `n` (0-based): 100 ms doubling, capped, with +-50% jitter.
pub fn backoff_ms(attempt: u32, cap: u64, seed: &mut u64) -> u64 {
    let base = 100u64.saturating_mul(1 << attempt.min(20)).min(cap.max(1));
    base / 2 + jitter(seed) % (base / 2 + 1)
}

async fn sleep_ms(ms: u64) {
    async_io::Timer::after(Duration::from_millis(ms)).await;
}

fn fail_batch(batch: Batch, error: &str) -> Outcome {
    Outcome::Settled(Settled::failed(batch.id, error))
}

/// Batches published on one connection and not settled, with when they
/// went out (shared by `serve` and the tasks of `publish`).
type Pending = Arc<Mutex<std::collections::BTreeMap<u64, std::time::Instant>>>;

/// Nice value of the AMQP threads, so that under load they yield the CPU to
/// Redis: events wait in the bounded queue instead of slowing commands.
const THREAD_NICE: i32 = 10;

/// Lowers the calling thread's priority; threads it starts (lapin's I/O
/// loop) inherit it.
fn lower_priority() {
    // SAFETY: plain syscall wrapper; on Linux `who = 0` is the calling thread.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, 0, THREAD_NICE);
    }
}

mod connect;
mod publish;
pub mod route;
mod serve;
mod tls;

pub use publish::deliverable;
use serve::supervisor;

#[cfg(test)]
mod tests {
    use super::connect::uri;
    use super::serve::broker_size_limit;
    use super::*;
    use crate::endpoint::targets;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let mut seed = 42;
        let first = backoff_ms(0, 5000, &mut seed);
        assert!((50..=100).contains(&first), "{first}");
        for n in 0..40 {
            let d = backoff_ms(n, 5000, &mut seed);
            assert!(d <= 5000, "{d}");
        }
        let late = backoff_ms(30, 5000, &mut seed);
        assert!(late >= 2500, "{late}");
    }

    #[test]
    fn uri_carries_heartbeat_and_credentials() {
        let s = AmqpSettings {
            password: crate::config::Secret::new("p@ss:/word"),
            heartbeat: 7,
            ..AmqpSettings::default()
        };
        let u = uri(&targets(&s).unwrap()[0]);
        assert_eq!(u.query.heartbeat, Some(7));
        assert_eq!(u.query.auth_mechanism, None);
        assert_eq!(u.authority.userinfo.password, "p@ss:/word");
        assert_eq!(u.vhost, "/");
    }

    #[test]
    fn broker_size_limit_is_read_from_the_close_reason() {
        let e = "channel closed by the broker: PRECONDITION_FAILED - message size 2000 is larger than configured max size 1024";
        assert_eq!(broker_size_limit(e), Some(1024));
        assert_eq!(broker_size_limit("connection closed"), None);
    }

    #[test]
    fn undeliverable_records_are_recognised() {
        assert!(deliverable(b"id-1\n5\n0\nset\nk", 100).is_some());
        assert!(deliverable(b"not a record", 100).is_none());
        let long_id = [&[b'x'; 256][..], b"\n5\n0\nset\nk"].concat();
        assert!(deliverable(&long_id, 100).is_none());
        assert!(deliverable(b"id-1\n5\n0\nset\nkkkk", 9).is_none());
        assert!(deliverable(b"id-1\n5\n0\nset\nkkkk", 10).is_some());
    }
}
