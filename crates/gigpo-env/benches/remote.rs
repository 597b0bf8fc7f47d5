//! Steps per second through each remote transport (filled in below).
fn main() {}
