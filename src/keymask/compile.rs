//! Builds automata off the Redis main thread. One thread at a time works
//! through the requests and exits when none is left; a set replaced before
//! its turn (nothing holds it any more) is skipped, and a newer request
//! replaces an older one that has not started.

use super::SetInner;
use std::sync::{Arc, Mutex, PoisonError, Weak};

struct Queue {
    next: Option<Weak<SetInner>>,
    running: bool,
}

static QUEUE: Mutex<Queue> = Mutex::new(Queue {
    next: None,
    running: false,
});

/// True once a thread was started to build automata: its last steps run
/// code of the library even after it took itself off the queue, so the
/// module is never unloaded after one.
static SPAWNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// True while a thread builds automata, or once one was started.
pub(super) fn running() -> bool {
    SPAWNED.load(std::sync::atomic::Ordering::Relaxed)
        || QUEUE.lock().unwrap_or_else(PoisonError::into_inner).running
}

/// Asks for `set`'s automaton. Returns at once.
pub(super) fn request(set: &Arc<SetInner>) {
    let mut q = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
    q.next = Some(Arc::downgrade(set));
    if q.running {
        return;
    }
    q.running = true;
    drop(q);
    SPAWNED.store(true, std::sync::atomic::Ordering::Relaxed);
    let spawned = std::thread::Builder::new()
        .name("kea-keymask".into())
        .spawn(work);
    if spawned.is_err() {
        // No thread: build here rather than match linearly for ever.
        QUEUE.lock().unwrap_or_else(PoisonError::into_inner).running = false;
        let _ = set.build();
    }
}

fn work() {
    loop {
        let job = {
            let mut q = QUEUE.lock().unwrap_or_else(PoisonError::into_inner);
            match q.next.take() {
                Some(job) => job,
                None => {
                    q.running = false;
                    return;
                }
            }
        };
        if let Some(set) = job.upgrade() {
            let _ = set.build();
        }
    }
}
