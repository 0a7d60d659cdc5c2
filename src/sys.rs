//! The only `unsafe` in the crate: five calls into the C library that std does not wrap.
//! Each takes no pointer it does not own, and each has a safe fallback when the call fails.

/// This machine's host name (the default replica name), or `replica-PID` when it has none.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..end]) {
        Ok(h) if rc == 0 && !h.is_empty() => h.to_string(),
        _ => format!("replica-{}", std::process::id()),
    }
}

/// A command-line tool's stdout into a closed pipe (`status | head -c1`) ends the process
/// quietly, as `cat` does, instead of a panic in `println!`. Never for the proxy itself, whose
/// sockets must see EPIPE as an error (Rust ignores SIGPIPE for that).
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Hands the allocator's free pages back to the system. A no-op off glibc.
pub fn malloc_trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory the allocator holds; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Free memory glibc keeps at the top of a heap instead of handing it back at the `free` that
/// left it there (its default, 128 KiB, is about two 64 KiB upload buffers: under steady
/// uploads the heap's top was handed back and faulted in again, 0.3-4.5 page faults per
/// request and up to a sixth of the CPU per 64 KiB POST, docs/PERFORMANCE.md). Memory still goes back after
/// a burst of connections (`server/memory.rs`). Setting the trim threshold fixes the `mmap`
/// threshold too, so that is set with it: allocations under 1 MiB come from the heaps, as
/// glibc's dynamic threshold would have them after its first large `free`. A no-op off glibc.
pub fn keep_heap_top() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets the allocator's parameters; it takes no pointers. Called
    // before any thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 4 << 20);
    }
}

/// The open-file limit as it stands after raising its soft value towards `want` (never past
/// the hard one); `None` when it cannot be read.
pub fn raise_open_files(want: u64) -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return None;
        }
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want.min(lim.rlim_max),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    Some(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_name_is_never_empty_and_the_limit_never_falls() {
        assert!(!hostname().is_empty());
        let before = raise_open_files(0).expect("getrlimit works here");
        assert_eq!(raise_open_files(before), Some(before));
        keep_heap_top();
        malloc_trim();
    }
}
