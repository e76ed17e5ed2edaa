//! The real broker side for the engine: the AMQP client (lapin, on its
//! executor, behind channels), started on first use.

use crate::amqp::{Client, Outcome, Request};
use crate::engine::Broker;

/// The real broker side, started on first use.
#[derive(Default)]
pub struct LazyClient(Option<Client>);

impl LazyClient {
    /// Forgets a dead client; the next request starts a new one.
    pub fn reset(&mut self) {
        self.0 = None;
    }
}

impl Broker for LazyClient {
    fn send(&mut self, req: Request) {
        self.0.get_or_insert_with(Client::start).send(req);
    }

    fn poll(&mut self) -> Option<Outcome> {
        self.0.as_ref().and_then(Client::poll)
    }

    fn alive(&self) -> bool {
        self.0.as_ref().is_none_or(Client::alive)
    }
}

impl std::fmt::Debug for LazyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "LazyClient(started)"
        } else {
            "LazyClient(idle)"
        })
    }
}
