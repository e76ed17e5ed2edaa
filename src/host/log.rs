//! The one way the module logs. Text from outside (hosts, masks, exchange
//! names, broker and lapin errors, cluster peers' arguments) may hold `%`,
//! CR, LF or NUL: it is never passed as a printf format (the message goes
//! through a fixed `"%s"`), and control bytes are made visible so that one
//! call is one log line.

use crate::engine::Notice;
use redis_module::raw;
use std::ffi::CString;

/// Makes control characters visible (`\r` → `\x0d`), so that a value shows
/// on one line of a log or of INFO; `%` and everything else stay as they are.
pub fn visible(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fn emit(ctx: *mut raw::RedisModuleCtx, level: &std::ffi::CStr, msg: &str) {
    if cfg!(test) {
        return;
    }
    // `visible` removed every NUL, so this cannot fail; stay quiet if it does.
    let Ok(text) = CString::new(visible(msg)) else {
        return;
    };
    // SAFETY: the format is a fixed "%s" with one NUL-terminated argument;
    // `ctx` is either null (allowed: no module name prefix) or a live context.
    unsafe {
        if let Some(log) = raw::RedisModule_Log {
            log(ctx, level.as_ptr(), c"%s".as_ptr(), text.as_ptr());
        }
    }
}

/// Logs at notice level.
pub fn notice(msg: &str) {
    emit(std::ptr::null_mut(), c"notice", msg);
}

/// Logs at warning level.
pub fn warning(msg: &str) {
    emit(std::ptr::null_mut(), c"warning", msg);
}

/// Writes the engine's log lines.
pub fn notices(lines: Vec<Notice>) {
    for n in lines {
        match n {
            Notice::Notice(t) => notice(&t),
            Notice::Warning(t) => warning(&t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bytes_are_visible_and_percent_stays() {
        assert_eq!(visible("a\r\nb\0c%s%n"), "a\\x0d\\x0ab\\x00c%s%n");
        assert_eq!(visible("héllo"), "héllo");
    }
}
