//! Redis failing, absent, late or behind TLS: replicas serve, judge alone, never un-latch,
//! and catch up when it is back.

use std::time::{Duration, Instant};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_and_restarted_empty_never_unlatches_and_a_new_replica_starts_latched() {
    let mut redis = RedisServer::start();
    let (s, k) = upstreams().await;
    let fleet = replicas(&s, &k, &redis.url(), &["a", "b"], "").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    post_ok(a.admin, "/canary/rollback").await;
    until_all(&[b], "rolled_back", Instant::now(), Duration::from_secs(1)).await;

    redis.kill();
    until("both see Redis down", Duration::from_secs(5), || async {
        metric(a, "canary_fleet_redis_up").await == 0.0
            && metric(b, "canary_fleet_redis_up").await == 0.0
    })
    .await;
    for p in [a, b] {
        let st = status(p).await;
        assert_eq!(st["state"], "rolled_back", "{st}");
        assert_eq!(st["fleet"]["redis"], "down", "{st}");
        assert!(
            st["fleet"]["warning"].as_str().unwrap().contains("alone"),
            "{st}"
        );
        for (status, cohort) in drive(p, 30, 3, "down-", "/").await {
            assert_eq!((status, cohort.as_str()), (200, "stable"));
        }
    }

    redis.restart();
    until(
        "the latch is written back",
        Duration::from_secs(10),
        || async { latched_in(&redis) },
    )
    .await;
    for p in [a, b] {
        assert_eq!(status(p).await["state"], "rolled_back");
    }
    // Reconnected for good: no churn of connections once both are back (one may still be
    // in its backoff when the other has written the latch).
    until("both see Redis up", Duration::from_secs(10), || async {
        metric(a, "canary_fleet_redis_up").await == 1.0
            && metric(b, "canary_fleet_redis_up").await == 1.0
    })
    .await;
    let connections = || {
        let info: String = redis.query(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap()
    };
    let before = connections();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let churn = connections() - before;
    assert!(
        churn <= 2,
        "{churn} new Redis connections in a quiet second"
    );
    // A replica with no state file of its own reads the fleet's latch before it serves.
    let fresh = start_proxy(&fleet_toml(&s, &k, &redis.url(), "c", "")).await;
    let st = status(&fresh).await;
    assert_eq!(st["state"], "rolled_back", "{st}");
    assert_eq!(st["last_rollback"]["replica"], "a", "{st}");
    for (status, cohort) in drive(&fresh, 30, 3, "fresh-", "/").await {
        assert_eq!((status, cohort.as_str()), (200, "stable"));
    }
    fresh.stop().await;
    for p in fleet {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_unreachable_from_the_start_serves_and_judges_alone_then_joins() {
    let port = free_port();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream_with("canary", bad_canary()).await,
    );
    let url = format!("redis://127.0.0.1:{port}/0");
    let alone = start_proxy(&fleet_toml(&s, &k, &url, "solo", "min_requests = 100")).await;
    let st = status(&alone).await;
    assert_eq!(st["fleet"]["redis"], "down", "{st}");
    assert_eq!(metric(&alone, "canary_fleet_redis_up").await, 0.0);
    assert_eq!(metric(&alone, "canary_fleet_replicas").await, 1.0);
    drive_until_rolled_back(&alone, "judging alone while Redis is away").await;
    // Redis comes up: the replica connects (back-off at most 5 s) and writes its latch there.
    let redis = RedisServer::start_on(port);
    until(
        "the replica joins and writes its latch",
        Duration::from_secs(10),
        || async { latched_in(&redis) },
    )
    .await;
    assert_eq!(metric(&alone, "canary_fleet_redis_up").await, 1.0);
    assert_eq!(status(&alone).await["fleet"]["redis"], "up");
    alone.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_judged_while_redis_was_away_reaches_the_fleet_when_it_returns() {
    let mut redis = RedisServer::start();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream_with("canary", bad_canary()).await,
    );
    let fleet = replicas(&s, &k, &redis.url(), &["a", "b"], "min_requests = 100").await;
    let (a, b) = (&fleet[0], &fleet[1]);
    redis.kill();
    until("A sees Redis down", Duration::from_secs(5), || async {
        metric(a, "canary_fleet_redis_up").await == 0.0
    })
    .await;
    // A judges its own traffic alone and rolls back; B cannot hear of it yet.
    drive_until_rolled_back(a, "A judging alone while Redis was away").await;
    assert_eq!(status(b).await["state"], "active");
    // Redis returns empty: A writes its latch back, and B follows within the back-off.
    redis.restart();
    until(
        "B follows once Redis is back",
        Duration::from_secs(10),
        || async { status(b).await["state"] == "rolled_back" },
    )
    .await;
    assert_eq!(status(b).await["last_rollback"]["replica"], "a");
    for p in fleet {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failing_under_load_costs_no_request() {
    let mut redis = RedisServer::start();
    let (s, k) = upstreams().await;
    let fleet = replicas(&s, &k, &redis.url(), &["a", "b", "c"], "").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for (i, p) in fleet.iter().enumerate() {
        let (url, stop) = (p.url("/"), stop.clone());
        load.push(tokio::spawn(async move {
            let (c, mut answered, mut n) = (client(), Vec::new(), 0u64);
            // Bounded: stops when told, or after 20,000 requests at most.
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 20_000 {
                n += 1;
                let got = get(&c, &url, &[("x-user-id", &format!("r{i}-{n}"))]).await;
                answered.push(got.status);
            }
            answered
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    redis.restart();
    until(
        "every replica is back on Redis",
        Duration::from_secs(10),
        || async {
            let mut up = true;
            for p in &fleet {
                up &= metric(p, "canary_fleet_redis_up").await == 1.0;
            }
            up
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        let answered = t.await.unwrap();
        assert!(
            answered.iter().all(|s| *s == 200),
            "a request failed while Redis failed"
        );
        total += answered.len();
    }
    assert!(total > 300, "the load ran: {total} requests");
    println!("fleet: {total} requests through a Redis kill and restart, all 200");
    for p in fleet {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_from_the_environment() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::tls::test_pki();
    for (name, text) in [("ca.pem", &ca), ("server.pem", &cert), ("server.key", &key)] {
        std::fs::write(pki.path().join(name), text).unwrap();
    }
    let redis = RedisServer::start_tls(pki.path(), "s3cret");
    let (s, k) = upstreams().await;
    let url = format!("rediss://127.0.0.1:{}/0", redis.port);
    let toml = |replica: &str| {
        let ca_file = pki.path().join("ca.pem").display().to_string();
        format!(
            "{}redis_ca_file = {ca_file:?}\n",
            fleet_toml(&s, &k, &url, replica, "")
        )
    };
    let env = [("CANARY_FLEET_REDIS_PASSWORD", "s3cret")];
    let a = start_proxy_env(&toml("a"), tempfile::tempdir().unwrap(), &env).await;
    let b = start_proxy_env(&toml("b"), tempfile::tempdir().unwrap(), &env).await;
    let wrong = start_proxy_env(
        &toml("w"),
        tempfile::tempdir().unwrap(),
        &[("CANARY_FLEET_REDIS_PASSWORD", "nope")],
    )
    .await;
    assert_eq!(metric(&a, "canary_fleet_redis_up").await, 1.0);
    post_ok(a.admin, "/canary/rollback").await;
    until_all(&[&b], "rolled_back", Instant::now(), Duration::from_secs(1)).await;
    // A wrong password is Redis out of reach: it serves alone, and says so.
    assert_eq!(metric(&wrong, "canary_fleet_redis_up").await, 0.0);
    assert_eq!(status(&wrong).await["state"], "active");
    for p in [a, b, wrong] {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_says_in_its_log_that_it_is_alone_and_says_when_it_joins() {
    let port = free_port();
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solo.toml");
    let url = format!("redis://:s3cret@127.0.0.1:{port}/0");
    let toml = fleet_toml(&s, &k, &url, "solo", "")
        .replace("[canary]", "[state]\npath = \"solo.json\"\n\n[canary]");
    std::fs::write(&path, toml).unwrap();
    let solo = spawn_binary(&path, &[]);
    let got = get(&client(), &solo.url("/"), &[("x-user-id", "u1")]).await;
    assert_eq!(got.status, 200, "served without Redis");
    let logs = solo.logs();
    assert!(
        logs.contains("WARN") && logs.contains("Redis is out of reach"),
        "{logs}"
    );
    assert!(
        !logs.contains("s3cret"),
        "the password stays out of the log: {logs}"
    );
    let args = ["--port", &port.to_string(), "--requirepass", "s3cret"].map(String::from);
    let _redis = RedisServer::start_with(port, args.to_vec());
    until(
        "the binary logs that it joined",
        Duration::from_secs(10),
        || async { solo.logs().contains("fleet: connected") },
    )
    .await;
}
