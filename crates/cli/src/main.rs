//! The `ferry` binary; everything lives in the `ferry_cli` library.

fn main() {
    std::process::exit(ferry_cli::main());
}
