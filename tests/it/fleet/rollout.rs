//! A rollout across a fleet: three replicas on one Redis move step together (one step per
//! canary version, the highest of the current run), a pause through one holds them all, and
//! one rollback stops every replica's ramp.

use std::time::{Duration, Instant};

use super::*;

const ROLLOUT: &str =
    "steps = [10, 50, 100]\nbake = \"500ms\"\nmax_bake = \"1m\"\npromote_risk = 0.1";

async fn fleet_with_rollout(s: &Upstream, k: &Upstream, redis: &str) -> Vec<TestProxy> {
    let mut out = Vec::new();
    for n in ["a", "b", "c"] {
        let mut cfg = Cfg::new(s, k);
        cfg.rollback =
            format!("{FAST}\nmin_requests = 20\nmax_error_rate = 20.0\nlatency_stat = \"p90\"");
        cfg.extra = format!("[fleet]\nredis = {redis:?}\nname = \"checkout\"\nreplica = {n:?}\n");
        cfg.rollout = Some(ROLLOUT.into());
        out.push(start_proxy(&cfg.toml()).await);
    }
    out
}

async fn steps(fleet: &[TestProxy]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for p in fleet {
        let st = status(p).await;
        out.push((
            st["rollout"]["step"].as_u64().unwrap_or(99),
            st["state"].as_str().unwrap_or("?").to_string(),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_move_step_together_pause_together_and_one_rollback_stops_them_all() {
    let redis = RedisServer::start();
    let (s, k) = upstreams().await;
    let fleet = fleet_with_rollout(&s, &k, &redis.url()).await;

    // Only replica A carries traffic: the gate reads the fleet's sums, and B and C follow the
    // step A's gate opens, within a slice or so.
    let mut disagreeing: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    let started = Instant::now();
    let mut round = 0;
    loop {
        round += 1;
        drive(&fleet[0], 40, 4, &format!("t{round}-"), "/").await;
        let now = steps(&fleet).await;
        let same = now.iter().all(|(s, _)| *s == now[0].0);
        match (same, disagreeing) {
            (false, None) => disagreeing = Some(Instant::now()),
            (true, Some(since)) => {
                longest = longest.max(since.elapsed());
                disagreeing = None;
            }
            _ => {}
        }
        if now.iter().all(|(s, _)| *s == 1) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never at step 1 together: {now:?}"
        );
    }
    println!("fleet rollout: replicas disagreed on the step for at most {longest:?}");
    assert!(
        longest < Duration::from_secs(2),
        "disagreed for {longest:?}"
    );
    for p in &fleet {
        let st = status(p).await;
        assert_eq!(st["traffic_percent"], 50.0, "{st:#}");
    }
    // Redis holds the step too (a replica offers it every slice; a slow call may miss one).
    until("Redis holds step 1", Duration::from_secs(5), || async {
        let key: Option<String> = redis.query(&[
            "HGET",
            "canary-proxy:checkout:rollout:v1.2.0-canary",
            "step",
        ]);
        key.as_deref() == Some("1")
    })
    .await;

    // A pause through B holds A and C too; continue through C clears it everywhere.
    let got = admin_post(
        fleet[1].admin,
        "/canary/pause",
        None,
        r#"{"reason": "db migration"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    until("every replica paused", Duration::from_secs(3), || async {
        steps(&fleet).await.iter().all(|(_, st)| st == "holding")
    })
    .await;
    let why = status(&fleet[0]).await["rollout"]["hold_reason"].clone();
    assert!(why.as_str().unwrap().contains("db migration"), "{why}");
    let got = admin_post(fleet[2].admin, "/canary/continue", None, "").await;
    assert_eq!(got.status, 200, "{}", got.body);
    until(
        "every replica continued",
        Duration::from_secs(3),
        || async { steps(&fleet).await.iter().all(|(_, st)| st != "holding") },
    )
    .await;

    // One rollback, through C, stops the ramp on all three.
    let got = admin_post(
        fleet[2].admin,
        "/canary/rollback",
        None,
        r#"{"reason": "bad"}"#,
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let refs: Vec<&TestProxy> = fleet.iter().collect();
    until_all(&refs, "rolled_back", Instant::now(), Duration::from_secs(2)).await;
    for (status, cohort) in drive(&fleet[0], 40, 4, "after-", "/").await {
        assert_eq!((status, cohort.as_str()), (200, "stable"));
    }
    // A resume anywhere starts every replica again at the first step.
    post_ok(fleet[0].admin, "/canary/resume").await;
    until(
        "every replica back at step 0",
        Duration::from_secs(3),
        || async {
            steps(&fleet)
                .await
                .iter()
                .all(|(s, st)| *s == 0 && st == "ramping")
        },
    )
    .await;
    for p in fleet {
        p.stop().await;
    }
}
