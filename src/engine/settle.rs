//! Outcomes from the broker side, and settling batches in order.

use super::{At, Broker, Detached, DropReason, Engine, Link, Sending, Storage};
use crate::amqp::{Outcome, Settled};
use crate::config::Unroutable;
use crate::queue::Records;

impl Engine {
    /// Takes every outcome the broker side reported.
    pub(super) fn collect(&mut self, broker: &mut dyn Broker) {
        while let Some(outcome) = broker.poll() {
            match outcome {
                Outcome::Connected { generation } => {
                    self.generation = generation;
                    if self.link == Link::Closed {
                        continue;
                    }
                    if self.link != Link::Up {
                        self.log_link("connected");
                        self.metrics.connected_at = Some(self.now);
                    }
                    self.link = Link::Up;
                }
                Outcome::Down {
                    error,
                    retry_in_ms,
                    confirm_timeout,
                } => {
                    self.stats.reconnects += 1;
                    self.metrics.connected_at = None;
                    if confirm_timeout {
                        self.stats.confirm_timeouts += 1;
                    }
                    if self.link != Link::Closed {
                        if self.link != Link::Down || self.last_error != error {
                            self.log_link(&format!(
                                "connection down: {error}; retrying in {retry_in_ms} ms"
                            ));
                        }
                        self.link = Link::Down;
                    }
                    self.set_error(error);
                }
                Outcome::Node(r) => {
                    if r.error.is_none() && r.unverified {
                        self.warning(format!(
                            "key_evt_amqp: connected to {} over TLS WITHOUT checking the broker's certificate (tls-verify no)",
                            r.address
                        ));
                    }
                    self.nodes.latest = r.address.clone();
                    if self.nodes.report(&r) {
                        self.notice(format!(
                            "key_evt_amqp: failed over to broker {} (entry {} of {})",
                            r.address,
                            r.index + 1,
                            r.count
                        ));
                    }
                }
                Outcome::Closed => {
                    self.nodes.closed();
                    self.metrics.connected_at = None;
                    if self.link == Link::Closed {
                        self.log_link("disconnected on request");
                    }
                }
                Outcome::Blocked(blocked) => {
                    if matches!(self.link, Link::Up | Link::Blocked) {
                        self.link = if blocked { Link::Blocked } else { Link::Up };
                        self.log_link(if blocked {
                            "blocked by the broker"
                        } else {
                            "unblocked"
                        });
                    }
                }
                Outcome::Settled(s) => {
                    if let Some(b) = self.inflight.iter_mut().find(|b| b.id == s.id) {
                        b.settled = Some(s);
                    }
                }
            }
        }
    }

    /// Applies settled batches, oldest first, and stops at the first
    /// unsettled one. A failed batch halts sending until every batch in
    /// flight settled; then the records that came back go to the head of
    /// the list, in order, before anything newer is sent.
    pub(super) fn settle(&mut self, store: &mut dyn Storage) {
        while self.inflight.front().is_some_and(|b| b.settled.is_some()) {
            let Some(mut b) = self.inflight.pop_front() else {
                break;
            };
            let Some(Settled {
                acked,
                nacked,
                rejected,
                returned,
                error,
                ..
            }) = b.settled.take()
            else {
                break;
            };
            self.inflight_events -= b.count;
            if acked > 0 {
                self.metrics.confirmed(b.sent_at, self.now);
            }
            self.stats.returned += returned as u64;
            // Of `acked`, what the broker did not take: rejected records, and
            // returned ones unless they count as delivered.
            let mut not_taken = rejected;
            if returned > 0 {
                match b.on_unroutable {
                    Unroutable::Count => {}
                    Unroutable::Drop => {
                        self.stats
                            .count_dropped(DropReason::Unroutable, returned as u64);
                        not_taken += returned;
                    }
                    Unroutable::Store => {
                        // The AMQP side stopped the batch at the first returned
                        // record (outside `acked`): it goes back to the list.
                        self.unroutable.returned(b.sent_at);
                        self.set_error(
                            "the broker returned events as unroutable (no queue bound); they wait in the fallback list",
                        );
                    }
                }
            }
            self.stats.confirmed += acked.saturating_sub(not_taken) as u64;
            self.stats.nacked += nacked as u64;
            if nacked > 0 {
                // The error the AMQP side reports says the broker nacked.
                self.nacked.returned(b.sent_at);
            }
            self.stats
                .count_dropped(DropReason::Rejected, rejected as u64);
            let failed = acked < b.count;
            if !failed && self.sending == Sending::Open {
                // Sent after every earlier failure and confirmed whole.
                self.unroutable.confirmed();
                self.nacked.confirmed();
            }
            if let Some(e) = error {
                self.set_error(e);
            }
            let gone = b.detached.is_some();
            if b.from_list {
                if let Some(why) = b.detached {
                    // Its records left the list while in flight.
                    let left = Records::from_slices(b.records.iter().skip(acked));
                    match why {
                        Detached::Flushed => self.count_lost(left.len() as u64),
                        Detached::Capped => self.drop_records(store, &left, DropReason::Cap),
                    }
                } else if b.epoch == self.list.epoch {
                    self.list.head_inflight = self.list.head_inflight.saturating_sub(b.count);
                    if self.sending == Sending::Open {
                        self.list.acked += acked;
                    } else {
                        // Behind a failed batch: read and sent again.
                        self.stats.resent += acked as u64;
                    }
                }
            } else if failed && !b.stored {
                self.returns.extend(b.records.iter().skip(acked));
            }
            if failed {
                self.sending = Sending::Halted;
                if !gone {
                    // Sent once, unconfirmed: they go out again (possibly twice).
                    self.stats.resent += b.count.saturating_sub(acked) as u64;
                }
            }
        }
        if !self.is_master() {
            // A replica never writes the list; see `send_from_memory_when_demoted`.
            return;
        }
        let paused = store.writes_paused();
        if self.list.acked > 0 && !paused && store.usable() {
            match self.list.trim_acked(store) {
                Ok(lost) => self.count_lost(lost),
                Err(e) => self.list_error("fallback trim", &e),
            }
        }
        // Returns go back to the head before anything newer is sent; while
        // writes are paused they wait in memory and forwarding stays halted.
        if self.sending == Sending::Halted
            && self.inflight.is_empty()
            && (self.returns.is_empty() || !paused)
        {
            self.sending = Sending::Open;
            self.list.head_inflight = 0;
            let returns = std::mem::take(&mut self.returns);
            self.store(store, returns, At::Head);
        }
    }
}
