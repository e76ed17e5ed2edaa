//! `key_evt_amqp`: forwards Redis keyspace events to RabbitMQ.
//!
//! The data flow, one step per file:
//! `host/notify` (filter, encode) → `queue` → `host/timer` drives
//! `engine` (flush) → `amqp` (lapin, on its executor, behind channels) →
//! confirmed, or `host/list` (the fallback list, a Redis list).
//! Everything outside `host/` is pure: no Redis import.

pub mod amqp;
pub mod bus;
pub mod command;
pub mod config;
pub mod endpoint;
pub mod engine;
pub mod event;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
pub mod json;
pub mod keymask;
pub mod knob;
pub mod memory;
pub mod moves;
pub mod queue;
pub mod slots;
pub mod snapshot;

/// The module name registered with Redis.
pub const MODULE_NAME: &str = "key_evt_amqp";
