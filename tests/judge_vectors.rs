//! The judge against the shared test vectors (`tests/data/judge-vectors.json`, a copy of
//! `shared/judge-vectors.json`): evidence on every slice to 1e-6, firing up to the first firing.

use canary_proxy::judge::sequential::{Judge, Scope, SliceInput, Trigger};
mod vectors;

#[test]
fn every_case_of_the_shared_vectors() {
    let doc = vectors::load(
        "judge-vectors.json",
        include_str!("data/judge-vectors.json"),
    );
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 11);
    let mut checked = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let mut judge = Judge::new(vectors::limits(&case["params"]));
        for t in Trigger::ALL {
            for s in Scope::ALL {
                let want = case["thresholds"][t.as_str()][s.as_str()].as_f64().unwrap();
                let got = judge.thresholds()[t as usize][s as usize];
                assert!(
                    (got - want).abs() < 1e-6,
                    "{name}: threshold {t:?}/{s:?} {got} != {want}"
                );
            }
        }
        let mut fired_before = false;
        for (i, slice) in case["slices"].as_array().unwrap().iter().enumerate() {
            let v = vectors::inputs(slice);
            let verdict = judge.observe(SliceInput {
                nc: v[0],
                ns: v[1],
                ec: v[2],
                es: v[3],
                sc: v[4],
            });
            let e = &slice["expect"];
            assert_eq!(
                verdict.cum_nc,
                e["cum_nc"].as_u64().unwrap(),
                "{name} slice {i}"
            );
            assert_eq!(
                verdict.win_nc,
                e["win_nc"].as_u64().unwrap(),
                "{name} slice {i}"
            );
            for t in Trigger::ALL {
                for s in Scope::ALL {
                    let want = e["evidence"][t.as_str()][s.as_str()].as_f64().unwrap();
                    let got = verdict.evidence[t as usize][s as usize];
                    assert!(
                        (got - want).abs() < 1e-6,
                        "{name} slice {i}: evidence {t:?}/{s:?} {got} != {want}"
                    );
                    checked += 1;
                    if !fired_before {
                        let want = e["fires"][t.as_str()][s.as_str()].as_bool().unwrap();
                        assert_eq!(
                            verdict.fires[t as usize][s as usize], want,
                            "{name} slice {i}: fires {t:?}/{s:?}"
                        );
                    }
                }
            }
            if !fired_before {
                let want = e["fired"].as_str();
                assert_eq!(
                    verdict.fired.map(|t| t.as_str()),
                    want,
                    "{name} slice {i}: fired"
                );
            }
            fired_before |= verdict.fired.is_some();
        }
    }
    assert!(checked > 400, "only {checked} evidence values checked");
}
