fn main() -> std::process::ExitCode {
    buildit::cli::main()
}
