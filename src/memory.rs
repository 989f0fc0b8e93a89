//! Handing freed memory back to the operating system.

/// Give the pages in glibc's free lists back to the kernel, so resident memory reflects what is
/// held rather than the peak: after a full relist (the whole cluster decoded once, most of it
/// freed again) and after each node-local check (queries' transient buffers). A no-op with
/// other allocators.
#[cfg(target_env = "gnu")]
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only walks glibc's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Give freed memory back to the kernel: nothing to do outside glibc.
#[cfg(not(target_env = "gnu"))]
pub fn release_free_memory() {}
