//! The README's claims are the ones the repository backs: its performance table is the one
//! `benches/load.py readme` generates from the newest committed results file
//! (`benches/results/`), so no figure in it lacks a measurement behind it.

use std::process::Command;

use crate::support::{repo, require};

#[test]
fn readme_performance_table_is_the_committed_results() {
    let out = Command::new(require("python3"))
        .args(["benches/load.py", "readme", "--check"])
        .current_dir(repo())
        .output()
        .expect("run benches/load.py readme --check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
