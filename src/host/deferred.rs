//! Nested notifications: an event that arrives while the module's state is
//! in use was fired by the module's own work (a key that a snapshot's read
//! found expired, and the server deleted on the spot). It cannot be
//! accepted then, so it is kept here and accepted as soon as the work that
//! caused it is done ([`drain`]), in order, before any later event, and
//! counted in `events_deferred`. No event is dropped for being nested.

use crate::engine::{Accepted, Origin};
use crate::host::state::State;
use crate::host::values;
use crate::json::Values;
use redis_module::{raw, Context};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

/// An event kept for later.
struct Deferred {
    event: Vec<u8>,
    key: Vec<u8>,
    db: i32,
}

thread_local! {
    static DEFERRED: RefCell<Vec<Deferred>> = const { RefCell::new(Vec::new()) };
}

/// Something was deferred: the one check the keyspace callback pays per
/// event (a thread-local would cost a `__tls_get_addr` call).
static ANY: AtomicBool = AtomicBool::new(false);

/// Keeps an event that arrived while the state was in use.
pub fn defer(ctx: &Context, event: &[u8], key: &[u8]) {
    // SAFETY: the valid context Redis passed to the callback.
    let db = unsafe { raw::RedisModule_GetSelectedDb.map_or(0, |f| f(ctx.ctx)) };
    DEFERRED.with(|d| {
        d.borrow_mut().push(Deferred {
            event: event.to_vec(),
            key: key.to_vec(),
            db,
        })
    });
    ANY.store(true, Ordering::Relaxed);
}

/// Where a deferred event is encoded: its own database, and its values
/// read now, by the key's name.
struct Late<'a> {
    ctx: &'a Context,
    db: i32,
    outbox: bool,
}

impl Origin for Late<'_> {
    fn db(&self) -> i32 {
        self.db
    }

    fn now_secs(&self) -> u64 {
        crate::event::now_secs()
    }

    fn outbox(&self) -> bool {
        self.outbox
    }

    fn values(&self, db: i32, event: &[u8], key: &[u8], v: Values, cap: usize, out: &mut Vec<u8>) {
        values::images_by_name(self.ctx, db, event, key, v, cap, out);
    }
}

/// Accepts the deferred events, oldest first; returns what the engine made
/// of each (the keyspace callback acts on them; the timer re-arms anyway).
#[inline]
pub fn drain(ctx: &Context, st: &mut State) -> Vec<Accepted> {
    if !ANY.swap(false, Ordering::Relaxed) {
        return Vec::new();
    }
    let items = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    items
        .into_iter()
        .map(|d| {
            let origin = Late {
                ctx,
                db: d.db,
                outbox: st.outbox_usable(),
            };
            let accepted = st.engine.accept(&d.event, &d.key, &origin);
            // The module's own list writes notify too (in cluster mode):
            // skipped, they are not counted here.
            if accepted != Accepted::Skipped {
                st.engine.count_deferred();
            }
            accepted
        })
        .collect()
}
