//! The broker as the engine sees it: requests go in, outcomes come out, and
//! nothing ever waits. The host implements it on the real AMQP side
//! (`host::client`); the model test on a scripted broker.

use crate::amqp::{Outcome, Request};

/// A non-blocking link to the broker side.
pub trait Broker {
    /// Hands a request over; never blocks.
    fn send(&mut self, req: Request);
    /// Takes the next outcome, if one is ready; never blocks.
    fn poll(&mut self) -> Option<Outcome>;
    /// False once the broker side is gone for good (its task died): the
    /// engine then fails what was in flight and the host starts a new one.
    fn alive(&self) -> bool;
}
