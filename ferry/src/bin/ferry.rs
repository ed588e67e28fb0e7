//! `ferry`: the command-line client of a Ferry node. See `ferry --help`; the command is
//! `ferry_cli`.

fn main() -> std::process::ExitCode {
    ferry_cli::main()
}
