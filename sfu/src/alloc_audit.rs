//! Attribution of allocations on the forwarding path, for the allocation test
//! (`sfu/tests/allocations.rs`): calls into str0m run inside [`engine!`], so the test's counting
//! allocator can tell str0m's allocations from roomcast's own. Without the `testing` feature the macro is
//! the bare expression.

#[cfg(any(test, feature = "testing"))]
thread_local! {
    /// True while the current thread is inside a str0m call.
    pub static IN_ENGINE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as inside str0m until dropped (restores the previous state, so
/// nesting is fine).
#[cfg(any(test, feature = "testing"))]
pub struct EngineGuard(bool);

#[cfg(any(test, feature = "testing"))]
impl EngineGuard {
    pub fn enter() -> Self {
        EngineGuard(IN_ENGINE.with(|flag| flag.replace(true)))
    }
}

#[cfg(any(test, feature = "testing"))]
impl Drop for EngineGuard {
    fn drop(&mut self) {
        IN_ENGINE.with(|flag| flag.set(self.0));
    }
}

/// Evaluate a str0m call, attributing its allocations to the engine in tests.
macro_rules! engine {
    ($call:expr) => {{
        #[cfg(any(test, feature = "testing"))]
        let _engine = $crate::alloc_audit::EngineGuard::enter();
        $call
    }};
}

pub(crate) use engine;
