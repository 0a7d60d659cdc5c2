//! The fleet, with a real `redis-server`: several replicas act as one — one latch (rollback,
//! resume, one record when two decide at once), one judgement over everyone's traffic — and
//! losing Redis never un-latches and never stops serving.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

const FAST: &str = "evaluate_every = \"100ms\"\nwindow = \"30s\"";

fn fleet_toml(s: &Upstream, k: &Upstream, redis: &str, replica: &str, rollback: &str) -> String {
    let mut cfg = Cfg::new(s, k);
    cfg.rollback = format!("{FAST}\n{rollback}");
    cfg.extra = format!("[fleet]\nredis = {redis:?}\nname = \"checkout\"\nreplica = {replica:?}\n");
    cfg.toml()
}

async fn replicas(
    s: &Upstream,
    k: &Upstream,
    redis: &str,
    names: &[&str],
    rollback: &str,
) -> Vec<TestProxy> {
    let mut out = Vec::new();
    for n in names {
        out.push(start_proxy(&fleet_toml(s, k, redis, n, rollback)).await);
    }
    out
}

async fn status(p: &TestProxy) -> Value {
    admin_json(p, "/canary/status").await
}

async fn metric(p: &TestProxy, line_start: &str) -> f64 {
    let m = get(&client(), &p.admin_url("/metrics"), &[]).await.body;
    m.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{m}"))
}

/// Polls every replica until each is in `state`; returns when each got there (from `since`).
async fn until_all(
    ps: &[&TestProxy],
    state: &str,
    since: Instant,
    limit: Duration,
) -> Vec<Duration> {
    let mut when = vec![None; ps.len()];
    while when.iter().any(Option::is_none) {
        assert!(
            since.elapsed() < limit,
            "not every replica reached {state} within {limit:?}: {when:?}"
        );
        for (i, p) in ps.iter().enumerate() {
            if when[i].is_none() && status(p).await["state"] == state {
                when[i] = Some(since.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    when.into_iter().map(Option::unwrap).collect()
}

async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) {
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const LATCH_KEY: &str = "canary-proxy:checkout:latch:v1.2.0-canary";

/// Whether Redis holds a rolled-back latch for the test canary.
fn latched_in(redis: &RedisServer) -> bool {
    let v: Option<String> = redis.query(&["HGET", LATCH_KEY, "rolled_back"]);
    v.as_deref() == Some("1")
}

/// Sends bad-canary traffic through `p` alone until it rolls back; every answer is 200 or the
/// canary's 500 (never a proxy failure).
async fn drive_until_rolled_back(p: &TestProxy, what: &str) {
    let mut rounds = 0;
    while status(p).await["state"] != "rolled_back" {
        rounds += 1;
        assert!(rounds < 40, "{what}: never rolled back");
        for (code, _) in drive(p, 100, 4, &format!("r{rounds}-"), "/").await {
            assert!(code == 200 || code == 500, "{what}: answered {code}");
        }
    }
}

fn bad_canary() -> Behavior {
    Behavior {
        fail_every: 2,
        ..Default::default()
    }
}

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
async fn rollback_and_resume_anywhere_reach_every_replica_and_a_race_leaves_one_record() {
    let redis = RedisServer::start();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream("canary").await,
    );
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
async fn redis_lost_and_restarted_empty_never_unlatches_and_a_new_replica_starts_latched() {
    let mut redis = RedisServer::start();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream("canary").await,
    );
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
    // Reconnected for good: no churn of connections once back.
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
async fn the_fleet_view_warns_on_disagreement_and_forgets_a_stopped_replica() {
    let redis = RedisServer::start();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream("canary").await,
    );
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
    let human = canary_proxy::client::human_status(&st);
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
async fn rediss_with_a_private_ca_and_a_password_from_the_environment() {
    let pki = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::tls::test_pki();
    for (name, text) in [("ca.pem", &ca), ("server.pem", &cert), ("server.key", &key)] {
        std::fs::write(pki.path().join(name), text).unwrap();
    }
    let redis = RedisServer::start_tls(pki.path(), "s3cret");
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream("canary").await,
    );
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
async fn a_new_canary_version_starts_a_fresh_latch_replica_by_replica() {
    let redis = RedisServer::start();
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream("canary").await,
    );
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
    let (s, k) = (
        spawn_upstream("stable").await,
        spawn_upstream("canary").await,
    );
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
