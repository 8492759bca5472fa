fn main() -> std::process::ExitCode {
    aima::cli::main()
}
