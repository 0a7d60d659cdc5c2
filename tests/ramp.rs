//! Ramp-up properties of the cohort formula: raising the percentage only moves users into the
//! canary, and the split over many ids is on target.

use canary_proxy::cohort::{assign, threshold_ppm, Cohort, CohortHasher};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn raising_the_percent_never_moves_anyone_back(low in 0.0f64..=100.0, high in 0.0f64..=100.0, salt in "[a-z]{0,8}") {
        let (low, high) = if low <= high { (low, high) } else { (high, low) };
        let h = CohortHasher::new(&salt);
        for i in 0..2_000 {
            let b = h.place(format!("user-{i}").as_bytes()).bucket;
            if assign(b, threshold_ppm(low)) == Cohort::Canary {
                prop_assert_eq!(assign(b, threshold_ppm(high)), Cohort::Canary, "id {} at {} then {}", i, low, high);
            }
        }
    }
}

#[test]
fn five_then_twenty_five_percent_keeps_every_early_user() {
    let h = CohortHasher::new("");
    let ids: Vec<String> = (0..100_000).map(|i| format!("id-{i}")).collect();
    let at = |p: f64| -> Vec<bool> {
        ids.iter()
            .map(|id| assign(h.place(id.as_bytes()).bucket, threshold_ppm(p)) == Cohort::Canary)
            .collect()
    };
    let (five, twenty_five) = (at(5.0), at(25.0));
    assert!(five.iter().zip(&twenty_five).all(|(a, b)| !a || *b));
    for (p, split) in [(5.0, &five), (25.0, &twenty_five)] {
        let share = split.iter().filter(|c| **c).count() as f64 / ids.len() as f64 * 100.0;
        assert!((share - p).abs() < 0.3, "{p} % target, {share:.3} % seen");
    }
    let share = at(50.0).iter().filter(|c| **c).count() as f64 / 1000.0;
    assert!((share - 50.0).abs() < 0.3, "50 % target, {share:.3} % seen");
}
