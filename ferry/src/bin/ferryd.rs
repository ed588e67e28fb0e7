//! `ferryd`: the Ferry node. See `ferryd --help`; the process is `ferry_node::daemon`.

fn main() -> std::process::ExitCode {
    ferry_node::daemon::main()
}
