//! The request path's parts, one criterion group each. Targets (issue 2, 3 and 5):
//! - identity + cohort assignment: under 1 µs;
//! - identity + assignment + endpoint choice: under 1 µs;
//! - recording one exchange into the window: under 100 ns;
//! - the judge's pass over one slice (window, T_i, three mixtures): under 100 µs;
//! - the Prometheus encode: under 1 ms;
//! - the direct path's codec: a request head written and a typical response head parsed,
//!   under 1 µs together;
//! - our HTTP/1 server's codec: a browser's request head parsed and a response head written
//!   from an upstream's raw head, under 1 µs together.
//!
//! Run: `cargo bench --bench hot_path`.

use std::hint::black_box;
use std::time::Duration;

use canary_proxy::cohort::{assign, Cohort, CohortHasher};
use canary_proxy::config::EndpointConfig;
use canary_proxy::http::fields::Fields;
use canary_proxy::judge::recorder::{Exchange, Recorder};
use canary_proxy::metrics::Metrics;
use canary_proxy::proxy::identity::{client_ip, identify, IdentitySource, IpText};
use canary_proxy::upstream::Pool;
use criterion::{criterion_group, criterion_main, Criterion};
use http::HeaderMap;

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", "shop.example".parse().unwrap());
    h.insert(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64)".parse().unwrap(),
    );
    h.insert("accept", "text/html,application/xhtml+xml".parse().unwrap());
    h.insert(
        "cookie",
        "theme=dark; session_id=8f14e45fceea167a5a36dedd4bea2543; lang=en"
            .parse()
            .unwrap(),
    );
    h
}

fn sources() -> Vec<IdentitySource> {
    ["header:x-user-id", "cookie:session_id", "ip"]
        .iter()
        .map(|s| IdentitySource::parse(s).unwrap())
        .collect()
}

fn pool(n: usize) -> Pool {
    let eps: Vec<EndpointConfig> = (0..n)
        .map(|i| EndpointConfig::parse(&format!("http://127.0.0.1:{}", 8000 + i)).unwrap())
        .collect();
    Pool::new(
        Cohort::Stable,
        "v1",
        &eps,
        Metrics::new().cohort("stable", "v1"),
    )
}

fn cohort(c: &mut Criterion) {
    let h = headers();
    let src = sources();
    let hasher = CohortHasher::new("spring");
    let peer = "203.0.113.7".parse().unwrap();
    let pool = pool(4);
    c.bench_function("identify+assign (cookie source)", |b| {
        b.iter(|| {
            let fields = Fields::Map(black_box(&h));
            let ip = IpText::new(client_ip(peer, fields, &[]));
            let (_, id) = identify(&src, fields, &ip).unwrap();
            assign(hasher.place(id).bucket, 50_000)
        })
    });
    // The same head as our HTTP/1 server hands it over: no header map.
    let head = b"GET / HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml\r\nCookie: theme=dark; session_id=8f14e45fceea167a5a36dedd4bea2543; lang=en\r\n\r\n";
    let spans = canary_proxy::http::fields::index(head).unwrap();
    c.bench_function("identify+assign (cookie source, head as it came)", |b| {
        b.iter(|| {
            let fields = Fields::AsCame {
                head: black_box(&head[..]),
                spans: &spans,
            };
            let ip = IpText::new(client_ip(peer, fields, &[]));
            let (_, id) = identify(&src, fields, &ip).unwrap();
            assign(hasher.place(id).bucket, 50_000)
        })
    });
    c.bench_function("identify+assign+pick endpoint", |b| {
        b.iter(|| {
            let fields = Fields::Map(black_box(&h));
            let ip = IpText::new(client_ip(peer, fields, &[]));
            let (_, id) = identify(&src, fields, &ip).unwrap();
            let cohort = assign(hasher.place(id).bucket, 50_000);
            (cohort, pool.pick(None))
        })
    });
}

fn record(c: &mut Criterion) {
    let r = Recorder::default();
    let ok = Exchange {
        cohort: Cohort::Canary,
        status: 200,
        latency: Duration::from_micros(1234),
        error: false,
        identity: Some(7),
    };
    c.bench_function("record one exchange", |b| {
        b.iter(|| r.record(black_box(&ok)))
    });
    let err = Exchange {
        error: true,
        status: 500,
        ..ok
    };
    c.bench_function("record one error (digest queued)", |b| {
        // Timed: the records only; the evaluator's drain every 1,000 is not.
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(1000);
                let t = std::time::Instant::now();
                for _ in 0..batch {
                    r.record(black_box(&err));
                }
                spent += t.elapsed();
                r.take_slice(Cohort::Canary);
                left -= batch;
            }
            spent
        })
    });
    c.bench_function("evaluator drains 1000 queued errors", |b| {
        b.iter(|| {
            for _ in 0..1000 {
                r.record(&err);
            }
            r.take_slice(Cohort::Canary).judged_errors
        })
    });
}

fn judge(c: &mut Criterion) {
    use canary_proxy::config::Config;
    use canary_proxy::judge::judgement::Judgement;
    let toml = "[stable]\nendpoints = [\"http://127.0.0.1:1\"]\n";
    let cfg =
        Config::from_toml_str(toml, "bench.toml", std::path::Path::new("."), &|_| None).unwrap();
    let r = Recorder::default();
    let mut j = Judgement::new(&cfg.rollback, std::time::SystemTime::now());
    let fill = |r: &Recorder| {
        for i in 0..50u64 {
            let cohort = if i % 10 == 0 {
                Cohort::Canary
            } else {
                Cohort::Stable
            };
            let latency = Duration::from_micros(500 + i * 37);
            r.record(&Exchange {
                cohort,
                status: 200,
                latency,
                error: i % 25 == 0,
                identity: Some(i),
            });
        }
    };
    c.bench_function("judge one slice (take, T_i, judge, window)", |b| {
        b.iter(|| {
            fill(&r);
            let (s, k) = (r.take_slice(Cohort::Stable), r.take_slice(Cohort::Canary));
            j.step(&cfg.rollback, &s, &k)
        })
    });
    let m = Metrics::new();
    for cohort in ["stable", "canary"] {
        let h = m.cohort(cohort, "v1");
        h.requests.inc_by(1000);
        h.latency.observe(0.01);
    }
    c.bench_function("prometheus encode", |b| b.iter(|| m.encode().len()));
}

criterion_group!(benches, cohort, record, judge, history, access_log, codec, h1);
criterion_main!(benches);

fn access_log(c: &mut Criterion) {
    use canary_proxy::config::AccessLog as Dest;
    use canary_proxy::proxy::access_log::{AccessLog, Entry};
    use canary_proxy::proxy::body::ProxyBody;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let m = Metrics::new();
    let log = AccessLog::start(
        &Dest::File("/dev/null".into()),
        m.access_log_dropped.clone(),
    )
    .unwrap()
    .unwrap();
    c.bench_function(
        "access log: build an entry and hand it to the writer",
        |b| {
            b.iter(|| {
                let entry = Entry {
                    time: canary_proxy::control::now_rfc3339(),
                    client: "203.0.113.7".into(),
                    method: "GET".into(),
                    path: "/checkout/cart".into(),
                    status: 200,
                    cohort: Some("canary"),
                    version: Some("v1.2.0".into()),
                    upstream: Some("http://10.0.0.5:8080".into()),
                    latency_ms: Some(1.25),
                    bytes_in: 0,
                    bytes_out: 512,
                    identity_source: Some("header"),
                    forced: false,
                };
                drop(log.wrap(ProxyBody::empty(), entry));
            })
        },
    );
    // Let the writer catch up, so the bench measured sends rather than drops.
    std::thread::sleep(Duration::from_millis(200));
    let dropped = m.access_log_dropped.get();
    eprintln!("access log bench: {dropped} lines dropped under back-pressure");
}

fn codec(c: &mut Criterion) {
    use canary_proxy::upstream::direct::codec::{parse_head, write_head};
    let h = headers();
    let method = http::Method::GET;
    c.bench_function("direct: write a request head", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            write_head(
                &mut out,
                &method,
                "/checkout/cart?step=2",
                black_box(&h),
                "10.0.0.5:8080",
                false,
            );
            out.len()
        })
    });
    let answer: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 512\r\nConnection: keep-alive\r\nCache-Control: no-store\r\nX-Request-Id: 5f2b9c1e-77aa-4c51-9a3e-0d6f1b2c3d4e\r\n\r\n";
    c.bench_function("direct: parse a response head (8 fields)", |b| {
        b.iter(|| {
            let mut buf = bytes::BytesMut::from(black_box(answer));
            parse_head(&mut buf, false, false)
                .unwrap()
                .unwrap()
                .headers
                .len()
        })
    });
}

fn h1(c: &mut Criterion) {
    use bytes::{Bytes, BytesMut};
    use canary_proxy::http::lines::RawHead;
    use canary_proxy::server::h1::request::{parse, recycle, Parsed};
    use canary_proxy::server::h1::response::{write_head, Framing};
    let head: &[u8] = b"GET /checkout/cart?step=2 HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml\r\nAccept-Language: en-GB,en;q=0.9\r\nCookie: session_id=abc123; theme=dark\r\nX-User-Id: 42\r\n\r\n";
    let mut spans = Vec::new();
    c.bench_function("h1: parse a request head (6 fields) into a map", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(head));
            match parse(&mut buf, 8192, &mut spans, true) {
                Parsed::Ours(h) => {
                    let n = h.req.headers().len();
                    recycle(h.req.into_parts().0.headers);
                    n
                }
                _ => unreachable!("a plain GET is ours"),
            }
        })
    });
    // As the proxy takes it: the fields stay where they came (`fields::Fields::AsCame`).
    c.bench_function("h1: parse a request head (6 fields) as it came", |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(head));
            match parse(&mut buf, 8192, &mut spans, false) {
                Parsed::Ours(h) => h.raw.len(),
                _ => unreachable!("a plain GET is ours"),
            }
        })
    });
    let raw = RawHead {
        upstream: Bytes::from_static(b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 26 Nov 2026 21:00:00 GMT\r\nContent-Type: application/json\r\nContent-Length: 512\r\nConnection: keep-alive\r\nCache-Control: no-store\r\nX-Request-Id: 5f2b9c1e-77aa-4c51-9a3e-0d6f1b2c3d4e\r\n\r\n"),
        ours: Some(Bytes::from_static(
            b"x-deployment-cohort: canary\r\nx-deployment-version: v2\r\n",
        )),
    };
    let map = HeaderMap::new();
    c.bench_function("h1: write a response head from a raw one (8 fields)", |b| {
        let mut out = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            write_head(
                &mut out,
                http::StatusCode::OK,
                &map,
                Some(black_box(&raw)),
                Framing::Length(512),
                false,
            );
            out.len()
        })
    });
}

/// The history's cost per slice, and its once-a-minute save when both rings are full (six hours
/// of one-second slices): what docs/PERFORMANCE.md quotes.
fn history(c: &mut Criterion) {
    use canary_proxy::control::history::{CohortPoint, History, Point};
    let point = |t: u64| {
        let k = CohortPoint {
            requests: 950,
            errors: 3,
            p99_ms: Some(12.5),
        };
        Point {
            t,
            seconds: 1.0,
            share: 5.0,
            stable: k,
            canary: k,
            error_rate: [-3.2, -1.1, 8.58, 9.68],
            relative_error: [0.4, 0.1, 7.89, 8.99],
            latency: [-7.0, -2.0, 8.58, 9.68],
        }
    };
    let h = History::empty();
    let start = 1_800_000_000_000u64;
    for i in 0..6 * 3600 {
        h.record(point(start + i * 1000));
    }
    let (fine, coarse) = h.len();
    let bytes = h.to_json().len();
    eprintln!(
        "history full: {fine} + {coarse} points, {} bytes each in memory, {bytes} bytes as JSON",
        std::mem::size_of::<Point>()
    );
    let mut t = start + 6 * 3600 * 1000;
    c.bench_function("history record one slice (rings full)", |b| {
        b.iter(|| {
            t += 1000;
            h.record(point(t))
        })
    });
    c.bench_function("history to JSON (rings full)", |b| {
        b.iter(|| h.to_json().len())
    });
}
