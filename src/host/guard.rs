//! Keeps panics from crossing the FFI boundary: every `extern "C"` entry
//! point runs its body through [`run`], which catches a panic and logs it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Once;

static HOOK: Once = Once::new();

/// Installs a panic hook that logs the panic through Redis.
pub fn install_panic_hook() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            crate::host::log::warning(&format!("key_evt_amqp: internal error (panic): {info}"));
        }));
    });
}

/// Runs `f`, turning a panic into `None` and a log line.
pub fn run<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(_) => {
            crate::host::log::warning(&format!(
                "key_evt_amqp: {what} failed; the event loop goes on"
            ));
            None
        }
    }
}
