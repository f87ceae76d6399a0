//! The `racks` section: report only by default, the healing bounds named when wrong.

use kpool_policy::{DEFAULT_POLICY_YAML, Policy, PolicyError};

#[test]
fn healing_is_off_by_default_with_bounded_runs() {
    let p = Policy::builtin().expect("valid");
    let r = &p.spec().racks;
    assert!(!r.self_healing);
    assert_eq!(r.rule, kpool_policy::model::RackRule::PerDimension);
    assert_eq!(
        (r.persist_polls, r.moves_per_run, r.max_moves_per_broker),
        (2, 10, 5)
    );
    assert_eq!(r.throttle_bytes_per_second, 50 * 1024 * 1024);
    // Without the section: the same.
    let start = DEFAULT_POLICY_YAML.find("\nracks:\n").expect("section");
    let end = start + 1 + DEFAULT_POLICY_YAML[start + 1..].find("\n\n").expect("end");
    let without = format!(
        "{}{}",
        &DEFAULT_POLICY_YAML[..start],
        &DEFAULT_POLICY_YAML[end..]
    );
    let q = Policy::from_yaml(&without, "p").expect("valid");
    assert_eq!(q.spec().racks, *r);
}

#[test]
fn zero_bounds_and_unknown_fields_are_named() {
    let bad = DEFAULT_POLICY_YAML
        .replacen("persistPolls: 2", "persistPolls: 0", 1)
        .replacen("movesPerRun: 10", "movesPerRun: 0", 1)
        .replacen("maxMovesPerBroker: 5", "maxMovesPerBroker: 0", 1);
    let e: PolicyError = Policy::from_yaml(&bad, "p").expect_err("refused");
    let got: Vec<String> = e.field_errors().iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "racks.persistPolls: must be at least 1, found 0",
            "racks.movesPerRun: must be at least 1, found 0",
            "racks.maxMovesPerBroker: must be at least 1, found 0",
        ]
    );
    let per_cell = DEFAULT_POLICY_YAML.replacen("rule: perDimension", "rule: perCell", 1);
    assert_eq!(
        Policy::from_yaml(&per_cell, "p")
            .expect("valid")
            .spec()
            .racks
            .rule,
        kpool_policy::model::RackRule::PerCell
    );
    let bad_rule = DEFAULT_POLICY_YAML.replacen("rule: perDimension", "rule: perZone", 1);
    let e = Policy::from_yaml(&bad_rule, "p").expect_err("unknown rule");
    assert!(e.to_string().contains("perZone"), "{e}");
    let typo = DEFAULT_POLICY_YAML.replacen("selfHealing: false", "selfHeal: true", 1);
    let e = Policy::from_yaml(&typo, "p").expect_err("unknown field");
    assert!(e.to_string().contains("selfHeal"), "{e}");
}
