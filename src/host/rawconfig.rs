//! Module configs registered through the raw API, for what redis-module's
//! wrappers cannot do:
//!
//! - a string config's getter hands the server a `RedisModuleString` that
//!   the server copies and never frees: each config here owns ONE string,
//!   replaced (the old one freed) only when the value changed, so that
//!   `CONFIG GET` allocates nothing that stays;
//! - the apply callback (`applyfn`), which the server calls once the whole
//!   `CONFIG SET` is set.

use crate::config::setting::Value;
use crate::host::guard;
use redis_module::configuration::ConfigurationFlags;
use redis_module::{raw, Context, RedisString};
use std::ffi::CString;
use std::os::raw::{c_char, c_int, c_longlong, c_void};
use std::sync::Mutex;

/// A config the module holds itself.
pub trait Config: Sync {
    /// The value in force.
    fn get(&self) -> Value;
    /// Takes a new value (for the settings: stages it until the apply).
    fn set(&self, v: Value) -> Result<(), String>;
}

/// Puts what the set callbacks staged in force, once per `CONFIG SET`.
pub type Apply = fn() -> Result<(), String>;

/// The string a string config last handed the server.
struct Held(*mut raw::RedisModuleString);

// SAFETY: only touched on the main thread (config callbacks); the mutex is
// there for the static's sake.
unsafe impl Send for Held {}

/// What the server's callbacks get as their private data (leaked once per
/// registration: configs live as long as the module).
struct Entry {
    cfg: &'static dyn Config,
    held: Mutex<Held>,
    apply: Option<Apply>,
}

/// The config entry a callback's private data points to.
///
/// # Safety
/// `privdata` must be the pointer given to the server at registration (a
/// leaked `Box<Entry>`, alive for the rest of the process), as the server
/// passes it back to every config callback.
unsafe fn entry<'a>(privdata: *mut c_void) -> &'a Entry {
    &*(privdata as *const Entry)
}

fn bytes_of(v: Value) -> Vec<u8> {
    match v {
        Value::Text(b) => b,
        Value::Number(n) => n.to_string().into_bytes(),
    }
}

unsafe extern "C" fn get_string(
    _name: *const c_char,
    privdata: *mut c_void,
) -> *mut raw::RedisModuleString {
    // SAFETY: the server passes back the pointer given at registration.
    let e = unsafe { entry(privdata) };
    let out = guard::run("config get", || {
        let now = bytes_of(e.cfg.get());
        let mut held = e.held.lock().unwrap_or_else(|p| p.into_inner());
        if !held.0.is_null() && RedisString::string_as_slice(held.0) == now.as_slice() {
            return held.0;
        }
        // SAFETY: main thread; a NULL context makes a string the module
        // frees itself.
        unsafe {
            let (Some(create), Some(free)) =
                (raw::RedisModule_CreateString, raw::RedisModule_FreeString)
            else {
                return held.0;
            };
            let new = create(std::ptr::null_mut(), now.as_ptr().cast(), now.len());
            if new.is_null() {
                return held.0;
            }
            if !held.0.is_null() {
                free(std::ptr::null_mut(), held.0);
            }
            held.0 = new;
        }
        held.0
    });
    out.unwrap_or_else(|| e.held.lock().map_or(std::ptr::null_mut(), |h| h.0))
}

/// Reports `out` to the server: OK, or ERR with the message in `err`.
fn finish(out: Option<Result<(), String>>, err: *mut *mut raw::RedisModuleString) -> c_int {
    let msg = match out {
        Some(Ok(())) => return raw::REDISMODULE_OK as c_int,
        Some(Err(m)) => m,
        None => "internal error, see the server log".to_string(),
    };
    // SAFETY: `err` is the server's out-parameter; it frees the string.
    unsafe {
        if let (false, Some(create)) = (err.is_null(), raw::RedisModule_CreateString) {
            *err = create(std::ptr::null_mut(), msg.as_ptr().cast(), msg.len());
        }
    }
    raw::REDISMODULE_ERR as c_int
}

unsafe extern "C" fn set_string(
    _name: *const c_char,
    val: *mut raw::RedisModuleString,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: the server passes back the pointer given at registration.
    let e = unsafe { entry(privdata) };
    let bytes = if val.is_null() {
        Vec::new()
    } else {
        RedisString::string_as_slice(val).to_vec()
    };
    finish(
        guard::run("config set", || e.cfg.set(Value::Text(bytes))),
        err,
    )
}

unsafe extern "C" fn get_number(_name: *const c_char, privdata: *mut c_void) -> c_longlong {
    // SAFETY: the server passes back the pointer given at registration.
    let e = unsafe { entry(privdata) };
    guard::run("config get", || match e.cfg.get() {
        Value::Number(n) => n,
        Value::Text(_) => 0,
    })
    .unwrap_or(0)
}

unsafe extern "C" fn set_number(
    _name: *const c_char,
    val: c_longlong,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: the server passes back the pointer given at registration.
    let e = unsafe { entry(privdata) };
    finish(
        guard::run("config set", || e.cfg.set(Value::Number(val))),
        err,
    )
}

unsafe extern "C" fn apply(
    _ctx: *mut raw::RedisModuleCtx,
    privdata: *mut c_void,
    err: *mut *mut raw::RedisModuleString,
) -> c_int {
    // SAFETY: the server passes back the pointer given at registration.
    let e = unsafe { entry(privdata) };
    let out = guard::run("config apply", || e.apply.map_or(Ok(()), |f| f()));
    finish(out, err)
}

fn leak(cfg: &'static dyn Config, apply: Option<Apply>) -> *mut c_void {
    Box::into_raw(Box::new(Entry {
        cfg,
        held: Mutex::new(Held(std::ptr::null_mut())),
        apply,
    }))
    .cast()
}

fn registered(name: &str, status: c_int) -> Result<(), String> {
    if status == raw::REDISMODULE_OK as c_int {
        Ok(())
    } else {
        Err(format!("cannot register config {name}"))
    }
}

/// Registers the string config `name` (without the module prefix).
pub fn register_string(
    ctx: &Context,
    name: &str,
    default: &str,
    flags: ConfigurationFlags,
    cfg: &'static dyn Config,
    on_apply: Option<Apply>,
) -> Result<(), String> {
    let (Ok(cname), Ok(cdefault)) = (CString::new(name), CString::new(default)) else {
        return Err(format!("bad config name {name}"));
    };
    // SAFETY: OnLoad, valid context; the callbacks match the server's types.
    let status = unsafe {
        let Some(reg) = raw::RedisModule_RegisterStringConfig else {
            return Err("this server has no module configs".into());
        };
        reg(
            ctx.ctx,
            cname.as_ptr(),
            cdefault.as_ptr(),
            flags.bits(),
            Some(get_string),
            Some(set_string),
            on_apply.map(|_| apply as unsafe extern "C" fn(_, _, _) -> _),
            leak(cfg, on_apply),
        )
    };
    registered(name, status)
}

/// Registers the numeric config `name` (without the module prefix).
#[allow(clippy::too_many_arguments)]
pub fn register_number(
    ctx: &Context,
    name: &str,
    default: i64,
    min: i64,
    max: i64,
    flags: ConfigurationFlags,
    cfg: &'static dyn Config,
    on_apply: Option<Apply>,
) -> Result<(), String> {
    let Ok(cname) = CString::new(name) else {
        return Err(format!("bad config name {name}"));
    };
    // SAFETY: OnLoad, valid context; the callbacks match the server's types.
    let status = unsafe {
        let Some(reg) = raw::RedisModule_RegisterNumericConfig else {
            return Err("this server has no module configs".into());
        };
        reg(
            ctx.ctx,
            cname.as_ptr(),
            default,
            flags.bits(),
            min,
            max,
            Some(get_number),
            Some(set_number),
            on_apply.map(|_| apply as unsafe extern "C" fn(_, _, _) -> _),
            leak(cfg, on_apply),
        )
    };
    registered(name, status)
}
