//! The `cachet-engine` binary.
fn main() {}
