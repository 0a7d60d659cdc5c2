//! Bodies are streamed both ways, never buffered whole: 50 MB each way through the real
//! binary, checksums compared, and the proxy's peak memory measured.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};

use crate::support::*;

const SIZE: u64 = 50 * 1024 * 1024;
const CHUNK: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_each_way_pass_intact_without_growing_the_proxy() {
    let (s, k) = upstreams().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, Cfg::new(&s, &k).toml()).unwrap();
    let proxy = spawn_binary(&path, &[]);
    let c = client();
    // Warm up: one small exchange each way, then take the baseline.
    assert_eq!(get(&c, &proxy.url("/"), &[]).await.status, 200);
    let baseline_kb = proxy.status_kb("VmRSS");

    // Upload.
    let mut expected = Sha256::new();
    for i in 0..SIZE / CHUNK {
        expected.update(pattern(i * CHUNK, CHUNK as usize));
    }
    let expected = hex(&expected.finalize());
    let chunks = (0..SIZE / CHUNK).map(|i| {
        Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from(pattern(
            i * CHUNK,
            CHUNK as usize,
        ))))
    });
    let body = StreamBody::new(futures_core_like::IterStream(chunks)).boxed();
    let req = Request::post(proxy.url("/upload"))
        .header("x-user-id", "uploader")
        .body(body)
        .unwrap();
    let got = send(&c, req).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        got.body,
        format!("{SIZE} {expected}"),
        "the upstream received exactly what was sent"
    );

    // Download, hashed as it arrives.
    let req = Request::get(proxy.url(&format!("/download/{SIZE}")))
        .body(http_body_util::Full::new(Bytes::new()).boxed())
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut h, mut len) = (Sha256::new(), 0u64);
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            h.update(d);
            len += d.len() as u64;
        }
    }
    assert_eq!(len, SIZE);
    assert_eq!(
        hex(&h.finalize()),
        expected,
        "the same pattern came back intact"
    );

    let peak_kb = proxy.status_kb("VmHWM");
    let grown_mb = peak_kb.saturating_sub(baseline_kb) as f64 / 1024.0;
    eprintln!("proxy RSS: baseline {baseline_kb} kB, peak {peak_kb} kB, grown {grown_mb:.1} MB for 2 x 50 MB");
    assert!(
        grown_mb < 16.0,
        "the proxy grew by {grown_mb:.1} MB while streaming 50 MB: it buffers"
    );
}
