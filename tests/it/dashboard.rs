//! The live dashboard, end to end in headless Chromium (driven over WebDriver by chromedriver):
//! the page loads from the admin port, its charts move under traffic, and its rollback button
//! rolls the canary back.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use crate::support::*;

struct Driver {
    child: Child,
    url: String,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Full<Bytes>,
    >,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(std::path::Path::new(program).exists(), "{program} is needed (Debian packages chromium and chromium-driver; scripts/test.sh installs them)");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let d = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http(),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while d.call("GET", "/status", None).await.is_err() {
            assert!(Instant::now() < until, "chromedriver did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        d
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if v["value"]["error"].is_string() {
            return Err(v["value"].to_string());
        }
        Ok(v["value"].clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_charts_and_its_button_rolls_back() {
    let (s, k) = upstreams().await;
    let mut cfg = Cfg::new(&s, &k);
    cfg.token = "tok".into();
    cfg.rollback = "evaluate_every = \"250ms\"".into();
    let proxy = Arc::new(cfg.start().await);
    // Traffic for the charts, bounded.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (proxy, stop) = (proxy.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client();
            let mut i = 0;
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                get(&c, &proxy.url("/"), &[("x-user-id", &format!("u{i}"))]).await;
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let driver = Driver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display())]
    }}}});
    let session = driver
        .call("POST", "/session", Some(caps))
        .await
        .expect("a browser session");
    let sid = session["sessionId"].as_str().unwrap().to_string();
    let at = |p: &str| format!("/session/{sid}{p}");
    driver
        .call(
            "POST",
            &at("/url"),
            Some(json!({"url": proxy.admin_url("/")})),
        )
        .await
        .unwrap();
    let script = |js: &str| json!({"script": js, "args": []});

    // The charts move: samples accumulate, with canary and stable traffic in them.
    let until = Instant::now() + Duration::from_secs(20);
    let moving = loop {
        let v = driver.call("POST", &at("/execute/sync"), Some(script("return { n: window.__samples.length, last: window.__samples[window.__samples.length - 1] || null, state: document.getElementById('state').dataset.state };"))).await.unwrap();
        if v["n"].as_u64().unwrap_or(0) >= 3
            && v["last"]["canary"]["rate"].as_f64().unwrap_or(0.0) > 0.0
            && v["last"]["stable"]["rate"].as_f64().unwrap_or(0.0) > 0.0
        {
            break v;
        }
        assert!(Instant::now() < until, "the charts did not move: {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(moving["state"], "active");

    let shot = driver.call("GET", &at("/screenshot"), None).await.unwrap();
    let png = base64_decode(shot.as_str().unwrap());
    assert!(png.starts_with(b"\x89PNG"), "a screenshot");
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/target"));
    let _ = std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard.png"),
        &png,
    );

    // The button asks for a reason and the token, then rolls back.
    driver.call("POST", &at("/execute/sync"), Some(script("window.prompt = (q) => q.startsWith('Admin') ? 'tok' : 'rolled back from the browser'; return true;"))).await.unwrap();
    let button = driver
        .call(
            "POST",
            &at("/element"),
            Some(json!({"using": "css selector", "value": "[data-testid=rollback]"})),
        )
        .await
        .unwrap();
    let id = button
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    driver
        .call(
            "POST",
            &at(&format!("/element/{id}/click")),
            Some(json!({})),
        )
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let v = driver
            .call(
                "POST",
                &at("/execute/sync"),
                Some(script(
                    "return document.getElementById('state').dataset.state;",
                )),
            )
            .await
            .unwrap();
        if v == "rolled_back" {
            break;
        }
        assert!(
            Instant::now() < until,
            "the page never showed the rollback: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = admin_json(&proxy, "/canary/status").await;
    assert_eq!(status["state"], "rolled_back");
    assert_eq!(
        status["last_rollback"]["reason"],
        "rolled back from the browser"
    );
    let _ = driver
        .call("DELETE", &format!("/session/{sid}"), None)
        .await;
    stop.store(true, Ordering::Relaxed);
    let _ = traffic.await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    let table = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for v in text.bytes().filter_map(table) {
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
