//! Running a closure on an EAL worker lcore (`rte_eal_remote_launch`).

use super::{strerror, sys, DpdkError, Eal};
use std::ffi::{c_int, c_void};

/// A launched worker; `join` waits for it (`rte_eal_wait_lcore`).
pub struct LcoreHandle {
    lcore: u32,
    _eal: Eal,
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: arg is the Box<Job> leaked by `launch` for exactly this one call.
    let job: Box<Job> = unsafe { Box::from_raw(arg as *mut Job) };
    job()
}

/// Runs `f` on EAL lcore `lcore` (which must be a worker lcore enabled with `-l` and idle).
pub fn launch<F>(eal: &Eal, lcore: u32, f: F) -> Result<LcoreHandle, DpdkError>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let job: Box<Job> = Box::new(Box::new(f));
    let arg = Box::into_raw(job) as *mut c_void;
    // SAFETY: trampoline has the lcore_function_t signature; arg is a valid Box<Job> whose
    // ownership passes to the trampoline if (and only if) the launch succeeds.
    let rc = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
    if rc != 0 {
        // SAFETY: the launch failed, so the trampoline never ran and we still own the job.
        drop(unsafe { Box::from_raw(arg as *mut Job) });
        return Err(DpdkError::Launch {
            lcore,
            reason: strerror(rc),
        });
    }
    Ok(LcoreHandle {
        lcore,
        _eal: eal.clone(),
    })
}

impl LcoreHandle {
    /// The lcore it runs on.
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// Waits until the closure returns; gives its return value.
    pub fn join(self) -> i32 {
        // SAFETY: called from the main lcore (the only thread that launches) for an lcore we
        // launched; the EAL is alive (we hold it).
        unsafe { sys::rte_eal_wait_lcore(self.lcore) }
    }
}

/// The EAL lcore id of the calling thread (`u32::MAX` for threads EAL did not create).
pub fn current_lcore() -> u32 {
    // SAFETY: reads the calling thread's per-lcore variable.
    unsafe { sys::rte_lcore_id() }
}
