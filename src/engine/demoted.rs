//! A demoted node: it takes no new events and never writes the list, but
//! sends what it holds only in memory when that cannot overtake its list.

use super::{Broker, DropReason, Engine, Leftovers, Limits, Link, Role, Sending, Storage};

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
        store: &mut dyn Storage,
        broker: &mut dyn Broker,
        limits: &Limits,
    ) {
        let held = !self.queue.is_empty() || !self.returns.is_empty();
        let may_go = self.role == Role::Replica(Leftovers::MayGo);
        if held && (!may_go || matches!(self.link, Link::Down | Link::Closed)) {
            let returns = std::mem::take(&mut self.returns);
            self.drop_records(store, &returns, DropReason::Unwritable);
            for chunk in self.queue.take_all() {
                self.drop_records(store, &chunk, DropReason::Unwritable);
            }
        }
        let held = !self.queue.is_empty() || !self.returns.is_empty();
        if held && self.link == Link::Idle {
            self.connect(broker);
        }
        if self.link == Link::Up && self.sending == Sending::Halted && self.inflight.is_empty() {
            self.sending = Sending::Open;
            let returns = std::mem::take(&mut self.returns);
            if !returns.is_empty() {
                self.send(broker, returns, false);
            }
        }
        if self.link == Link::Up && self.sending == Sending::Open {
            self.send_queue(broker, limits.window);
        }
        if !held && self.inflight.is_empty() && self.link.active() {
            self.disconnect(broker);
            self.link = Link::Idle;
        }
    }
}
