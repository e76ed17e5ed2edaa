//! Module configs: the tunables, and every broker setting as
//! `key_evt_amqp.<name>` (see [`crate::config::setting`]), readable with `CONFIG GET`,
//! settable with `CONFIG SET`, persisted by `CONFIG REWRITE`. The settings
//! configs read and write the same settings the positional arguments and
//! the commands change.

use crate::command::LinkAction;
use crate::config::setting::{Setting, Value};
use crate::config::{
    durability, fallback_key, Durability, Settings, Unroutable, FALLBACK_DB, FALLBACK_KEY,
    FALLBACK_KEY_DEFAULT, ON_UNROUTABLE, OUTBOX, TUNABLES,
};
use crate::host::rawconfig::{self, Config};
use crate::host::{outbox, redact, state, values};
use redis_module::configuration::{
    register_enum_configuration, register_i64_configuration, ConfigurationContext,
    ConfigurationFlags, ConfigurationValue, EnumConfigurationValue,
};
use redis_module::{raw, Context, RedisError};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// While the module loads, before its state exists, config values land here.
static LOADING: Mutex<Option<Settings>> = Mutex::new(None);

/// What the set callbacks of the `CONFIG SET` under way staged: one apply
/// puts it all in force with one [`LinkAction`]. A refused `CONFIG SET`
/// sets the old values back through the same callbacks, so what is left
/// here equals the settings in force; any change of the settings drops it
/// ([`forget_pending`]).
static PENDING: Mutex<Option<Settings>> = Mutex::new(None);

/// One broker setting as a module config.
pub struct SettingConfig(Setting);

/// One config per setting, in [`Setting::ALL`]'s order.
static SETTINGS: [SettingConfig; Setting::ALL.len()] = {
    let mut out = [const { SettingConfig(Setting::Host) }; Setting::ALL.len()];
    let mut i = 0;
    while i < out.len() {
        out[i] = SettingConfig(Setting::ALL[i]);
        i += 1;
    }
    out
};

fn register_setting(ctx: &Context, c: &'static SettingConfig) -> Result<(), String> {
    let flags = if matches!(c.0, Setting::Password | Setting::Uri) {
        // Out of `CONFIG GET *` and redacted from logs; `CONFIG REWRITE`
        // still persists it. SLOWLOG and MONITOR: see `redact`.
        ConfigurationFlags::SENSITIVE | ConfigurationFlags::HIDDEN
    } else {
        ConfigurationFlags::DEFAULT
    };
    // The registered default is a marker, never a real value: at load the
    // server sets every config, to its default when the file or `MODULE
    // LOADEX` did not give it, and a marker leaves the positional argument
    // alone. `CONFIG GET` and `CONFIG REWRITE` see the value in force.
    match c.0.range() {
        Some((_, max)) => rawconfig::register_number(
            ctx,
            c.0.name(),
            UNSET_NUMBER,
            UNSET_NUMBER,
            max,
            flags,
            c,
            Some(apply_pending),
        ),
        None => {
            rawconfig::register_string(ctx, c.0.name(), UNSET_TEXT, flags, c, Some(apply_pending))
        }
    }
}

/// The marker defaults (see `register_setting`).
const UNSET_NUMBER: i64 = i64::MIN;
const UNSET_TEXT: &str = "\u{1}unset";

/// Drops what a `CONFIG SET` staged (the settings changed another way).
pub fn forget_pending() {
    if let Ok(mut p) = PENDING.lock() {
        *p = None;
    }
}

/// The apply callback of every setting config: puts what the `CONFIG SET`
/// staged in force, reconnecting at most once. The server calls it once per
/// config set; the first call takes it all, the others find nothing.
fn apply_pending() -> Result<(), String> {
    let Some(new) = PENDING.lock().ok().and_then(|mut p| p.take()) else {
        return Ok(());
    };
    // What no single setting can check (values need format json), on the
    // whole `CONFIG SET`: a refusal makes the server set the old values back.
    new.check().map_err(|e| e.to_string())?;
    state::with(|st| {
        let action = LinkAction::after(st.engine.settings(), &new);
        st.use_settings(new, action);
        values::follow_settings(st);
    })
    .ok_or_else(|| "module state is busy".to_string())
}

impl SettingConfig {
    fn value(&self) -> Value {
        // A `CONFIG SET` under way sees what it staged: when it fails, the
        // server sets back each value that differs from its backup, which
        // puts the staged copy back to the settings in force.
        let staged = PENDING
            .lock()
            .ok()
            .and_then(|p| p.as_ref().map(|s| self.0.get(s)));
        if let Some(v) = staged {
            return v;
        }
        let now = state::with(|st| self.0.get(st.engine.settings()));
        now.or_else(|| {
            let l = LOADING.lock().ok()?;
            l.as_ref().map(|s| self.0.get(s))
        })
        .unwrap_or_else(|| self.0.get(&Settings::default()))
    }

    fn stage(&self, v: Value) -> Result<(), String> {
        let v = match v {
            Value::Text(t) if matches!(self.0, Setting::Password | Setting::Uri) => {
                Value::Text(redact::resolve(t).ok_or(
                    "the value is over 1024 bytes, or was pushed out by newer ones (retry)",
                )?)
            }
            other => other,
        };
        if let Ok(mut l) = LOADING.lock() {
            if let Some(s) = l.as_mut() {
                // At load every config is set; the marker default means
                // "not given": the positional argument stays.
                let unset = match &v {
                    Value::Number(n) => *n == UNSET_NUMBER,
                    Value::Text(t) => t.as_slice() == UNSET_TEXT.as_bytes(),
                };
                if !unset {
                    *s = self.0.set(s, &v).map_err(|e| e.to_string())?;
                    needs_key_event(s)?;
                }
                return Ok(());
            }
        }
        state::with(|st| {
            let mut pending = PENDING.lock().map_err(|_| "config lock poisoned")?;
            let base = pending.as_ref().unwrap_or(st.engine.settings());
            let new = self.0.set(base, &v).map_err(|e| e.to_string())?;
            needs_key_event(&new)?;
            *pending = Some(new);
            Ok(())
        })
        .unwrap_or_else(|| Err("module state is busy".to_string()))
    }
}

/// Refuses `values before|both` where the server has no key event, and any
/// values where it cannot read a key without side effects (Redis 7.0).
fn needs_key_event(s: &Settings) -> Result<(), String> {
    if s.values.before() && !values::key_event_supported() {
        return Err(values::NO_KEY_EVENT.into());
    }
    // With `format seed` the apply callback refuses values for that reason.
    if s.values != crate::json::Values::None
        && s.format == crate::json::Format::Json
        && !values::open_flags_supported()
    {
        return Err(values::NO_OPEN_FLAGS.into());
    }
    Ok(())
}

impl Config for SettingConfig {
    fn get(&self) -> Value {
        self.value()
    }

    fn set(&self, v: Value) -> Result<(), String> {
        self.stage(v)
    }
}

/// `key_evt_amqp.fallback-key` (immutable): checked by
/// [`crate::config::fallback_key`].
struct FallbackKeyConfig;

static FALLBACK_KEY_CONFIG: FallbackKeyConfig = FallbackKeyConfig;

impl Config for FallbackKeyConfig {
    fn get(&self) -> Value {
        let k = FALLBACK_KEY
            .lock()
            .map(|k| k.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let k = if k.is_empty() {
            FALLBACK_KEY_DEFAULT.to_string()
        } else {
            k
        };
        Value::Text(k.into_bytes())
    }

    fn set(&self, v: Value) -> Result<(), String> {
        let Value::Text(bytes) = v else {
            return Err("invalid fallback-key".into());
        };
        let key = fallback_key(&bytes).map_err(|e| e.to_string())?;
        *FALLBACK_KEY.lock().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }
}

/// The conversions an enum config needs, from a type's `ALL` table.
macro_rules! enum_config {
    ($t:ty, $err:literal) => {
        impl TryFrom<i32> for $t {
            type Error = RedisError;

            fn try_from(v: i32) -> Result<Self, Self::Error> {
                usize::try_from(v)
                    .ok()
                    .and_then(|i| <$t>::ALL.get(i))
                    .map(|(u, _)| *u)
                    .ok_or(RedisError::Str($err))
            }
        }

        impl From<$t> for i32 {
            fn from(u: $t) -> i32 {
                <$t>::ALL
                    .iter()
                    .position(|(v, _)| *v == u)
                    .and_then(|i| i32::try_from(i).ok())
                    .unwrap_or(0)
            }
        }

        impl EnumConfigurationValue for $t {
            fn get_options(&self) -> (Vec<String>, Vec<i32>) {
                <$t>::ALL
                    .iter()
                    .map(|(u, name)| (name.to_string(), i32::from(*u)))
                    .unzip()
            }
        }
    };
}

enum_config!(Unroutable, "ERR invalid on-unroutable value");
enum_config!(Durability, "ERR invalid durability value");

/// `key_evt_amqp.durability`: `outbox` is refused where the server has no
/// post-notification jobs (Redis 7.0), at load and by `CONFIG SET`.
struct DurabilityConfig;

static DURABILITY: DurabilityConfig = DurabilityConfig;

impl ConfigurationValue<Durability> for DurabilityConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> Durability {
        durability()
    }

    fn set(&self, _ctx: &ConfigurationContext, val: Durability) -> Result<(), RedisError> {
        if val == Durability::Outbox && !outbox::supported() {
            return Err(RedisError::Str(
                "ERR durability outbox needs post-notification jobs (Redis 7.2+ or Valkey 7.2+); this server has none",
            ));
        }
        OUTBOX.store(val == Durability::Outbox, Ordering::Relaxed);
        Ok(())
    }
}

/// Registers every config (tunables, settings, fixed ones) and loads the
/// values given in the config file or `MODULE LOADEX`; settings given there
/// override the positional arguments in `settings`.
pub fn register(ctx: &Context, settings: &mut Settings) -> Result<(), String> {
    // Nothing staged by an earlier load of this (still mapped) library.
    forget_pending();
    *LOADING.lock().map_err(|_| "config lock poisoned")? = Some(settings.clone());
    let out = register_all(ctx);
    let taken = LOADING.lock().ok().and_then(|mut l| l.take());
    out?;
    if let Some(s) = taken {
        *settings = s;
    }
    Ok(())
}

/// Registers every config, then has the server set them (`LoadConfigs`).
fn register_all(ctx: &Context) -> Result<(), String> {
    for t in TUNABLES {
        register_i64_configuration(
            ctx,
            t.name,
            &t.value,
            t.default,
            t.min,
            t.max,
            ConfigurationFlags::DEFAULT,
            None,
        );
    }
    register_i64_configuration(
        ctx,
        FALLBACK_DB.name,
        &FALLBACK_DB.value,
        FALLBACK_DB.default,
        FALLBACK_DB.min,
        FALLBACK_DB.max,
        ConfigurationFlags::IMMUTABLE,
        None,
    );
    register_enum_configuration(
        ctx,
        "on-unroutable",
        &ON_UNROUTABLE,
        Unroutable::Store,
        ConfigurationFlags::DEFAULT,
        None,
    );
    register_enum_configuration(
        ctx,
        "durability",
        &DURABILITY,
        Durability::Memory,
        ConfigurationFlags::DEFAULT,
        None,
    );
    rawconfig::register_string(
        ctx,
        "fallback-key",
        FALLBACK_KEY_DEFAULT,
        ConfigurationFlags::IMMUTABLE,
        &FALLBACK_KEY_CONFIG,
        None,
    )?;
    for s in &SETTINGS {
        register_setting(ctx, s)?;
    }
    // SAFETY: OnLoad, valid context; the crate has no wrapper.
    let loaded = unsafe {
        raw::RedisModule_LoadConfigs.map_or(raw::Status::Ok as i32, |load| load(ctx.ctx))
    };
    if loaded != raw::Status::Ok as i32 {
        return Err("a key_evt_amqp config value was refused (see the log)".into());
    }
    Ok(())
}
