//! The supervisor task: connect, serve one connection, reconnect with
//! backoff; and the per-connection loop that hands batches to `publish`.

use super::connect::{try_open, Attempt};
use super::publish::*;
use super::*;
use crate::endpoint::Rotation;

/// The entries of the current settings and the order they are tried in.
struct Plan {
    /// The settings this plan was made for.
    settings: AmqpSettings,
    /// Every entry, or why the settings give none.
    targets: Result<Vec<crate::endpoint::Target>, String>,
    rotation: Rotation,
}

impl Plan {
    fn new(settings: &AmqpSettings, seed: u64) -> Self {
        let targets = match crate::endpoint::targets(settings) {
            Ok(t) if t.is_empty() => Err("no broker address".to_string()),
            other => other,
        };
        let n = targets.as_ref().map_or(1, Vec::len);
        Self {
            settings: settings.clone(),
            targets,
            rotation: Rotation::new(n, settings.host_order, seed),
        }
    }

    /// The report on the current entry.
    fn report(&self, t: &crate::endpoint::Target, error: Option<String>) -> Outcome {
        Outcome::Node(NodeReport {
            index: self.rotation.current(),
            count: self.targets.as_ref().map_or(0, Vec::len),
            address: t.address(),
            error,
            unverified: t.tls && !self.settings.tls_verify,
        })
    }
}

/// How long a detached close may wait for the broker's close-ok.
const CLOSE_WAIT_MS: u64 = 60_000;

/// The wait before the next round of attempts, and one more attempt counted.
fn next_backoff(attempt: &mut u32, seed: &mut u64) -> u64 {
    let d = backoff_ms(
        *attempt,
        crate::config::RECONNECT_MAX_MS.get().unsigned_abs(),
        seed,
    );
    *attempt = attempt.saturating_add(1);
    d
}

pub(super) async fn supervisor(rx: Receiver<Request>, tx: Sender<Outcome>) {
    lower_priority();
    let mut target: Option<AmqpSettings> = None;
    let mut plan: Option<Plan> = None;
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
                Ok(Request::Connect(s)) => target = Some(*s),
                Ok(Request::Disconnect) => {
                    let _ = tx.send(Outcome::Closed).await;
                }
                Ok(Request::Publish(b)) => {
                    let _ = tx.send(fail_batch(b, "not connected")).await;
                }
            }
            continue;
        };
        if plan.as_ref().is_none_or(|p| p.settings != settings) {
            plan = Some(Plan::new(&settings, jitter(&mut seed)));
        }
        let Some(p) = plan.as_mut() else { continue };
        let entry = match &p.targets {
            Ok(t) => t.get(p.rotation.current()).cloned(),
            Err(_) => None,
        };
        let Some(entry) = entry else {
            // Settings that give no address (checked when set, so not met):
            // retried with backoff like a refused connection.
            let error = p.targets.as_ref().err().cloned().unwrap_or_default();
            let delay = next_backoff(&mut attempt, &mut seed);
            let _ = tx
                .send(Outcome::Down {
                    error,
                    retry_in_ms: delay,
                    confirm_timeout: false,
                })
                .await;
            match wait_out(delay, &rx, &tx).await {
                None => {}
                Some(None) => return,
                Some(Some(next)) => {
                    target = next;
                    attempt = 0;
                }
            }
            continue;
        };
        let (error, confirm_timeout, retry_now, round_over) =
            match try_open(&settings, &entry, &rx, &tx).await {
                Attempt::Stop => return,
                Attempt::Replaced(next) => {
                    if next.is_none() {
                        let _ = tx.send(Outcome::Closed).await;
                    }
                    target = next;
                    attempt = 0;
                    continue;
                }
                Attempt::Open(conn, channel) => {
                    attempt = 0;
                    generation += 1;
                    p.rotation.connected();
                    let _ = tx.send(p.report(&entry, None)).await;
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
                        // The close runs on in its own task, so a stalled broker
                        // does not keep us from the next request. It is given
                        // time to finish (the heartbeat ends it on a dead link):
                        // a close dropped half-way leaves lapin's resolver behind.
                        async_global_executor::spawn(async move {
                            let _ = future::or(
                                async {
                                    let _ = conn.close(200, "bye".into()).await;
                                },
                                sleep_ms(CLOSE_WAIT_MS),
                            )
                            .await;
                            drop(conn);
                            crate::memory::release_freed();
                        })
                        .detach();
                    } else {
                        drop((conn, channel));
                        crate::memory::release_freed();
                    }
                    match next {
                        Next::Stop => return,
                        Next::Disconnect => {
                            target = None;
                            let _ = tx.send(Outcome::Closed).await;
                            continue;
                        }
                        Next::Reconnect(s) => {
                            target = Some(*s);
                            continue;
                        }
                        Next::Lost(e) => {
                            let _ = tx.send(p.report(&entry, Some(e.clone()))).await;
                            let round_over = p.rotation.lost();
                            (e, false, false, round_over)
                        }
                        Next::ConfirmTimeout(e) => {
                            let _ = tx.send(p.report(&entry, Some(e.clone()))).await;
                            let round_over = p.rotation.lost();
                            (e, true, false, round_over)
                        }
                    }
                }
                Attempt::Failed { error, retry_now } => {
                    let _ = tx.send(p.report(&entry, Some(error.clone()))).await;
                    let round_over = p.rotation.failed();
                    (error, false, retry_now, round_over)
                }
            };
        // The next entry at once; the backoff only after a whole round failed.
        let delay = if retry_now {
            attempt = 0;
            0
        } else if !round_over {
            0
        } else {
            next_backoff(&mut attempt, &mut seed)
        };
        let _ = tx
            .send(Outcome::Down {
                error,
                retry_in_ms: delay,
                confirm_timeout,
            })
            .await;
        match wait_out(delay, &rx, &tx).await {
            None => {}
            Some(None) => return,
            Some(Some(next)) => {
                target = next;
                attempt = 0;
            }
        }
    }
}

/// Waits out `delay` ms, answering requests meanwhile. `None`: the delay
/// passed; `Some(None)`: the main thread is gone; `Some(Some(t))`: a
/// `connect` (new settings) or a `disconnect` (`None`) came.
async fn wait_out(
    delay: u64,
    rx: &Receiver<Request>,
    tx: &Sender<Outcome>,
) -> Option<Option<Option<AmqpSettings>>> {
    let deadline = std::time::Instant::now() + Duration::from_millis(delay);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let req = future::or(async { Some(rx.recv().await) }, async {
            async_io::Timer::after(left).await;
            None
        })
        .await;
        match req {
            None => return None,
            Some(Err(_)) => return Some(None),
            Some(Ok(Request::Publish(b))) => {
                let _ = tx.send(fail_batch(b, "not connected")).await;
            }
            Some(Ok(Request::Disconnect)) => {
                let _ = tx.send(Outcome::Closed).await;
                return Some(Some(None));
            }
            Some(Ok(Request::Connect(s))) => return Some(Some(Some(*s))),
        }
    }
}

pub(super) enum Wake {
    Req(Result<Request, async_channel::RecvError>),
    Conn(Option<Event>),
    Check,
}

/// How often [`serve`] looks at the age of the oldest unconfirmed batch.
pub(super) const CONFIRM_CHECK: Duration = Duration::from_millis(250);

/// The text RabbitMQ closes a channel with when a message is over `max_message_size`.
pub(super) fn broker_size_limit(error: &str) -> Option<usize> {
    let rest = error.split("larger than configured max size ").nth(1)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The broker's reason for closing the channel, if lapin reports it within
/// [`CLOSE_REASON_WAIT`].
async fn close_reason(
    events: &mut (impl futures_lite::Stream<Item = Event> + Unpin),
) -> Option<String> {
    future::or(
        async {
            while let Some(e) = events.next().await {
                if let Event::Error(e) = e {
                    return Some(e.to_string());
                }
            }
            None
        },
        async {
            async_io::Timer::after(CLOSE_REASON_WAIT).await;
            None
        },
    )
    .await
}

/// How long [`close_reason`] waits.
const CLOSE_REASON_WAIT: Duration = Duration::from_millis(200);

pub(super) async fn serve(
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
    let routing_key = route::RoutingKey::parse(&settings.routing_key);
    let base = BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_app_id("key_evt_amqp".into())
        .with_delivery_mode(settings.delivery_mode);
    let next = loop {
        // Only this loop adds to `pending`: when it is empty now, it stays
        // empty until a batch comes, and an idle link arms no timer (no
        // wake-up of this thread or of the timer reactor).
        let waiting = pending.lock().map_or(true, |p| !p.is_empty());
        let wake = future::or(
            future::or(async { Wake::Req(rx.recv().await) }, async {
                Wake::Conn(events.next().await)
            }),
            async {
                if waiting {
                    async_io::Timer::after(CONFIRM_CHECK).await;
                } else {
                    future::pending::<()>().await;
                }
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
                    break Next::ConfirmTimeout(format!(
                        "no confirm from the broker for {} ms; connection recycled",
                        limit.as_millis()
                    ));
                }
            }
            Wake::Req(Err(_)) => break Next::Stop,
            Wake::Req(Ok(Request::Disconnect)) => break Next::Disconnect,
            Wake::Req(Ok(Request::Connect(s))) => {
                if *s != *settings || !conn.status().connected() {
                    break Next::Reconnect(s);
                }
                let _ = tx.send(Outcome::Connected { generation }).await;
            }
            Wake::Req(Ok(Request::Publish(batch))) => {
                if batch.generation != generation {
                    let _ = tx.send(fail_batch(batch, "stale connection")).await;
                    continue;
                }
                if !conn.status().connected() || !channel.status().connected() {
                    let mut known = last_error.lock().ok().and_then(|e| e.clone());
                    if known.is_none() {
                        // lapin marks the channel closed just before it reports
                        // the broker's reason: wait a moment for it.
                        known = close_reason(&mut events).await;
                    }
                    let why = match known {
                        Some(e) => format!("channel closed by the broker: {e}"),
                        None => "channel closed by the broker".to_string(),
                    };
                    if let Some(max) = broker_size_limit(&why) {
                        broker_max.store(max, Ordering::Relaxed);
                    }
                    let _ = tx.send(fail_batch(batch, &why)).await;
                    break Next::Lost(why);
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
                        node: settings.headers.then_some(settings.node.as_str()),
                        cloudevents: settings.cloudevents.then_some(settings.node.as_str()),
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
            Wake::Conn(None) => break Next::Lost("connection closed".into()),
            Wake::Conn(Some(Event::Error(e))) => break Next::Lost(e.to_string()),
            Wake::Conn(Some(Event::ConnectionBlocked(_))) => {
                let _ = tx.send(Outcome::Blocked(true)).await;
            }
            Wake::Conn(Some(Event::ConnectionUnblocked)) => {
                let _ = tx.send(Outcome::Blocked(false)).await;
            }
            Wake::Conn(Some(_)) => {}
        }
    };
    // The reason stays behind for the batches still waiting on this
    // connection: they report it when `_alive` drops below.
    if let Next::Lost(e) | Next::ConfirmTimeout(e) = &next {
        if let Ok(mut slot) = last_error.lock() {
            slot.get_or_insert_with(|| e.clone());
        }
    }
    next
}
