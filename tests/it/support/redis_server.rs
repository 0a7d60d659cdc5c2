//! A real `redis-server` on a loopback port, for the fleet tests. It keeps nothing on disk, so
//! a restart comes back empty — the failure the fleet must survive.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Extra arguments (TLS, a password); with them, readiness is the port accepting.
    extra: Vec<String>,
}

/// A loopback port nobody listens on (now).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

impl RedisServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, Vec::new())
    }

    /// TLS only (no plain port) with a password: `dir` holds server.pem, server.key, ca.pem.
    pub fn start_tls(dir: &std::path::Path, password: &str) -> Self {
        let port = free_port();
        let f = |n: &str| dir.join(n).display().to_string();
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            &f("server.pem"),
            "--tls-key-file",
            &f("server.key"),
            "--tls-ca-cert-file",
            &f("ca.pem"),
            "--tls-auth-clients",
            "no",
            "--requirepass",
            password,
        ];
        Self::start_with(port, extra.iter().map(|s| s.to_string()).collect())
    }

    /// With `extra` arguments (which then name the port themselves).
    pub fn start_with(port: u16, extra: Vec<String>) -> Self {
        let mut r = RedisServer {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
            extra,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port.to_string();
        let plain = ["--port", port.as_str()];
        let child = Command::new("redis-server")
            .args(if self.extra.is_empty() { &plain[..] } else { &[] })
            .args(&self.extra)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): the fleet tests need it on PATH; ./scripts/test.sh installs it (apt-get install redis-server)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let ready = if self.extra.is_empty() {
                self.ping()
            } else {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            };
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer on port {}", self.port);
    }

    /// SIGKILL: gone at once, like a crashed node.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").is_ok()
            && s.read(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
    }

    /// One command through the redis crate's blocking client.
    pub fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con).unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
