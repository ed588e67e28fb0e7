//! `ferry`: the command-line client of a Ferry node. See `ferry --help`.

fn main() {
    eprintln!("ferry: not built yet");
    std::process::exit(2);
}
