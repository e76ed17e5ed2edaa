//! The host layer: every registration with the server and every entry point
//! it calls (the module table and commands, keyspace notifications, the
//! timer, server events, the command filter, the cluster receiver, INFO).
//! It adapts Redis to the engine and calls down into it; nothing below
//! imports it.

pub mod classes;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod configs;
pub mod deferred;
pub mod events;
pub mod filter;
pub mod guard;
pub mod image;
pub mod info;
pub mod lifecycle;
pub mod limits;
pub mod list;
pub mod log;
pub mod moves;
pub mod notify;
pub mod outbox;
pub mod rawconfig;
pub mod rawkey;
pub mod redact;
pub mod scan;
pub mod shutdown;
pub mod snapshot;
pub mod state;
pub mod timer;
pub mod values;

use crate::MODULE_NAME;
use redis_module::{redis_module, Context, InfoContext, RedisResult, RedisString, Status};

fn init(ctx: &Context, args: &[RedisString]) -> Status {
    guard::run("load", || lifecycle::load(ctx, args)).unwrap_or(Status::Err)
}

fn deinit(ctx: &Context) -> Status {
    guard::run("unload", || lifecycle::unload(ctx)).unwrap_or(Status::Err)
}

#[redis_module_macros::info_command_handler]
fn info(ctx: &InfoContext, _for_crash_report: bool) -> RedisResult<()> {
    guard::run("info", || lifecycle::info(ctx)).unwrap_or(Ok(()))
}

redis_module! {
    name: MODULE_NAME,
    version: 1,
    allocator: (crate::memory::Tracking, crate::memory::Tracking::new()),
    data_types: [],
    init: init,
    deinit: deinit,
    // Every command steers where events (and the broker password) go: admin
    // only, never from scripts (`deny-script`). The two that carry a password stay out of
    // MONITOR and SLOWLOG. The ACL categories are set where the server has
    // them (Redis 7.2+, Valkey); Redis 7.0 loads without them.
    commands: [
        ["key_evt_amqp.config_set", commands::run, "admin deny-script no-monitor no-slowlog", 0, 0, 0, "", "admin dangerous slow"],
        ["key_evt_amqp.connect", commands::run, "admin deny-script no-monitor no-slowlog", 0, 0, 0, "", "admin dangerous slow"],
        ["key_evt_amqp.disconnect", commands::run, "admin deny-script", 0, 0, 0, "", "admin dangerous slow"],
        ["key_evt_amqp.fallback_storage_size_set", commands::run, "admin deny-script", 0, 0, 0, "", "admin dangerous slow"],
        ["key_evt_amqp.keymask_clean", commands::run, "admin deny-script", 0, 0, 0, "", "admin dangerous slow"],
        ["key_evt_amqp.keymask_add", commands::run, "admin deny-script", 0, 0, 0, "", "admin dangerous slow"],
        ["key_evt_amqp.keymask_set", commands::run, "admin deny-script", 0, 0, 0, "", "admin dangerous slow"],
        ["key_evt_amqp.snapshot", commands::run, "admin deny-script", 0, 0, 0, "", "admin dangerous slow"],
    ],
}
