//! `ferry`: the command-line client of a Ferry node. See `ferry --help`.

fn main() -> std::process::ExitCode {
    ferry_services::cli::main()
}
