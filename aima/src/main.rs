/// jemalloc, with its background thread, gives freed memory back to the system within
/// seconds of a burst (a connection flood, many MCP sessions); glibc's allocator keeps
/// the daemon at its high-water mark.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    aima::cli::main()
}
