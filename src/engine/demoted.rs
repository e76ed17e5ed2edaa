//! A demoted node: it takes no new events and never writes the list, but
//! sends what it holds only in memory when that cannot overtake its list.

use super::{Broker, Drop, Engine, Limits, Link};
use crate::queue::Records;

impl Engine {
    /// The events a demoted node accepted as a master live only in its
    /// memory (its replicated list now belongs to the new master, which
    /// forwards it). If its list was empty at the demotion, nothing older can
    /// be overtaken, so it goes on sending them, in order: failed records
    /// first, then the queue; once nothing is left it closes the connection.
    /// Otherwise, or if the link is lost or closed first, what is left is
    /// dropped and counted (`events_dropped_unwritable`): there is nowhere
    /// to keep it, and sending it would overtake the list.
    pub(super) fn send_from_memory_when_demoted(
        &mut self,
        broker: &mut dyn Broker,
        limits: &Limits,
    ) {
        let held = !self.queue.is_empty() || !self.returns.is_empty();
        if held && (!self.memory_may_go || matches!(self.link, Link::Down | Link::Closed)) {
            let n = self
                .queue
                .take_all()
                .iter()
                .map(Records::len)
                .sum::<usize>()
                + self.returns.len();
            self.returns = Records::default();
            self.stats.drop(Drop::Unwritable, n as u64);
        }
        let held = !self.queue.is_empty() || !self.returns.is_empty();
        if held && self.link == Link::Idle {
            self.connect(broker);
        }
        if self.link == Link::Up && self.halted && self.inflight.is_empty() {
            self.halted = false;
            let returns = std::mem::take(&mut self.returns);
            if !returns.is_empty() {
                self.send(broker, returns, false);
            }
        }
        if self.link == Link::Up && !self.halted {
            while self.inflight_events < limits.window {
                let Some(records) = self.queue.take_chunk() else {
                    break;
                };
                self.send(broker, records, false);
            }
        }
        if !held && self.inflight.is_empty() && self.link.active() {
            self.disconnect(broker);
            self.link = Link::Idle;
        }
    }
}
