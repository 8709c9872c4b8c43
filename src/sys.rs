//! The crate's only `unsafe` code: locking secret memory and process hardening.
//!
//! Everything here is a thin wrapper over one system call whose safety condition is stated
//! beside it. The rest of the crate denies `unsafe`.
#![allow(unsafe_code)]

use std::io;

/// Locks the pages holding `bytes` in memory so that they are never swapped out.
///
/// Failure (for example `RLIMIT_MEMLOCK` exhausted) is reported but not fatal: the caller logs
/// it once and goes on, as the key is still zeroized on drop.
pub fn lock_memory(bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    // SAFETY: mlock only reads the address range, which `bytes` borrows for the whole call.
    let rc = unsafe { libc::mlock(bytes.as_ptr().cast(), bytes.len()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Undoes [`lock_memory`] for the same range. Errors are ignored: the range is going away.
pub fn unlock_memory(bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // SAFETY: munlock only reads the address range, which `bytes` borrows for the whole call.
    unsafe {
        libc::munlock(bytes.as_ptr().cast(), bytes.len());
    }
}

/// Makes this process produce no core dump and refuse ptrace attach from non-root, so that
/// keys in memory never reach a core file.
pub fn disable_core_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct we pass by reference for the duration of the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: PR_SET_DUMPABLE takes a plain integer argument and touches no memory of ours.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
