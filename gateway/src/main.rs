//! The `cachet` binary.
fn main() {}
