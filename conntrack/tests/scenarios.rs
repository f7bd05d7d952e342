//! The scenario corpus (`tests/common`) replayed through a shard: every packet must get the
//! classification Linux gives it (each step names the kernel behaviour it checks; the same
//! corpus runs against a real kernel in `kernel_diff.rs`).

mod common;

use common::{corpus, replay, shard};

fn check(loose: bool) {
    let mut failures = Vec::new();
    let mut packets = 0;
    for sc in corpus(loose, 0) {
        let mut sh = shard(loose);
        let got = replay(&mut sh, &sc.steps, 1_000_000_000);
        for (i, (step, got)) in sc.steps.iter().zip(&got).enumerate() {
            packets += 1;
            if *got != step.expect {
                failures.push(format!(
                    "{} #{i}: expected {:?} ({}), got {got:?}",
                    sc.name, step.expect, step.why
                ));
            }
        }
        assert_eq!(sh.recount(), sh.state_counts(), "{}: incremental counts", sc.name);
    }
    assert!(
        failures.is_empty(),
        "loose={loose}: {} of {packets} packets:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(packets > 150);
}

#[test]
fn corpus_matches_linux_expectations_strict() {
    check(false);
}

#[test]
fn corpus_matches_linux_expectations_loose() {
    check(true);
}
