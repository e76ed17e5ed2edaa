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

/// Runs `f`, then `always`, each guarded on its own: a panic in `f` is
/// logged and `always` still runs (the timer re-arms whatever its tick did).
pub fn run_then(what: &str, f: impl FnOnce(), always: impl FnOnce()) {
    let _ = run(what, f);
    let _ = run(what, always);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_step_runs_after_a_panic_in_the_first() {
        let mut rearmed = false;
        run_then("test", || panic!("a tick that panics"), || rearmed = true);
        assert!(rearmed);
        let mut ran = (false, false);
        run_then("test", || ran.0 = true, || ran.1 = true);
        assert_eq!(ran, (true, true));
    }
}
