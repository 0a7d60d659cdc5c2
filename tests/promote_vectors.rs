//! The promotion gate against the shared test vectors (`tests/data/promote-vectors.json`, a copy
//! of `shared/promote-vectors.json`): the four sums, each test's verdict, the bake, the rollback
//! side's lean and the gate, on every slice, to 1e-6.

use canary_proxy::judge::promotion::{Gate, GateParams, PromoteInput, Test};
use canary_proxy::judge::sequential::{Judge, JudgeParams, SliceInput, Trigger};
use serde_json::Value;

fn limits(p: &Value) -> JudgeParams {
    let quantile = match p["latency_stat"].as_str().unwrap() {
        "p50" => 0.5,
        "p90" => 0.9,
        "p95" => 0.95,
        "p99" => 0.99,
        other => panic!("unknown stat {other}"),
    };
    JudgeParams {
        max_error_rate: p["max_error_rate"].as_f64().unwrap(),
        max_relative_error: p["max_relative_error"].as_f64().unwrap(),
        slow_fraction: 1.0 - quantile,
        false_rollback_budget: p["false_rollback_budget"].as_f64().unwrap(),
        min_requests: p["min_requests"].as_u64().unwrap(),
        window_slices: p["window_slices"].as_u64().unwrap() as usize,
    }
}

fn close(got: f64, want: &Value, what: &str) {
    let want = want.as_f64().unwrap_or_else(|| panic!("{what}: no number"));
    assert!((got - want).abs() < 1e-6, "{what}: {got} != {want}");
}

#[test]
fn every_case_of_the_shared_promotion_vectors() {
    let copy = include_str!("data/promote-vectors.json");
    let shared =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/promote-vectors.json");
    let text = match std::fs::read_to_string(&shared) {
        Ok(from_shared) => {
            assert_eq!(
                from_shared, copy,
                "tests/data/promote-vectors.json has drifted from shared/: copy it again"
            );
            from_shared
        }
        Err(_) => copy.to_string(),
    };
    let doc: Value = serde_json::from_str(&text).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8);
    let mut opened = 0;
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let p = &case["params"];
        let mut judge = Judge::new(limits(p));
        let mut gate = Gate::new(GateParams {
            limits: limits(p),
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
            let v: Vec<u64> = slice["in"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
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
