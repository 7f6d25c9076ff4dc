//! `cargo xtask`: project tasks for vellum. Subcommands arrive with the crates they measure.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    eprintln!("cargo xtask: no tasks yet (got {args:?}); `bench` arrives with issue 7");
    std::process::exit(2);
}
