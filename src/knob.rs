//! A tuning knob: a value held in an atomic (read without a lock on every
//! tick) and exposed as a module config. A leaf: the modules that own a
//! knob define it, and `config` lists them all for the host to register.

use std::sync::atomic::{AtomicI64, Ordering};

/// A tunable held in an atomic and exposed as a module config.
pub struct Tunable {
    /// Config name without the module prefix.
    pub name: &'static str,
    /// Current value.
    pub value: AtomicI64,
    /// Default.
    pub default: i64,
    /// Smallest accepted value.
    pub min: i64,
    /// Largest accepted value.
    pub max: i64,
}

impl Tunable {
    pub const fn new(name: &'static str, default: i64, min: i64, max: i64) -> Self {
        Self {
            name,
            value: AtomicI64::new(default),
            default,
            min,
            max,
        }
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }

    /// Current value as a count.
    #[inline]
    pub fn get_usize(&self) -> usize {
        usize::try_from(self.get()).unwrap_or(0)
    }
}
