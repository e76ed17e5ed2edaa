//! Publishing one batch in order, and settling it from its confirms.

use super::*;

pub(super) type PublishFuture =
    Pin<Box<dyn Future<Output = lapin::Result<lapin::PublisherConfirm>> + Send>>;

/// Where and how the records of a batch are published.
pub(super) struct Target<'a> {
    pub(super) exchange: &'a lapin::types::ShortString,
    pub(super) routing_key: &'a route::RoutingKey,
    /// This node's name, for the `node` header; `None`: no headers.
    pub(super) node: Option<&'a str>,
    /// This node's name, for the CloudEvents attributes of JSON records;
    /// `None`: `cloudevents no`.
    pub(super) cloudevents: Option<&'a str>,
    pub(super) base: &'a BasicProperties,
    /// Largest body sent; larger records are rejected.
    pub(super) limit: usize,
}

/// Why a batch failed when the broker returned one of its records.
const RETURNED: &str = "returned by the broker as unroutable";

/// Why a batch failed when its connection ended before every confirm came.
const LOST: &str = "connection lost before the broker confirmed";

/// What the task that settles a batch reports to and watches.
pub(super) struct Watch {
    pub(super) tx: Sender<Outcome>,
    pub(super) last_error: Arc<Mutex<Option<String>>>,
    pub(super) pending: Pending,
    /// Closed when the connection's `serve` returned.
    pub(super) gone: Receiver<()>,
}

/// What became of one record of a batch.
pub(super) enum Sent {
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
pub(super) fn publish(channel: &Channel, batch: Batch, target: Target<'_>, watch: Watch) {
    let mut cx = Context::from_waker(Waker::noop());
    let (id, store_returns) = (batch.id, batch.store_returns);
    let mut sent: Vec<Sent> = Vec::with_capacity(batch.records.len());
    for (i, record) in batch.records.iter().enumerate() {
        let Some(p) = deliverable(record, target.limit) else {
            sent.push(Sent::Rejected);
            continue;
        };
        let mut props = target
            .base
            .clone()
            .with_message_id(p.message_id.into())
            .with_timestamp(p.timestamp);
        let mut headers = lapin::types::FieldTable::default();
        if let Some(node) = target.node {
            route::headers(&mut headers, &p, node);
        }
        if p.json {
            props = props.with_content_type("application/json".into());
            if let Some(node) = target.cloudevents {
                route::cloudevents(&mut headers, &p, node);
            }
        }
        if !headers.inner().is_empty() {
            props = props.with_headers(headers);
        }
        let skip = record.len() - p.body.len();
        let (ch, buf) = (channel.clone(), Arc::clone(&batch.records));
        let (ex, rk) = (target.exchange.clone(), target.routing_key.render(&p));
        let mut fut: PublishFuture = Box::pin(async move {
            let body = buf.get(i).map_or(&[][..], |r| &r[skip..]);
            // Mandatory: an unroutable message comes back instead of vanishing.
            let opts = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            ch.basic_publish(ex, rk, opts, body, props).await
        });
        // The first poll pushes the frames onto the channel: this fixes the order.
        if let Poll::Ready(done) = fut.as_mut().poll(&mut cx) {
            fut = Box::pin(future::ready(done));
        }
        sent.push(Sent::Write(fut));
    }
    async_global_executor::spawn(async move {
        let settled = future::or(confirm_all(id, sent, store_returns), async {
            let _ = watch.gone.recv().await;
            // `serve` left the reason behind before it returned: the batch
            // reports it, so that it does not hide the cause in `last_error`.
            let why = watch.last_error.lock().ok().and_then(|e| e.clone());
            Settled::failed(
                id,
                why.map_or_else(|| LOST.into(), |why| format!("{LOST}: {why}")),
            )
        })
        .await;
        // A return is no failure of the connection: it explains nothing.
        if let Some(e) = settled.error.as_ref().filter(|e| *e != RETURNED) {
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

/// One record of a batch once its frames were handed over.
enum Slot {
    /// Never sent (see [`Sent::Rejected`]).
    Rejected,
    /// Written: the broker's confirm comes later.
    Written(lapin::PublisherConfirm),
    /// Its write failed: it and every record after it count as unconfirmed.
    Unwritten,
}

/// Waits for the writes, then the confirms, of a batch in order. Only an
/// unbroken run of acks (and rejected records) from the start counts: the
/// rest is sent again.
///
/// Every confirm is awaited, also past the first failure. lapin keeps a
/// `PublisherConfirm` dropped unresolved, and the returned message it
/// carries, until `Channel::wait_for_confirms` drains them
/// (`returned_messages.rs`, `register_dropped_confirm`): dropping the rest
/// of a batch after a return made memory grow with every retry.
pub(super) async fn confirm_all(id: u64, sent: Vec<Sent>, store_returns: bool) -> Settled {
    let mut settled = Settled {
        id,
        ..Settled::default()
    };
    let mut slots = Vec::with_capacity(sent.len());
    let mut write_error = None;
    for s in sent {
        slots.push(match s {
            Sent::Rejected => Slot::Rejected,
            Sent::Write(w) => match w.await {
                Ok(c) => Slot::Written(c),
                Err(e) => {
                    write_error.get_or_insert_with(|| e.to_string());
                    Slot::Unwritten
                }
            },
        });
    }
    // The confirms of what was written carry the broker's reason (a channel close).
    let mut broken = false;
    for slot in slots {
        let c = match slot {
            Slot::Rejected if !broken => {
                settled.acked += 1;
                settled.rejected += 1;
                continue;
            }
            Slot::Rejected => continue,
            Slot::Unwritten => {
                broken = true;
                continue;
            }
            Slot::Written(c) => c.await,
        };
        // Past the first failure, confirms are only consumed.
        match c {
            _ if broken => {}
            Ok(Confirmation::Ack(Some(_))) => {
                settled.returned += 1;
                if store_returns {
                    // Unroutable, and to be kept: the batch fails here.
                    settled.error = Some(RETURNED.into());
                    broken = true;
                } else {
                    settled.acked += 1;
                }
            }
            Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => settled.acked += 1,
            Ok(Confirmation::Nack(_)) => {
                settled.nacked += 1;
                settled.error = Some("nacked by the broker".into());
                broken = true;
            }
            Err(e) => {
                settled.error = Some(e.to_string());
                broken = true;
            }
        }
    }
    if settled.error.is_none() {
        settled.error = write_error;
    }
    settled
}
