//! `sluice-sim`: runs Sluice under turmoil with faults drawn from a seed.
//!
//! The simulator itself is built in its own issue; for now the binary only
//! proves the crate links against the broker with the `sim` seam enabled.

fn main() {
    eprintln!("sluice-sim: the simulator is not built yet (see docs/simulation.md)");
    std::process::exit(2);
}
