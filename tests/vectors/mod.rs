//! What both vector tables share: the file read from `shared/` (or its copy in `tests/data`,
//! which must not drift from it), the judge's parameters as a case gives them, and one slice's
//! inputs.

use canary_proxy::judge::sequential::JudgeParams;
use serde_json::Value;

/// The shared file `name`, checked against its copy `copy` (the copy keeps a checkout without
/// `shared/` testable; where both exist they must be the same).
pub fn load(name: &str, copy: &str) -> Value {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(name);
    let text = match std::fs::read_to_string(&shared) {
        Ok(from_shared) => {
            assert_eq!(
                from_shared, copy,
                "tests/data/{name} has drifted from shared/: copy it again"
            );
            from_shared
        }
        Err(_) => copy.to_string(),
    };
    serde_json::from_str(&text).unwrap()
}

pub fn limits(p: &Value) -> JudgeParams {
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

/// A slice's `in` array as numbers.
pub fn inputs(slice: &Value) -> Vec<u64> {
    slice["in"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}
