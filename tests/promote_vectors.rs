//! The promotion gate against the shared test vectors (`tests/data/promote-vectors.json`, a copy
//! of `shared/promote-vectors.json`): the four sums, each test's verdict, the bake, the rollback
//! side's lean and the gate, on every slice, to 1e-6.

use canary_proxy::judge::promotion::{Gate, GateParams, PromoteInput, Test};
use canary_proxy::judge::sequential::{Judge, SliceInput, Trigger};
use serde_json::Value;

mod vectors;

fn close(got: f64, want: &Value, what: &str) {
    let want = want.as_f64().unwrap_or_else(|| panic!("{what}: no number"));
    assert!((got - want).abs() < 1e-6, "{what}: {got} != {want}");
}

#[test]
fn every_case_of_the_shared_promotion_vectors() {
    let doc = vectors::load(
        "promote-vectors.json",
        include_str!("data/promote-vectors.json"),
    );
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    let mut opened = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let p = &case["params"];
        let mut judge = Judge::new(vectors::limits(p));
        let mut gate = Gate::new(GateParams {
            limits: vectors::limits(p),
            promote_risk: p["promote_risk"].as_f64().unwrap(),
            promote_margin: p["promote_margin"].as_f64().unwrap(),
        });
        for t in Test::ALL {
            close(
                gate.bar(t),
                &case["bars"][t.as_str()],
                &format!("{name} bar {t:?}"),
            );
        }
        let bake = p["bake_slices"].as_u64().unwrap() as usize;
        for (i, slice) in case["slices"].as_array().unwrap().iter().enumerate() {
            let v = vectors::inputs(slice);
            let verdict = judge.observe(SliceInput {
                nc: v[0],
                ns: v[1],
                ec: v[2],
                es: v[3],
                sc: v[4],
            });
            let m_rel = verdict.evidence[Trigger::RelativeError as usize][0];
            let view = gate.observe(
                PromoteInput {
                    nc: v[0],
                    ns: v[1],
                    ec_raw: v[5],
                    es_raw: v[6],
                    sc: v[4],
                },
                i + 1 >= bake,
                verdict.fired.is_some(),
                m_rel,
            );
            let e = &slice["expect"];
            let at = format!("{name} slice {i}");
            assert_eq!(view.step_nc, e["step_nc"].as_u64().unwrap(), "{at}");
            for t in Test::ALL {
                close(
                    view.tests[t as usize].evidence,
                    &e["P"][t.as_str()],
                    &format!("{at} P {t:?}"),
                );
            }
            for t in [Test::ErrorRate, Test::Latency, Test::RelativeError] {
                assert_eq!(
                    view.tests[t as usize].passes,
                    e["passes"][t.as_str()].as_bool().unwrap(),
                    "{at} passes {t:?}"
                );
            }
            assert_eq!(view.baked, e["baked"].as_bool().unwrap(), "{at} baked");
            assert_eq!(view.fired, e["fired"].as_bool().unwrap(), "{at} fired");
            close(m_rel, &e["m_rel_cumulative"], &format!("{at} M rel"));
            assert_eq!(view.open, e["opens"].as_bool().unwrap(), "{at} opens");
            opened += view.open as usize;
        }
    }
    assert!(opened > 0, "some case opens the gate");
}
