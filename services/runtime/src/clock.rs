//! Wall-clock time as services read it: one function, replaceable so tests and simulations
//! move time themselves.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch; replaceable in tests.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock(Arc::new(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }))
    }

    /// A clock that reads `f` (tests offset wall time with it).
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// A clock that reads `ms` (tests move it).
    pub fn manual(ms: Arc<AtomicU64>) -> Clock {
        Clock(Arc::new(move || ms.load(Ordering::SeqCst)))
    }

    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}
