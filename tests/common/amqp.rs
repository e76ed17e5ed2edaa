//! The consuming side of the tests: a per-test durable exchange and queue on
//! a real RabbitMQ, read with basic.get on short-lived connections so that it
//! survives broker restarts.

use futures_lite::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::{Duration, Instant};

pub use super::msg::Msg;
use super::server::Server;

fn to_msg(d: &lapin::message::Delivery) -> Msg {
    let p = &d.properties;
    Msg {
        body: d.data.clone(),
        message_id: p
            .message_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        timestamp: p.timestamp().unwrap_or(0),
        content_type: p
            .content_type()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        delivery_mode: p.delivery_mode().unwrap_or(0),
        routing_key: d.routing_key.to_string(),
        app_id: p
            .app_id()
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        headers: p
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            lapin::types::AMQPValue::LongString(s) => {
                                String::from_utf8_lossy(s.as_bytes()).into_owned()
                            }
                            lapin::types::AMQPValue::LongInt(n) => n.to_string(),
                            other => format!("{other:?}"),
                        };
                        (k.to_string(), v)
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A durable direct exchange bound to a durable queue, both unique to a test.
pub struct Sink {
    /// Broker port.
    pub port: u16,
    /// Exchange name.
    pub exchange: String,
    /// Queue name.
    pub queue: String,
    /// Routing key.
    pub routing_key: String,
    /// Everything received so far, in order.
    pub received: Vec<Msg>,
    /// The broker's virtual host.
    pub vhost: String,
}

/// The longest any one exchange with the test broker may take: a broker
/// that does not answer fails the test instead of hanging it.
const BROKER_WAIT: Duration = Duration::from_secs(120);

/// Runs `f` on this thread; `None` when it took longer than `BROKER_WAIT`.
fn within<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    async_global_executor::block_on(futures_lite::future::or(async { Some(f.await) }, async {
        async_io::Timer::after(BROKER_WAIT).await;
        None
    }))
}

/// Runs `f` on this thread; panics, naming `what`, when it took longer
/// than `BROKER_WAIT`.
pub fn block<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    within(f).unwrap_or_else(|| panic!("the broker did not answer within {BROKER_WAIT:?}: {what}"))
}

/// A connection to the broker at `port`, in `vhost`, and a channel on it.
pub async fn channel(port: u16, vhost: &str) -> lapin::Result<(Connection, Channel)> {
    let vhost = vhost.replace('/', "%2f");
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/{vhost}?connection_timeout=5000");
    let conn = Connection::connect(&uri, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

impl Sink {
    /// Declares a fresh exchange, queue and binding on the broker at `port`.
    pub fn new(port: u16) -> Self {
        Self::in_vhost(port, "/")
    }

    /// Like [`Sink::new`], in a virtual host (which must exist).
    pub fn in_vhost(port: u16, vhost: &str) -> Self {
        let s = Self {
            port,
            exchange: super::unique("kea-x"),
            queue: super::unique("kea-q"),
            routing_key: super::unique("rk"),
            received: Vec::new(),
            vhost: vhost.to_string(),
        };
        s.declare_exchange();
        s.declare_queue();
        s
    }

    /// A topic exchange bound with `binding` (for routing-key templates).
    pub fn topic(port: u16, binding: &str) -> Self {
        let s = Self {
            port,
            exchange: super::unique("kea-tx"),
            queue: super::unique("kea-q"),
            routing_key: binding.to_string(),
            received: Vec::new(),
            vhost: "/".into(),
        };
        s.declare_exchange_of(ExchangeKind::Topic);
        s.declare_queue();
        s
    }

    /// Declares (or re-declares) the exchange.
    pub fn declare_exchange(&self) {
        self.declare_exchange_of(ExchangeKind::Direct);
    }

    fn declare_exchange_of(&self, kind: ExchangeKind) {
        block("declare exchange", async {
            let (conn, ch) = channel(self.port, &self.vhost).await?;
            let opts = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.exchange_declare(
                self.exchange.as_str().into(),
                kind,
                opts,
                FieldTable::default(),
            )
            .await?;
            conn.close(200, "ok".into()).await
        })
        .expect("declare exchange");
    }

    /// Removes the queue's binding: publishes become unroutable.
    pub fn unbind(&self) {
        block("unbind queue", async {
            let (conn, ch) = channel(self.port, &self.vhost).await?;
            ch.queue_unbind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                FieldTable::default(),
            )
            .await?;
            conn.close(200, "ok".into()).await
        })
        .expect("unbind queue");
    }

    /// Deletes the exchange (to make the broker refuse publishes with 404).
    pub fn delete_exchange(&self) {
        block("delete exchange", async {
            let (conn, ch) = channel(self.port, &self.vhost).await?;
            ch.exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
            conn.close(200, "ok".into()).await
        })
        .expect("delete exchange");
    }

    /// Declares the queue and binds it.
    pub fn declare_queue(&self) {
        self.declare_queue_with(FieldTable::default());
    }

    /// Declares the queue with `args` (`x-queue-type`, `x-max-length`, ...)
    /// and binds it.
    pub fn declare_queue_with(&self, args: FieldTable) {
        block("declare queue", async {
            let (conn, ch) = channel(self.port, &self.vhost).await?;
            let opts = QueueDeclareOptions {
                durable: true,
                ..Default::default()
            };
            ch.queue_declare(self.queue.as_str().into(), opts, args)
                .await?;
            ch.queue_bind(
                self.queue.as_str().into(),
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            conn.close(200, "ok".into()).await
        })
        .expect("declare queue");
    }

    /// Takes every message waiting in the queue now; errors (broker away) give none.
    /// Reads them with a consumer (acked as a batch; anything beyond is requeued),
    /// which is much faster than one basic.get per message.
    pub fn drain(&mut self) -> usize {
        // Kept outside the future: when the broker stops answering half-way,
        // what was acked is still counted.
        let out = std::cell::RefCell::new(Vec::new());
        let acked = std::cell::Cell::new(0);
        within(async {
            let Ok((conn, ch)) = channel(self.port, &self.vhost).await else {
                return;
            };
            let passive = QueueDeclareOptions {
                passive: true,
                ..Default::default()
            };
            let waiting = match ch
                .queue_declare(self.queue.as_str().into(), passive, FieldTable::default())
                .await
            {
                Ok(q) => q.message_count() as usize,
                Err(_) => 0,
            };
            if waiting > 0 && ch.basic_qos(5000, BasicQosOptions::default()).await.is_ok() {
                if let Ok(mut consumer) = ch
                    .basic_consume(
                        self.queue.as_str().into(),
                        "kea-drain".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                {
                    // Acked in steps of 1000 (the broker sends no more than the
                    // prefetch until it sees acks); on a failed ack the messages
                    // after the last good one are requeued, so they are not kept.
                    let mut last_tag = None;
                    let began = Instant::now();
                    // A queue that never pauses (the soak's) is read for a
                    // minute at most, then acked and closed cleanly, well
                    // inside `BROKER_WAIT`.
                    while began.elapsed() < Duration::from_secs(60) {
                        // Everything counted, then whatever else arrives without a
                        // pause: the queue is empty when this returns, as with basic.get.
                        let wait = if out.borrow().len() < waiting {
                            Duration::from_secs(5)
                        } else {
                            Duration::from_millis(200)
                        };
                        let next =
                            futures_lite::future::or(async { consumer.next().await }, async {
                                async_io::Timer::after(wait).await;
                                None
                            })
                            .await;
                        let Some(Ok(d)) = next else { break };
                        last_tag = Some(d.delivery_tag);
                        out.borrow_mut().push(to_msg(&d));
                        let len = out.borrow().len();
                        if len - acked.get() >= 1000 {
                            if !ack_through(&ch, last_tag).await {
                                break;
                            }
                            acked.set(len);
                        }
                    }
                    let len = out.borrow().len();
                    if len > acked.get() && ack_through(&ch, last_tag).await {
                        acked.set(len);
                    }
                }
            }
            let _ = conn.close(200, "ok".into()).await;
        });
        let mut got = out.into_inner();
        got.truncate(acked.get());
        let n = got.len();
        self.received.extend(got);
        n
    }

    /// Waits until every key in `keys` arrived at least once; returns all
    /// messages. Counting messages is not enough under at-least-once
    /// delivery: duplicates can make up the count while the tail is still
    /// on its way.
    pub fn expect_keys<S: AsRef<str>>(&mut self, keys: &[S], timeout: Duration) -> &[Msg] {
        let start = Instant::now();
        let mut seen = std::collections::HashSet::new();
        let mut read = 0;
        loop {
            seen.extend(self.received[read..].iter().map(Msg::key));
            read = self.received.len();
            let missing = keys.iter().filter(|k| !seen.contains(k.as_ref())).count();
            if missing == 0 {
                return &self.received;
            }
            if self.drain() == 0 {
                assert!(
                    start.elapsed() < timeout,
                    "timed out: {missing} of {} keys still missing after {timeout:?}",
                    keys.len()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Waits until every key `prefix0..prefix{n-1}` arrived at least once.
    pub fn expect_sequence(&mut self, prefix: &str, n: usize, timeout: Duration) -> &[Msg] {
        let keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        self.expect_keys(&keys, timeout)
    }

    /// Waits until at least `n` messages arrived in total; returns them all.
    pub fn expect_at_least(&mut self, n: usize, timeout: Duration) -> &[Msg] {
        let start = Instant::now();
        while self.received.len() < n {
            if self.drain() == 0 {
                assert!(
                    start.elapsed() < timeout,
                    "timed out: {} of {n} messages arrived in {timeout:?}",
                    self.received.len()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        &self.received
    }

    /// Proves that nothing more is on its way, without a quiet period:
    /// writes `sentinel` on `srv` (a SET, so the module must forward string
    /// events of that key), waits until it arrives, and asserts that nothing
    /// else arrived since the last drain. See [`Sink::expect_only_sentinels`].
    pub fn expect_nothing_before(&mut self, srv: &Server, sentinel: &str, timeout: Duration) {
        srv.set_keys(&[sentinel]);
        self.expect_only_sentinels(&[sentinel], timeout);
    }

    /// The sentinels (one key per node, each written by the caller after
    /// everything else it expects from that node) arrive, and nothing else
    /// arrived since the last drain. Delivery is in order per node, so once a
    /// node's sentinel is in, every event that node forwarded before it is
    /// in too: what the queue holds then is exact, where a quiet period only
    /// guesses. Removes the first arrival of each sentinel from `received`,
    /// so that the caller's counts see only its own events.
    pub fn expect_only_sentinels<S: AsRef<str>>(&mut self, sentinels: &[S], timeout: Duration) {
        let mark = self.received.len();
        let start = Instant::now();
        let keys = |s: &Self| -> Vec<String> { s.received[mark..].iter().map(Msg::key).collect() };
        while !sentinels
            .iter()
            .all(|k| keys(self).iter().any(|got| got == k.as_ref()))
        {
            if self.drain() == 0 {
                assert!(
                    start.elapsed() < timeout,
                    "timed out after {timeout:?}: sentinels {:?}, arrived since: {:?}",
                    sentinels.iter().map(AsRef::as_ref).collect::<Vec<_>>(),
                    keys(self)
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let extra: Vec<&Msg> = self.received[mark..]
            .iter()
            .filter(|m| !sentinels.iter().any(|k| m.key() == k.as_ref()))
            .collect();
        assert!(
            extra.is_empty(),
            "unexpected messages before the sentinels {:?}: {extra:?}",
            sentinels.iter().map(AsRef::as_ref).collect::<Vec<_>>()
        );
        for k in sentinels {
            if let Some(i) = self.received[mark..]
                .iter()
                .position(|m| m.key() == k.as_ref())
            {
                self.received.remove(mark + i);
            }
        }
    }

    /// Nothing more reached this sink (one `srv` no longer sends to) once
    /// `srv` has every event it accepted confirmed: a confirm means the
    /// broker has the event in its queues, so one sent here by mistake would
    /// be in this queue by then.
    pub fn expect_nothing_more(&mut self, srv: &Server, timeout: Duration) {
        super::wait_for("every accepted event confirmed", timeout, || {
            srv.stat("events_confirmed") == srv.stat("events_accepted")
        });
        let before = self.received.len();
        self.drain();
        assert_eq!(
            self.received.len(),
            before,
            "unexpected messages: {:?}",
            &self.received[before..]
        );
    }

    /// Module arguments for this sink (host first: the config_set/connect form).
    pub fn args(&self, delivery_mode: u8) -> Vec<String> {
        vec![
            "127.0.0.1".into(),
            self.port.to_string(),
            "guest".into(),
            "guest".into(),
            "5".into(),
            self.exchange.clone(),
            self.routing_key.clone(),
            delivery_mode.to_string(),
        ]
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = within(async {
            let (conn, ch) = channel(self.port, &self.vhost).await?;
            ch.queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
            ch.exchange_delete(
                self.exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
            conn.close(200, "ok".into()).await
        });
    }
}

/// Acks every delivery up to `tag`; false if the ack could not be sent.
async fn ack_through(ch: &Channel, tag: Option<u64>) -> bool {
    match tag {
        Some(tag) => ch
            .basic_ack(tag, BasicAckOptions { multiple: true })
            .await
            .is_ok(),
        None => true,
    }
}
