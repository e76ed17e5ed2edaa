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
    Connect(AmqpSettings),
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
}

/// The fate of one batch.
#[derive(Debug)]
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
    /// The first error, if any.
    pub error: Option<String>,
}

/// Handle held by the main thread.
#[derive(Debug)]
pub struct Client {
    requests: Sender<Request>,
    outcomes: Receiver<Outcome>,
}

static EXECUTOR: Once = Once::new();

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
    Reconnect(AmqpSettings),
    Stop,
}

fn uri(s: &AmqpSettings) -> AMQPUri {
    AMQPUri {
        scheme: AMQPScheme::AMQP,
        authority: AMQPAuthority {
            userinfo: AMQPUserInfo {
                username: s.user.clone(),
                password: s.password.clone(),
            },
            host: s.host.clone(),
            port: s.port,
        },
        vhost: "/".into(),
        query: AMQPQueryString {
            heartbeat: Some(s.heartbeat),
            connection_timeout: Some(10_000),
            ..AMQPQueryString::default()
        },
    }
}

async fn open(s: &AmqpSettings) -> Result<(Connection, Channel), lapin::Error> {
    let props = ConnectionProperties::default().with_connection_name("key_evt_amqp".into());
    let conn = Connection::connect_uri(uri(s), props).await?;
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok((conn, channel))
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
    Outcome::Settled(Settled {
        id: batch.id,
        acked: 0,
        nacked: 0,
        rejected: 0,
        error: Some(error.to_string()),
    })
}

/// Nice value of the AMQP threads, so that under load they yield the CPU to
/// Redis: events wait in the bounded queue instead of slowing commands.
const THREAD_NICE: i32 = 10;

/// Lowers the calling thread's priority; threads it starts (lapin's I/O
/// loop) inherit it.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        extern "C" {
            fn setpriority(which: i32, who: u32, prio: i32) -> i32;
        }
        const PRIO_PROCESS: i32 = 0;
        // SAFETY: plain syscall wrapper; on Linux `who = 0` is the calling thread.
        unsafe {
            setpriority(PRIO_PROCESS, 0, THREAD_NICE);
        }
    }
}

async fn supervisor(rx: Receiver<Request>, tx: Sender<Outcome>) {
    lower_priority();
    let mut target: Option<AmqpSettings> = None;
    // The broker's max_message_size, once a publish ran into it.
    let broker_max = Arc::new(AtomicUsize::new(usize::MAX));
    let mut attempt = 0u32;
    let mut generation = 0u64;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9)
        | 1;
    loop {
        let Some(settings) = target.clone() else {
            match rx.recv().await {
                Err(_) => return,
                Ok(Request::Connect(s)) => target = Some(s),
                Ok(Request::Disconnect) => {
                    let _ = tx.send(Outcome::Closed).await;
                }
                Ok(Request::Publish(b)) => {
                    let _ = tx.send(fail_batch(b, "not connected")).await;
                }
            }
            continue;
        };
        let (error, confirm_timeout) = match open(&settings).await {
            Ok((conn, channel)) => {
                attempt = 0;
                generation += 1;
                let _ = tx.send(Outcome::Connected { generation }).await;
                let next = serve(
                    &conn,
                    &channel,
                    generation,
                    &rx,
                    &tx,
                    &settings,
                    &broker_max,
                )
                .await;
                if !matches!(next, Next::Lost(_)) {
                    // Bounded: a stalled broker must not keep us from the next request.
                    let _ = future::or(
                        async {
                            let _ = conn.close(200, "bye".into()).await;
                        },
                        sleep_ms(2000),
                    )
                    .await;
                }
                match next {
                    Next::Stop => return,
                    Next::Disconnect => {
                        target = None;
                        let _ = tx.send(Outcome::Closed).await;
                        continue;
                    }
                    Next::Reconnect(s) => {
                        target = Some(s);
                        continue;
                    }
                    Next::Lost(e) => (e, false),
                    Next::ConfirmTimeout(e) => (e, true),
                }
            }
            Err(e) => (e.to_string(), false),
        };
        let delay = backoff_ms(
            attempt,
            crate::config::RECONNECT_MAX_MS.get().unsigned_abs(),
            &mut seed,
        );
        attempt = attempt.saturating_add(1);
        let _ = tx
            .send(Outcome::Down {
                error,
                retry_in_ms: delay,
                confirm_timeout,
            })
            .await;
        // Wait out the delay, answering requests meanwhile.
        let deadline = std::time::Instant::now() + Duration::from_millis(delay);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let req = future::or(async { Some(rx.recv().await) }, async {
                async_io::Timer::after(left).await;
                None
            })
            .await;
            match req {
                None => break,
                Some(Err(_)) => return,
                Some(Ok(Request::Publish(b))) => {
                    let _ = tx.send(fail_batch(b, "not connected")).await;
                }
                Some(Ok(Request::Disconnect)) => {
                    target = None;
                    let _ = tx.send(Outcome::Closed).await;
                    break;
                }
                Some(Ok(Request::Connect(s))) => {
                    target = Some(s);
                    attempt = 0;
                    break;
                }
            }
        }
    }
}

enum Wake {
    Req(Result<Request, async_channel::RecvError>),
    Conn(Option<Event>),
    Check,
}

/// How often [`serve`] looks at the age of the oldest unconfirmed batch.
const CONFIRM_CHECK: Duration = Duration::from_millis(250);

/// Batches published on one connection and not settled, with when they went out.
type Pending = Arc<Mutex<std::collections::BTreeMap<u64, std::time::Instant>>>;

/// The text RabbitMQ closes a channel with when a message is over `max_message_size`.
fn broker_size_limit(error: &str) -> Option<usize> {
    let rest = error.split("larger than configured max size ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn serve(
    conn: &Connection,
    channel: &Channel,
    generation: u64,
    rx: &Receiver<Request>,
    tx: &Sender<Outcome>,
    settings: &AmqpSettings,
    broker_max: &Arc<AtomicUsize>,
) -> Next {
    let mut events = conn.events_listener();
    let pending: Pending = Arc::default();
    // Dropped when this function returns: batch tasks still waiting for
    // confirms of this connection then give up and report what they have.
    let (_alive, gone) = async_channel::bounded::<()>(1);
    // The first failure a batch saw on this connection, to explain a channel close.
    let last_error: Arc<Mutex<Option<String>>> = Arc::default();
    let exchange: lapin::types::ShortString = settings.exchange.as_str().into();
    let routing_key: lapin::types::ShortString = settings.routing_key.as_str().into();
    let base = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_delivery_mode(settings.delivery_mode);
    loop {
        let wake = future::or(
            future::or(async { Wake::Req(rx.recv().await) }, async {
                Wake::Conn(events.next().await)
            }),
            async {
                async_io::Timer::after(CONFIRM_CHECK).await;
                Wake::Check
            },
        )
        .await;
        match wake {
            Wake::Check => {
                let limit =
                    Duration::from_millis(crate::config::CONFIRM_TIMEOUT_MS.get().unsigned_abs());
                let oldest = pending.lock().ok().and_then(|p| p.values().min().copied());
                if oldest.is_some_and(|t| t.elapsed() > limit) {
                    return Next::ConfirmTimeout(format!(
                        "no confirm from the broker for {} ms; connection recycled",
                        limit.as_millis()
                    ));
                }
            }
            Wake::Req(Err(_)) => return Next::Stop,
            Wake::Req(Ok(Request::Disconnect)) => return Next::Disconnect,
            Wake::Req(Ok(Request::Connect(s))) => {
                if &s != settings || !conn.status().connected() {
                    return Next::Reconnect(s);
                }
                let _ = tx.send(Outcome::Connected { generation }).await;
            }
            Wake::Req(Ok(Request::Publish(batch))) => {
                if batch.generation != generation {
                    let _ = tx.send(fail_batch(batch, "stale connection")).await;
                    continue;
                }
                if !conn.status().connected() || !channel.status().connected() {
                    let why = match last_error.lock().ok().and_then(|e| e.clone()) {
                        Some(e) => format!("channel closed by the broker: {e}"),
                        None => "channel closed by the broker".to_string(),
                    };
                    if let Some(max) = broker_size_limit(&why) {
                        broker_max.store(max, Ordering::Relaxed);
                    }
                    let _ = tx.send(fail_batch(batch, &why)).await;
                    return Next::Lost(why);
                }
                if let Ok(mut p) = pending.lock() {
                    p.insert(batch.id, std::time::Instant::now());
                }
                let limit = crate::config::MAX_RECORD_BYTES
                    .get_usize()
                    .min(broker_max.load(Ordering::Relaxed));
                publish(
                    channel,
                    batch,
                    Target {
                        exchange: &exchange,
                        routing_key: &routing_key,
                        base: &base,
                        limit,
                    },
                    Watch {
                        tx: tx.clone(),
                        last_error: Arc::clone(&last_error),
                        pending: Arc::clone(&pending),
                        gone: gone.clone(),
                    },
                );
            }
            Wake::Conn(None) => return Next::Lost("connection closed".into()),
            Wake::Conn(Some(Event::Error(e))) => return Next::Lost(e.to_string()),
            Wake::Conn(Some(Event::ConnectionBlocked(_))) => {
                let _ = tx.send(Outcome::Blocked(true)).await;
            }
            Wake::Conn(Some(Event::ConnectionUnblocked)) => {
                let _ = tx.send(Outcome::Blocked(false)).await;
            }
            Wake::Conn(Some(_)) => {}
        }
    }
}

type PublishFuture = Pin<Box<dyn Future<Output = lapin::Result<lapin::PublisherConfirm>> + Send>>;

/// Where and how the records of a batch are published.
struct Target<'a> {
    exchange: &'a lapin::types::ShortString,
    routing_key: &'a lapin::types::ShortString,
    base: &'a BasicProperties,
    /// Largest body sent; larger records are rejected.
    limit: usize,
}

/// What the task that settles a batch reports to and watches.
struct Watch {
    tx: Sender<Outcome>,
    last_error: Arc<Mutex<Option<String>>>,
    pending: Pending,
    /// Closed when the connection's `serve` returned.
    gone: Receiver<()>,
}

/// What became of one record of a batch.
enum Sent {
    /// Its frames are (being) written; the confirm comes later.
    Write(PublishFuture),
    /// Never sent: it can never be delivered.
    Rejected,
}

/// Splits a record into what the broker accepts, or `None` for a record that
/// can never be delivered: not a record (a foreign list element), a message
/// id over 255 bytes (an AMQP short string), or a body over `limit`.
pub fn deliverable(record: &[u8], limit: usize) -> Option<crate::event::Parts<'_>> {
    let p = split(record)?;
    (p.message_id.len() <= 255 && p.body.len() <= limit).then_some(p)
}

/// Pushes the frames of every record now, in order, then settles the batch in its own task.
fn publish(channel: &Channel, batch: Batch, target: Target<'_>, watch: Watch) {
    let mut cx = Context::from_waker(Waker::noop());
    let id = batch.id;
    let mut sent: Vec<Sent> = Vec::with_capacity(batch.records.len());
    for (i, record) in batch.records.iter().enumerate() {
        let Some(p) = deliverable(record, target.limit) else {
            sent.push(Sent::Rejected);
            continue;
        };
        let props = target
            .base
            .clone()
            .with_message_id(p.message_id.into())
            .with_timestamp(p.timestamp);
        let skip = record.len() - p.body.len();
        let (ch, buf) = (channel.clone(), Arc::clone(&batch.records));
        let (ex, rk) = (target.exchange.clone(), target.routing_key.clone());
        let mut fut: PublishFuture = Box::pin(async move {
            let body = buf.get(i).map_or(&[][..], |r| &r[skip..]);
            ch.basic_publish(ex, rk, BasicPublishOptions::default(), body, props)
                .await
        });
        // The first poll pushes the frames onto the channel: this fixes the order.
        if let Poll::Ready(done) = fut.as_mut().poll(&mut cx) {
            fut = Box::pin(future::ready(done));
        }
        sent.push(Sent::Write(fut));
    }
    async_global_executor::spawn(async move {
        let settled = future::or(confirm_all(id, sent), async {
            let _ = watch.gone.recv().await;
            Settled {
                id,
                acked: 0,
                nacked: 0,
                rejected: 0,
                error: Some("connection lost before the broker confirmed".into()),
            }
        })
        .await;
        if let Some(e) = &settled.error {
            if let Ok(mut slot) = watch.last_error.lock() {
                slot.get_or_insert_with(|| e.clone());
            }
        }
        if let Ok(mut p) = watch.pending.lock() {
            p.remove(&id);
        }
        let _ = watch.tx.send(Outcome::Settled(settled)).await;
    })
    .detach();
}

/// Waits for the writes, then the confirms, of a batch in order. Only an
/// unbroken run of acks (and rejected records) from the start counts: the
/// rest is sent again.
async fn confirm_all(id: u64, sent: Vec<Sent>) -> Settled {
    let mut settled = Settled {
        id,
        acked: 0,
        nacked: 0,
        rejected: 0,
        error: None,
    };
    let mut confirms = Vec::with_capacity(sent.len());
    let mut write_error = None;
    for s in sent {
        match s {
            Sent::Rejected => confirms.push(None),
            Sent::Write(w) => match w.await {
                Ok(c) => confirms.push(Some(c)),
                Err(e) => {
                    write_error = Some(e.to_string());
                    break;
                }
            },
        }
    }
    // The confirms of what was written carry the broker's reason (a channel close).
    for c in confirms {
        let Some(c) = c else {
            settled.acked += 1;
            settled.rejected += 1;
            continue;
        };
        match c.await {
            Ok(Confirmation::Ack(_)) | Ok(Confirmation::NotRequested) => settled.acked += 1,
            Ok(Confirmation::Nack(_)) => {
                settled.nacked += 1;
                settled.error = Some("nacked by the broker".into());
                break;
            }
            Err(e) => {
                settled.error = Some(e.to_string());
                break;
            }
        }
    }
    if settled.error.is_none() {
        settled.error = write_error;
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;

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
            password: "p@ss:/word".into(),
            heartbeat: 7,
            ..AmqpSettings::default()
        };
        let u = uri(&s);
        assert_eq!(u.query.heartbeat, Some(7));
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
