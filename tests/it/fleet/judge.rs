//! One judgement for the fleet: a bad canary seen through one replica, or spread thin over
//! three, rolls every replica back as one decision with one record.

use std::time::{Duration, Instant};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_seen_through_one_replica_rolls_back_all_three_with_one_record() {
    let redis = RedisServer::start();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream_with("canary", bad_canary()).await,
    );
    let fleet = replicas(&s, &k, &redis.url(), &["a", "b", "c"], "min_requests = 100").await;
    let (a, b, c) = (&fleet[0], &fleet[1], &fleet[2]);
    // Only replica A carries traffic.
    drive_until_rolled_back(a, "A").await;
    let seen_a = Instant::now();
    let lag = until_all(&[b, c], "rolled_back", seen_a, Duration::from_secs(1)).await;
    println!(
        "fleet: B and C rolled back {:?} / {:?} after A was seen rolled back",
        lag[0], lag[1]
    );
    let records: Vec<Value> = [a, b, c]
        .iter()
        .map(|p| async { status(p).await["last_rollback"].clone() })
        .collect::<futures_util::future::JoinAll<_>>()
        .await;
    assert_eq!(records[0]["trigger"], "error_rate", "{}", records[0]);
    assert!(records[0]["replica"].is_string(), "{}", records[0]);
    assert_eq!(records[0], records[1], "one record for the fleet");
    assert_eq!(records[0], records[2], "one record for the fleet");
    let mut counted = 0.0;
    for p in [a, b, c] {
        counted += metric(p, "canary_rollbacks_total{trigger=\"error_rate\"}").await;
        for (status, cohort) in drive(p, 50, 4, "after-", "/").await {
            assert_eq!((status, cohort.as_str()), (200, "stable"));
        }
    }
    assert_eq!(counted, 1.0, "one decision, counted once across the fleet");
    // The view is refreshed every slice (a slow state-file write can delay one).
    until("B sees three replicas", Duration::from_secs(3), || async {
        metric(b, "canary_fleet_replicas").await == 3.0
    })
    .await;
    assert_eq!(metric(b, "canary_fleet_redis_up").await, 1.0);
    for p in fleet {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_spread_over_three_replicas_reaches_min_requests_and_fires_as_one() {
    let redis = RedisServer::start();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream_with("canary", bad_canary()).await,
    );
    let fleet = replicas(&s, &k, &redis.url(), &["a", "b", "c"], "min_requests = 300").await;
    // About 150 canary requests each: no replica alone reaches 300; the fleet does.
    for (i, p) in fleet.iter().enumerate() {
        drive(p, 300, 4, &format!("p{i}-"), "/").await;
    }
    let refs: Vec<&TestProxy> = fleet.iter().collect();
    until_all(&refs, "rolled_back", Instant::now(), Duration::from_secs(3)).await;
    let mut local = Vec::new();
    for p in &fleet {
        local.push(metric(p, "canary_requests_total{cohort=\"canary\"").await);
    }
    assert!(
        local.iter().all(|n| *n < 300.0),
        "each replica alone stayed under min_requests: {local:?}"
    );
    let record = status(&fleet[0]).await["last_rollback"].clone();
    assert_eq!(record["trigger"], "error_rate", "{record}");
    let judged = record["figures"]["canary_requests_judged"]
        .as_u64()
        .unwrap();
    assert!(
        judged >= 300,
        "the judge summed the fleet: {judged} (replicas: {local:?})"
    );
    println!("fleet: canary requests per replica {local:?}, judged together {judged}");
    for p in fleet {
        p.stop().await;
    }
}
