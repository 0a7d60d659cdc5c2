//! `[rollout]` checked: the steps, the bake and its limit, the promotion risk and margin. A
//! share set beside it (in the file or by `CANARY_TRAFFIC_PERCENT`) is refused naming both, so
//! an operator never wonders which of the two is in force.

use super::validate::Ctx;
use super::*;

pub(super) fn validate(
    cx: &Ctx,
    r: &RawRollout,
    traffic_percent: Option<f64>,
) -> Result<RolloutConfig, ConfigError> {
    if traffic_percent.is_some() {
        return Err(cx.err(
            "canary.traffic_percent",
            "no share beside [rollout]: the rollout's current step is the canary's share (remove canary.traffic_percent or [rollout])",
        ));
    }
    if r.steps.is_empty() {
        return Err(cx.err(
            "rollout.steps",
            "at least one step, in percent, such as [1, 5, 25, 50, 100]",
        ));
    }
    let mut below = 0.0;
    for (i, step) in r.steps.iter().enumerate() {
        if !(step.is_finite() && *step > below && *step <= 100.0) {
            let want = if i == 0 {
                "a percent above 0 and at most 100".to_string()
            } else {
                format!("a percent above the step before ({below}) and at most 100: steps strictly increase")
            };
            return Err(cx.err(
                &format!("rollout.steps[{i}]"),
                format!("{want}, got {step}"),
            ));
        }
        below = *step;
    }
    let bake = cx.duration("rollout.bake", &r.bake)?;
    let max_bake = cx.duration("rollout.max_bake", &r.max_bake)?;
    if max_bake < bake {
        return Err(cx.err(
            "rollout.max_bake",
            format!("at least bake ({}), got {:?}", r.bake, r.max_bake),
        ));
    }
    if !(r.promote_risk > 0.0 && r.promote_risk <= 0.5) {
        return Err(cx.err(
            "rollout.promote_risk",
            format!(
                "a probability above 0 and at most 0.5, such as 0.01, got {}",
                r.promote_risk
            ),
        ));
    }
    if !(r.promote_margin.is_finite() && r.promote_margin > 1.0) {
        return Err(cx.err(
            "rollout.promote_margin",
            format!("a multiple above 1, such as 2.0, got {}", r.promote_margin),
        ));
    }
    Ok(RolloutConfig {
        steps: r.steps.clone(),
        bake,
        max_bake,
        promote_risk: r.promote_risk,
        promote_margin: r.promote_margin,
        auto: r.auto,
    })
}

#[cfg(test)]
mod tests {
    use super::super::Config;

    fn load(rollout: &str, env: &[(&str, &str)]) -> Result<Config, String> {
        // A line before any table belongs in [canary] (see the share test).
        let (canary, rollout) = rollout.split_once("|").unwrap_or(("", rollout));
        let toml = format!("[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n[canary]\nendpoints = [\"http://127.0.0.1:2\"]\n{canary}\n{rollout}");
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        Config::from_toml_str(&toml, "c.toml", std::path::Path::new("."), &lookup)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_the_first_step_as_the_share() {
        let c = load("[rollout]\n", &[]).unwrap();
        let r = c.rollout.unwrap();
        assert_eq!(r.steps, [1.0, 5.0, 25.0, 50.0, 100.0]);
        assert_eq!((r.bake.as_secs(), r.max_bake.as_secs()), (600, 7200));
        assert_eq!(c.canary.traffic_percent, 1.0);
        assert_eq!(load("", &[]).unwrap().canary.traffic_percent, 5.0);
    }

    #[test]
    fn bad_rollouts_name_the_key() {
        for (text, want) in [
            ("steps = []", "c.toml: rollout.steps: at least one step"),
            ("steps = [0, 5]", "rollout.steps[0]: a percent above 0"),
            (
                "steps = [5, 5]",
                "rollout.steps[1]: a percent above the step before (5)",
            ),
            ("steps = [5, 101]", "rollout.steps[1]"),
            (
                "bake = \"1h\"\nmax_bake = \"30m\"",
                "rollout.max_bake: at least bake (1h)",
            ),
            ("promote_risk = 0.6", "rollout.promote_risk"),
            ("promote_risk = 0", "rollout.promote_risk"),
            (
                "promote_margin = 1.0",
                "rollout.promote_margin: a multiple above 1",
            ),
            ("stepz = [1]", "stepz"),
        ] {
            let e = load(&format!("[rollout]\n{text}\n"), &[]).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn a_share_beside_the_rollout_names_both() {
        let toml = "[rollout]\n";
        let e = load(toml, &[("CANARY_TRAFFIC_PERCENT", "10")]).unwrap_err();
        assert!(
            e.contains("CANARY_TRAFFIC_PERCENT") && e.contains("[rollout]"),
            "{e}"
        );
        let e = load("traffic_percent = 5.0|[rollout]\n", &[]).unwrap_err();
        assert!(
            e.contains("c.toml: canary.traffic_percent") && e.contains("[rollout]"),
            "{e}"
        );
    }

    #[test]
    fn a_new_list_never_raises_the_share() {
        let r = load("[rollout]\nsteps = [2, 10, 50]\n", &[])
            .unwrap()
            .rollout
            .unwrap();
        assert_eq!(r.step_for(10.0), 1);
        assert_eq!(r.step_for(25.0), 1);
        assert_eq!(r.step_for(1.0), 0);
        assert_eq!(r.step_for(100.0), 2);
    }
}
