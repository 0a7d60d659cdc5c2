//! Headless Chromium driven over WebDriver (chromedriver): a page opened, scripts run in it,
//! elements clicked, screenshots taken. Both programs come from Debian (scripts/test.sh installs
//! them); a missing one fails the test and names it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

pub struct Driver {
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
    pub async fn start() -> Driver {
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

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
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

/// One headless Chromium session on a page; it ends with chromedriver, killed on drop.
pub struct Page {
    pub driver: Driver,
    sid: String,
    _profile: tempfile::TempDir,
}

impl Page {
    pub async fn open(url: &str) -> Page {
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
        let page = Page {
            driver,
            sid,
            _profile: profile,
        };
        page.driver
            .call("POST", &page.at("/url"), Some(json!({"url": url})))
            .await
            .unwrap();
        page
    }

    pub fn at(&self, p: &str) -> String {
        format!("/session/{}{p}", self.sid)
    }

    pub async fn js(&self, js: &str) -> Value {
        let body = json!({"script": js, "args": []});
        self.driver
            .call("POST", &self.at("/execute/sync"), Some(body))
            .await
            .unwrap()
    }

    pub async fn click(&self, testid: &str) {
        let found = json!({"using": "css selector", "value": format!("[data-testid={testid}]")});
        let button = self
            .driver
            .call("POST", &self.at("/element"), Some(found))
            .await
            .unwrap();
        let id = button.as_object().unwrap().values().next().unwrap();
        let path = self.at(&format!("/element/{}/click", id.as_str().unwrap()));
        self.driver
            .call("POST", &path, Some(json!({})))
            .await
            .unwrap();
    }

    /// Polls `js` until it returns `want`.
    pub async fn until(&self, js: &str, want: Value, what: &str) -> Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js(js).await;
            if v == want {
                return v;
            }
            assert!(Instant::now() < until, "{what}: {v}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

pub fn base64_decode(text: &str) -> Vec<u8> {
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
