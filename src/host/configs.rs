//! Module configs: the tunables, and every broker setting as
//! `key_evt_amqp.<name>` (see [`crate::setting`]), readable with `CONFIG GET`,
//! settable with `CONFIG SET`, persisted by `CONFIG REWRITE`. The settings
//! configs read and write the same settings the positional arguments and
//! the commands change.

use crate::command::LinkAction;
use crate::config::{
    durability, Durability, Settings, Unroutable, FALLBACK_DB, FALLBACK_KEY, FALLBACK_KEY_DEFAULT,
    ON_UNROUTABLE, OUTBOX, TUNABLES,
};
use crate::host::{commands, guard, outbox, state};
use crate::setting::{Setting, Value};
use redis_module::configuration::{
    register_enum_configuration, register_i64_configuration, register_string_configuration,
    ConfigurationContext, ConfigurationFlags, ConfigurationValue, EnumConfigurationValue,
};
use redis_module::{raw, Context, RedisError, RedisString};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// While the module loads, before its state exists, config values land here.
static LOADING: Mutex<Option<Settings>> = Mutex::new(None);

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

fn register_setting(ctx: &Context, c: &'static SettingConfig) {
    let flags = if c.0 == Setting::Password {
        // Out of `CONFIG GET *` and redacted from logs; `CONFIG REWRITE`
        // still persists it.
        ConfigurationFlags::SENSITIVE | ConfigurationFlags::HIDDEN
    } else {
        ConfigurationFlags::DEFAULT
    };
    // The registered default is a marker, never a real value: at load the
    // server sets every config, to its default when the file or `MODULE
    // LOADEX` did not give it, and a marker leaves the positional argument
    // alone. `CONFIG GET` and `CONFIG REWRITE` see the value in force.
    match c.0.range() {
        Some((_, max)) => register_i64_configuration(
            ctx,
            c.0.name(),
            c,
            UNSET_NUMBER,
            UNSET_NUMBER,
            max,
            flags,
            None,
        ),
        None => register_string_configuration(ctx, c.0.name(), c, UNSET_TEXT, flags, None),
    }
}

/// The marker defaults (see `register_setting`).
const UNSET_NUMBER: i64 = i64::MIN;
const UNSET_TEXT: &str = "\u{1}unset";

impl SettingConfig {
    fn value(&self) -> Value {
        let now = state::with(|st| self.0.get(&st.engine.settings));
        now.or_else(|| {
            let l = LOADING.lock().ok()?;
            l.as_ref().map(|s| self.0.get(s))
        })
        .unwrap_or_else(|| self.0.get(&Settings::default()))
    }

    fn apply(&self, v: Value) -> Result<(), RedisError> {
        let out = guard::run("config set", || {
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
                    }
                    return Ok(());
                }
            }
            state::with(|st| {
                let new = self
                    .0
                    .set(&st.engine.settings, &v)
                    .map_err(|e| e.to_string())?;
                let action = LinkAction::after(&st.engine.settings, &new);
                commands::use_settings(st, new, action);
                Ok(())
            })
            .unwrap_or_else(|| Err("module state is busy".to_string()))
        });
        match out {
            Some(Ok(())) => Ok(()),
            Some(Err(e)) => Err(RedisError::String(e)),
            None => Err(RedisError::Str("internal error, see the server log")),
        }
    }
}

impl ConfigurationValue<RedisString> for SettingConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        let bytes = match self.value() {
            Value::Text(b) => b,
            Value::Number(n) => n.to_string().into_bytes(),
        };
        RedisString::create_from_slice(std::ptr::null_mut(), &bytes)
    }

    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        self.apply(Value::Text(val.as_slice().to_vec()))
    }
}

impl ConfigurationValue<i64> for SettingConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> i64 {
        match self.value() {
            Value::Number(n) => n,
            Value::Text(_) => 0,
        }
    }

    fn set(&self, _ctx: &ConfigurationContext, val: i64) -> Result<(), RedisError> {
        self.apply(Value::Number(val))
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
    *LOADING.lock().map_err(|_| "config lock poisoned")? = Some(settings.clone());
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
    register_string_configuration(
        ctx,
        "fallback-key",
        &FALLBACK_KEY,
        FALLBACK_KEY_DEFAULT,
        ConfigurationFlags::IMMUTABLE,
        None,
    );
    for s in &SETTINGS {
        register_setting(ctx, s);
    }
    // SAFETY: OnLoad, valid context; the crate has no wrapper.
    let loaded = unsafe {
        raw::RedisModule_LoadConfigs.map_or(raw::Status::Ok as i32, |load| load(ctx.ctx))
    };
    let taken = LOADING.lock().ok().and_then(|mut l| l.take());
    if loaded != raw::Status::Ok as i32 {
        return Err("a key_evt_amqp config value was refused (see the log)".into());
    }
    if let Some(s) = taken {
        *settings = s;
    }
    Ok(())
}
