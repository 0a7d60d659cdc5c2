//! Telling in a fleet: a decision is sent once, by the replica that made it (the others keep
//! the event, naming that replica); losing Redis is told by each replica that is left alone.

use std::time::{Duration, Instant};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rollback_is_sent_once_and_a_replica_left_alone_says_so() {
    let mut redis = RedisServer::start();
    let hook = spawn_receiver(&[], false).await;
    let (s, k) = upstreams().await;
    let target = notify_target("ops", &hook.url(), "");
    let mut fleet = Vec::new();
    for n in ["a", "b"] {
        fleet.push(start_proxy(&(fleet_toml(&s, &k, &redis.url(), n, "") + &target)).await);
    }
    let (a, b) = (&fleet[0], &fleet[1]);
    let got = admin_post(a.admin, "/canary/rollback", None, r#"{"reason": "from a"}"#).await;
    assert_eq!(got.status, 200, "{}", got.body);
    until_all(&[b], "rolled_back", Instant::now(), Duration::from_secs(1)).await;
    let sent = hook.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hook.deliveries().len(),
        1,
        "one message for one decision: {sent:?}"
    );
    assert_eq!(sent[0].json()["reason"], "from a");
    let kept = get(&client(), &b.admin_url("/canary/events"), &[]).await;
    let kept: Value = serde_json::from_str(&kept.body).unwrap();
    let e = &kept["events"][0];
    assert_eq!(
        (e["event"].as_str(), e["caller"].as_str()),
        (Some("rolled_back"), Some("replica a")),
        "{kept}"
    );
    assert_eq!(e["reason"], "from a");

    redis.kill();
    let alone = hook.wait_for(3).await;
    let mut told: Vec<String> = alone[1..]
        .iter()
        .map(|d| {
            assert_eq!(d.header("x-canary-event"), "fleet_alone");
            d.json()["reason"]
                .as_str()
                .unwrap()
                .split(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    told.sort();
    assert_eq!(told, ["replica a", "replica b"]);
}
