//! The state of the snapshot walk the module holds: where the walk stands
//! ([`Walk`]), and the server's scan cursor of the database being walked.
//! The walk itself is in `snapshot`.

use crate::snapshot::Walk;
use redis_module::raw;

/// The scan cursor of the database being walked (destroyed on drop).
#[derive(Debug)]
pub struct Cursor(pub(crate) *mut raw::RedisModuleScanCursor);

impl Cursor {
    pub fn new() -> Option<Self> {
        // SAFETY: a plain constructor of the server.
        let c = unsafe { raw::RedisModule_ScanCursorCreate.map(|f| f()) }?;
        (!c.is_null()).then_some(Self(c))
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        // SAFETY: the cursor made in `new`, destroyed once.
        unsafe {
            if let Some(destroy) = raw::RedisModule_ScanCursorDestroy {
                destroy(self.0);
            }
        }
    }
}

/// The walk and its cursor.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Where the walk stands.
    pub walk: Walk,
    /// The scan cursor of the database being walked.
    pub cursor: Option<Cursor>,
    /// The scan of the current database returned its last keys.
    pub scanned: bool,
}
