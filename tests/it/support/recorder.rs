//! An upstream that records every byte of every request it reads (head and body by its
//! framing): what a proxy forwarded, exactly, for the tests of bodies and smuggling.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The body of the recorder's answer to `/refuse-big`: more than the sockets' buffers hold.
pub const BIG_REFUSAL: usize = 8 << 20;

/// An upstream that reads each request whole (its head, then its body by its framing), keeps
/// the bytes, and answers `200` with the body's length — or, for `/refuse`, answers `413` as
/// soon as the head is in, reading nothing more (`/refuse-big`: with a body of
/// [`BIG_REFUSAL`] bytes).
pub struct Recorder {
    pub url: String,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn body_end(buf: &[u8], head: &str) -> Option<usize> {
    let lower = head.to_ascii_lowercase();
    let start = head.len();
    if lower.contains("transfer-encoding: chunked") {
        // The chunked body ends at the blank line after the last (zero) chunk and its trailers.
        let mut at = start;
        loop {
            let line_end = at + buf[at..].windows(2).position(|w| w == b"\r\n")?;
            let size = usize::from_str_radix(
                std::str::from_utf8(&buf[at..line_end])
                    .ok()?
                    .split(';')
                    .next()?
                    .trim(),
                16,
            )
            .ok()?;
            if size == 0 {
                // Trailer lines, then an empty line.
                let mut q = line_end + 2;
                loop {
                    let e = buf[q..].windows(2).position(|w| w == b"\r\n")?;
                    q += e + 2;
                    if e == 0 {
                        return Some(q);
                    }
                }
            }
            at = line_end + 2 + size + 2;
            if at > buf.len() {
                return None;
            }
        }
    }
    let len = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse::<usize>().unwrap());
    (buf.len() >= start + len).then_some(start + len)
}

pub async fn recorder() -> Recorder {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = l.accept().await {
            let g = g.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 65536];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                    if head.starts_with("POST /refuse") {
                        g.lock().unwrap().push(buf[..head_end].to_vec());
                        // `/refuse-big`: an answer larger than the sockets' buffers hold.
                        let body = if head.starts_with("POST /refuse-big") {
                            vec![b'z'; BIG_REFUSAL]
                        } else {
                            b"too big\n".to_vec()
                        };
                        let refusal = format!(
                            "HTTP/1.1 413 Payload Too Large\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = sock.write_all(&[refusal.as_bytes(), &body].concat()).await;
                        // Keeps the connection open, reading nothing more.
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    let end = loop {
                        if let Some(e) = body_end(&buf, &head) {
                            break e;
                        }
                        let mut chunk = [0u8; 65536];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => {
                                g.lock().unwrap().push(buf.clone());
                                return;
                            }
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let request: Vec<u8> = buf.drain(..end).collect();
                    let body_len = request.len() - head_end;
                    g.lock().unwrap().push(request);
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body_len}",
                        body_len.to_string().len()
                    );
                    if sock.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Recorder { url, got }
}

impl Recorder {
    /// Every request read so far, as text, in the order read.
    pub fn requests(&self) -> Vec<String> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }
}
