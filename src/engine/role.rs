//! The node's role and its broker link: connect, disconnect, promotions
//! and demotions, a broker side that died, and new settings.

use super::{Broker, Engine, Leftovers, Link, Role, Storage};
use crate::amqp::{Request, Settled};
use crate::command::LinkAction;
use crate::config::Settings;

impl Engine {
    /// Asks the broker side to connect with the current settings.
    pub fn connect(&mut self, broker: &mut dyn Broker) {
        broker.send(Request::Connect(Box::new(self.settings.amqp.clone())));
        if self.link != Link::Up {
            self.link = Link::Connecting;
        }
    }

    /// Asks the broker side to disconnect and stay disconnected.
    pub fn disconnect(&mut self, broker: &mut dyn Broker) {
        broker.send(Request::Disconnect);
        self.link = Link::Closed;
        self.metrics.connected_at = None;
    }

    /// Puts `settings` in force and does what `action` asks of the
    /// connection (commands and `CONFIG SET` both come here).
    pub fn use_settings(
        &mut self,
        settings: Settings,
        action: LinkAction,
        broker: &mut dyn Broker,
    ) {
        self.settings = settings;
        match action {
            LinkAction::Keep => {}
            LinkAction::Connect if self.is_master() => self.connect(broker),
            // A replica connects when promoted.
            LinkAction::Connect => self.link = Link::Idle,
            LinkAction::Reconnect => {
                if self.is_master() && self.link.active() {
                    self.connect(broker);
                }
            }
            LinkAction::Disconnect => self.disconnect(broker),
        }
    }

    /// Just before a demotion, while the list is still as this master left
    /// it (replication from the new master has not begun): a last read of
    /// its length counts what vanished behind the engine's back. After the
    /// role change the length is learned anew, since the new master's
    /// trims reach the list by replication and are no loss.
    pub fn before_demotion(&mut self, store: &mut dyn Storage) {
        if !self.is_master() || !store.usable() {
            return;
        }
        match self.list.sync(store) {
            Ok(lost) => self.count_lost(lost),
            Err(e) => self.set_error(format!("fallback read: {e}")),
        }
    }

    /// Just after a promotion: the length of the list as the old master left
    /// it (replicated) is learned now, so that from this moment on what
    /// vanishes behind the engine's back is counted as lost.
    pub fn after_promotion(&mut self, store: &mut dyn Storage) {
        if !self.is_master() || !store.usable() {
            return;
        }
        if let Ok(len) = store.read_len() {
            self.list.len = len;
            self.list.unknown = false;
        }
    }

    /// Applies a role change. Either way the list's head is someone else's
    /// business now: the new master resends from the head (at least once),
    /// a replica never trims.
    pub fn set_role(&mut self, master: bool) {
        if self.is_master() == master {
            return;
        }
        self.role = if master {
            Role::Master
        } else if self.list.len == 0 && !self.list_in_flight() {
            Role::Replica(Leftovers::MayGo)
        } else {
            Role::Replica(Leftovers::Drop)
        };
        self.adoption = super::Adoption::None;
        self.list.forget();
        if master && self.link != Link::Closed {
            self.link = Link::Idle;
        }
    }

    /// The broker side died (its task panicked): fail what it held, so that
    /// those records go back to the list. Returns true when the host must
    /// start a new one.
    pub fn check_broker(&mut self, broker: &dyn Broker) -> bool {
        if broker.alive() {
            return false;
        }
        self.stats.supervisor_restarts += 1;
        self.warning("key_evt_amqp: the AMQP task stopped unexpectedly; starting a new one".into());
        self.set_error("the AMQP task stopped unexpectedly");
        for b in self.inflight.iter_mut().filter(|b| b.settled.is_none()) {
            b.settled = Some(Settled::failed(b.id, "the AMQP task stopped"));
        }
        if self.link != Link::Closed {
            self.link = Link::Idle;
        }
        true
    }
}
