//! The `cairn` binary: parses arguments and hands over to [`cairn_server::cli`].

fn main() -> std::process::ExitCode {
    tune_malloc();
    cairn_server::cli::main()
}

/// Keeps megabyte-sized buffers (fetch answers, produce batches) in glibc's reusable heap.
///
/// By default glibc serves allocations above 128 KiB with a fresh `mmap` and returns them with
/// `munmap`, so every such buffer costs page faults and zeroing of its pages, which took more
/// time than moving the bytes (BENCHMARKS.md). Raising the mmap and trim thresholds makes freed
/// buffers available to the next request.
fn tune_malloc() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread
    // exists, as glibc requires for predictable results.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}
