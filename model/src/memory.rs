//! How the process's allocator keeps the model's working memory.
//!
//! Every call allocates its activations afresh (candle's tensors, MTCNN's
//! buffers): for a 250x250 photo, buffers from a few KB to about 1.6 MB,
//! 10-20 MB in all, freed by the end of the call. glibc's malloc maps
//! buffers above a threshold straight from the kernel and hands free memory
//! at the top of its heap back above a second one, and it moves both at run
//! time from the sizes it sees freed. Where they settle depends on the order
//! of the calls' allocations, and they can settle where every call hands
//! megabytes back and faults them in again: on an Intel Xeon, one photo then
//! cost about 3,400 page faults and 10 % more time (AVX2, from 40 px), and
//! small changes to the detector's buffer sizes moved a process in or out of
//! that state.
//!
//! [`keep_working_memory`] fixes both thresholds at the largest values
//! glibc's own rule can reach (32 MiB for mapping, 64 MiB for handing
//! back), so that the buffers come from the heap and stay there between
//! calls. [`crate::FaceModel::load`] calls it. A process keeps at most
//! 64 MiB of freed memory this way; larger buffers are still mapped and
//! unmapped per call. Where `GLIBC_TUNABLES` sets any malloc tunable, the
//! user's settings stay.
//!
//! Buffers a kernel keeps from call to call (per thread or per layer) go
//! through `scratch`, which grows them and never zeroes them again.

/// Largest buffer served from the heap (`M_MMAP_THRESHOLD`).
pub const MAP_ABOVE: usize = 32 << 20;
/// Free memory at the top of the heap kept for later calls
/// (`M_TRIM_THRESHOLD`).
pub const KEEP_UP_TO: usize = 64 << 20;

/// Sets the allocator's thresholds to [`MAP_ABOVE`] and [`KEEP_UP_TO`]
/// (glibc only; once per process). Returns whether they are set: false on
/// other C libraries and when `GLIBC_TUNABLES` sets a malloc tunable.
pub fn keep_working_memory() -> bool {
    static SET: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        let user_tunes_malloc = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        !user_tunes_malloc && set_thresholds()
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_thresholds() -> bool {
    // SAFETY: `mallopt` only changes the allocator's parameters; any value
    // is accepted or refused (returns 0).
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MAP_ABOVE as i32) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, KEEP_UP_TO as i32) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_thresholds() -> bool {
    false
}

/// The first `n` values of `buf`, a scratch buffer reused from call to
/// call: it grows (zero-filled) when shorter and is never shrunk or zeroed
/// again, so the caller sees whatever an earlier call left in it and must
/// write every value it reads.
pub(crate) fn scratch<T: Copy + Default>(buf: &mut Vec<T>, n: usize) -> &mut [T] {
    if buf.len() < n {
        buf.resize(n, T::default());
    }
    &mut buf[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Minor page faults of the calling thread so far.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    fn faults() -> i64 {
        let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
        // SAFETY: `getrusage` fills the struct it is given.
        unsafe {
            assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()), 0);
            usage.assume_init().ru_minflt
        }
    }

    /// Ten 4 MiB buffers allocated, written and freed, twenty times over
    /// (a call's worth of activations, larger): with the thresholds set, the
    /// rounds after the first reuse the heap's pages. glibc's moving
    /// thresholds (4 MiB to map, 8 MiB to hand back after the first round)
    /// hand the 40 MiB back and fault them in again every round. Only on
    /// x86_64: under an emulator page faults are not the CPU's.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    #[test]
    fn freed_buffers_are_reused_without_page_faults() {
        if !keep_working_memory() {
            eprintln!("GLIBC_TUNABLES sets malloc tunables: the user's settings stay, nothing to check");
            return;
        }
        let round = || {
            let bufs: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8 + 1; 4 << 20]).collect();
            std::hint::black_box(&bufs);
        };
        round();
        let before = faults();
        for _ in 0..20 {
            round();
        }
        let per_round = (faults() - before) / 20;
        // 40 MiB is 10,240 pages; reused, a round faults a handful.
        assert!(per_round < 100, "{per_round} page faults per round of 40 MiB");
    }

    #[test]
    fn setting_is_idempotent() {
        let first = keep_working_memory();
        assert_eq!(keep_working_memory(), first);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        if std::env::var("GLIBC_TUNABLES").map_or(true, |t| !t.contains("glibc.malloc.")) {
            assert!(first, "glibc accepts both thresholds");
        }
    }

    #[test]
    fn scratch_grows_and_keeps_what_was_written() {
        let mut buf = Vec::new();
        assert_eq!(scratch(&mut buf, 3), &[0, 0, 0]);
        scratch(&mut buf, 3).copy_from_slice(&[1, 2, 3]);
        // Shorter: the front part, as left; the buffer keeps its length.
        assert_eq!(scratch(&mut buf, 2), &[1, 2]);
        assert_eq!(buf.len(), 3);
        // Longer: the old values, then zeros.
        assert_eq!(scratch(&mut buf, 5), &[1, 2, 3, 0, 0]);
    }
}
