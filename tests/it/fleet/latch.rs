//! One latch for the fleet: rollback and resume anywhere reach everyone, a race leaves one
//! record, a new canary version starts afresh, and the view says when replicas disagree.

use std::time::{Duration, Instant};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_and_resume_anywhere_reach_every_replica_and_a_race_leaves_one_record() {
    let redis = RedisServer::start();
    let (s, k) = upstreams().await;
    let fleet = replicas(&s, &k, &redis.url(), &["a", "b", "c"], "").await;
    let (a, b, c) = (&fleet[0], &fleet[1], &fleet[2]);

    let sent = Instant::now();
    post_ok(a.admin, "/canary/rollback").await;
    let lag = until_all(&[b, c], "rolled_back", sent, Duration::from_secs(1)).await;
    println!(
        "fleet: a manual rollback on A reached B in {:?}, C in {:?}",
        lag[0], lag[1]
    );
    let observed = metric(b, "canary_fleet_latch_propagation_seconds_count").await;
    assert_eq!(observed, 1.0, "B swapped on A's message");
    assert_eq!(status(b).await["last_rollback"]["replica"], "a");

    let sent = Instant::now();
    post_ok(b.admin, "/canary/resume").await;
    let lag = until_all(&[a, c], "active", sent, Duration::from_secs(1)).await;
    println!(
        "fleet: a resume on B reached A in {:?}, C in {:?}",
        lag[0], lag[1]
    );

    // Two replicas decide at once: the fleet keeps one record. The later one answers 200 with
    // the winner's record, or 409 naming the winner if the winner's message came first.
    let (ra, rb) = tokio::join!(
        admin_post(a.admin, "/canary/rollback", None, r#"{"reason": "from a"}"#),
        admin_post(b.admin, "/canary/rollback", None, r#"{"reason": "from b"}"#),
    );
    for got in [&ra, &rb] {
        assert!(
            got.status == 200 || (got.status == 409 && got.body.contains("by replica")),
            "{}: {}",
            got.status,
            got.body
        );
    }
    assert!(
        ra.status == 200 || rb.status == 200,
        "{} / {}",
        ra.body,
        rb.body
    );
    until_all(
        &[a, b, c],
        "rolled_back",
        Instant::now(),
        Duration::from_secs(1),
    )
    .await;
    let mut records = Vec::new();
    let mut counted = 0.0;
    for p in [a, b, c] {
        records.push(status(p).await["last_rollback"].clone());
        counted += metric(p, "canary_rollbacks_total{trigger=\"manual\"}").await;
    }
    assert!(
        records[0]["reason"] == "from a" || records[0]["reason"] == "from b",
        "{}",
        records[0]
    );
    assert_eq!(records[0], records[1]);
    assert_eq!(records[0], records[2]);
    assert_eq!(counted, 2.0, "the first rollback and the race's winner");
    let latch: Vec<String> = redis.query(&["HMGET", LATCH_KEY, "generation", "rolled_back"]);
    assert_eq!(latch, ["1", "1"], "one resume, then latched");
    let ttl: i64 = redis.query(&["PTTL", LATCH_KEY]);
    assert!(
        ttl > 29 * 24 * 3_600_000,
        "a latch in use is kept (PTTL {ttl})"
    );
    for p in fleet {
        p.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_warns_on_disagreement_and_forgets_a_stopped_replica() {
    let redis = RedisServer::start();
    let (s, k) = upstreams().await;
    let a = start_proxy(&fleet_toml(&s, &k, &redis.url(), "a", "")).await;
    let b_toml = fleet_toml(&s, &k, &redis.url(), "b", "")
        .replace("traffic_percent = 50.0", "traffic_percent = 20.0");
    let b = start_proxy(&b_toml).await;
    // C is the real binary, to be killed with SIGKILL: no goodbye, its card must expire.
    let dir = tempfile::tempdir().unwrap();
    let c_path = dir.path().join("c.toml");
    let c_toml = fleet_toml(&s, &k, &redis.url(), "c", "")
        .replace("[canary]", "[state]\npath = \"c-state.json\"\n\n[canary]");
    std::fs::write(&c_path, c_toml).unwrap();
    let c = spawn_binary(&c_path, &[]);
    until("A sees three replicas", Duration::from_secs(3), || async {
        metric(&a, "canary_fleet_replicas").await == 3.0
    })
    .await;
    c.signal("KILL");
    // C's card expires (three slices, at least 3 s): A goes on and forgets it.
    let killed = Instant::now();
    until("A forgets the killed C", Duration::from_secs(8), || async {
        metric(&a, "canary_fleet_replicas").await == 2.0
    })
    .await;
    println!(
        "fleet: a SIGKILLed replica left the view after {:?}",
        killed.elapsed()
    );
    drop(c);
    let st = status(&a).await;
    assert_eq!(st["fleet"]["agree"], false, "{st}");
    let w = st["fleet"]["warning"].as_str().unwrap();
    assert!(w.contains("traffic_percent differs (a=50, b=20)"), "{w}");
    let names: Vec<&str> = st["fleet"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["replica"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let human = canary_proxy::admin::client::human_status(&st, None);
    assert!(
        human.contains("fleet:    checkout as a, Redis up; 2 replicas")
            && human.contains("WARNING: replicas disagree"),
        "{human}"
    );
    // B stops cleanly and takes its card away: gone by A's next slice.
    b.stop().await;
    until("A forgets B", Duration::from_millis(500), || async {
        metric(&a, "canary_fleet_replicas").await == 1.0
    })
    .await;
    let st = status(&a).await;
    assert_eq!(st["fleet"]["agree"], true, "{st}");
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_canary_version_starts_a_fresh_latch_replica_by_replica() {
    let redis = RedisServer::start();
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, version: &str| {
        let toml = fleet_toml(&s, &k, &redis.url(), name, "")
            .replace("v1.2.0-canary", version)
            .replace(
                "[canary]",
                &format!("[state]\npath = \"{name}.json\"\n\n[canary]"),
            );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        path
    };
    let st = |b: &Binary| {
        let url = format!("http://{}/canary/status", b.admin);
        async move { serde_json::from_str::<Value>(&get(&client(), &url, &[]).await.body).unwrap() }
    };
    let a = spawn_binary(&write("a", "v2"), &[]);
    let b = spawn_binary(&write("b", "v2"), &[]);
    post_ok(a.admin, "/canary/rollback").await;
    until("B follows A's rollback", Duration::from_secs(1), || async {
        st(&b).await["state"] == "rolled_back"
    })
    .await;

    // A ships v3: fresh for A; B, still on v2, stays rolled back and the view says they differ.
    write("a", "v3");
    a.signal("HUP");
    until("A runs v3", Duration::from_secs(5), || async {
        st(&a).await["state"] == "active"
    })
    .await;
    until("B warns", Duration::from_secs(3), || async {
        let w = st(&b).await["fleet"]["warning"]
            .as_str()
            .unwrap_or("")
            .to_string();
        w.contains("canary_version differs (a=v3, b=v2)")
    })
    .await;
    assert_eq!(st(&b).await["state"], "rolled_back");
    // A rolls v3 back; B, reloading onto v3 afterwards, reads v3's latch before going on.
    post_ok(a.admin, "/canary/rollback").await;
    write("b", "v3");
    b.signal("HUP");
    until(
        "B on v3 reads v3's latch",
        Duration::from_secs(5),
        || async {
            let s = st(&b).await;
            s["canary_version"] == "v3" && s["state"] == "rolled_back"
        },
    )
    .await;
    let record = st(&b).await["last_rollback"].clone();
    assert_eq!(record["canary_version"], "v3", "{record}");
    assert_eq!(record["replica"], "a", "{record}");
}
