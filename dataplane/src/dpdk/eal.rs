//! The EAL guard: `rte_eal_init` once per process, `rte_eal_cleanup` when the last owner drops.

use super::{last_error, sys, DpdkError};
use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is initialised. Cloning shares it; `rte_eal_cleanup` runs when the last
/// clone (including those held inside ports and mempools) is dropped.
#[derive(Clone)]
pub struct Eal {
    inner: Arc<EalInner>,
}

struct EalInner {
    args: Vec<String>,
}

impl Eal {
    /// Initialises the EAL with `args` (argv\[0\] is supplied here). The calling thread becomes
    /// the main lcore. Fails if the EAL was already initialised in this process.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, DpdkError> {
        if INITIALISED.swap(true, Ordering::SeqCst) {
            return Err(DpdkError::EalAlreadyInitialised);
        }
        let mut owned: Vec<String> = vec!["levee".to_owned()];
        owned.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let cstrings = owned
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| DpdkError::BadArgument(a.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        // rte_eal_init may permute argv, so it gets its own array of pointers; the strings
        // themselves must outlive the process's use of them, so they are leaked on success
        // (a few hundred bytes, once per process).
        let mut argv: Vec<*mut c_char> = cstrings.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv holds argc valid NUL-terminated strings that live until after the call
        // (and forever on success, see below); we are the only caller (INITIALISED guard).
        let rc = unsafe { sys::rte_eal_init(argv.len() as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            let reason = last_error();
            INITIALISED.store(false, Ordering::SeqCst);
            return Err(DpdkError::EalInit(reason, owned));
        }
        std::mem::forget(cstrings);
        std::mem::forget(argv);
        Ok(Eal {
            inner: Arc::new(EalInner { args: owned }),
        })
    }

    /// The arguments the EAL was initialised with (argv\[0\] included).
    pub fn args(&self) -> &[String] {
        &self.inner.args
    }

    /// Number of lcores the EAL enabled (`-l`), the main one included.
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: the EAL is initialised (we hold the guard); rte_lcore_count only reads config.
        unsafe { sys::rte_lcore_count() }
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: the last Eal handle is going away; ports and pools hold handles, so none of
        // them is alive any more and no worker can be running on EAL memory.
        unsafe {
            sys::rte_eal_cleanup();
        }
    }
}

/// Time-stamp counter frequency in Hz (valid after EAL init).
pub fn tsc_hz() -> u64 {
    // SAFETY: reads a value EAL computed at init; harmless if called before (returns 0).
    unsafe { sys::rte_get_tsc_hz() }
}

/// The CPU's time-stamp counter (cycles).
#[inline]
pub fn tsc_now() -> u64 {
    // SAFETY: rte_rdtsc executes the rdtsc instruction and has no preconditions.
    unsafe { sys::rte_rdtsc() }
}
