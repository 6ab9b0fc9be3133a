//! Headless Chromium driven over the Chrome DevTools Protocol, with nothing but the standard
//! library, tokio and reqwest: launch the browser on a page, find the page's DevTools WebSocket,
//! and evaluate JavaScript in it.
//!
//! The WebSocket client is the minimum the protocol needs (RFC 6455 client side: the upgrade
//! handshake, masked text frames out, unmasked frames in with continuation, ping and close);
//! pulling in a WebSocket crate for one test was not worth a dependency.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::load_support::{POLL, WAIT_MAX};

/// The Chromium binary: `$CHROMIUM`, else `chromium` or `chromium-browser` on the PATH, if it
/// runs.
pub fn find_chromium() -> Option<String> {
    let candidates = std::env::var("CHROMIUM")
        .ok()
        .into_iter()
        .chain(["chromium".to_string(), "chromium-browser".to_string()]);
    for c in candidates {
        let ok = Command::new(&c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(c);
        }
    }
    None
}

/// A headless Chromium with a fresh profile, killed (and its profile removed) on drop.
pub struct Browser {
    child: Child,
    profile: PathBuf,
}

impl Browser {
    /// Start Chromium on `url` with the DevTools server on an ephemeral port.
    pub fn launch(chromium: &str, url: &str) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "ticket-dashboard-chromium-{}-{}",
            std::process::id(),
            uuid_ish()
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {chromium}: {e}"));
        Browser { child, profile }
    }

    /// The DevTools port, from the `DevToolsActivePort` file Chromium writes into its profile.
    async fn devtools_port(&self) -> u16 {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                if let Some(Ok(port)) = text.lines().next().map(str::parse) {
                    return port;
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium never opened its DevTools port"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// A DevTools session on the open page whose URL contains `path`.
    pub async fn page(&self, path: &str) -> Cdp {
        let port = self.devtools_port().await;
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let deadline = Instant::now() + WAIT_MAX;
        let ws = loop {
            let targets: Option<Vec<Value>> = match http
                .get(format!("http://127.0.0.1:{port}/json/list"))
                .send()
                .await
            {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            let ws = targets.unwrap_or_default().into_iter().find_map(|t| {
                let is_page =
                    t["type"] == "page" && t["url"].as_str().is_some_and(|u| u.contains(path));
                is_page
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(String::from))
                    .flatten()
            });
            if let Some(ws) = ws {
                break ws;
            }
            assert!(Instant::now() < deadline, "no page {path} in chromium");
            tokio::time::sleep(POLL).await;
        };
        Cdp::connect(&ws).await
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Distinct enough for profile directory names within one process.
fn uuid_ish() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One DevTools WebSocket session.
pub struct Cdp {
    stream: BufReader<TcpStream>,
    next_id: u64,
}

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

impl Cdp {
    /// Open `ws://host:port/path` (the WebSocket upgrade of RFC 6455 §4.1).
    async fn connect(url: &str) -> Cdp {
        let rest = url.strip_prefix("ws://").expect("a ws:// url");
        let (host, path) = rest.split_at(rest.find('/').expect("a path"));
        let mut stream = TcpStream::connect(host).await.unwrap();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // Read the response head byte by byte: the first frame may follow it at once.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            stream.read_exact(&mut b).await.unwrap();
            head.push(b[0]);
            assert!(head.len() < 16 * 1024, "handshake response too long");
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        Cdp {
            stream: BufReader::new(stream),
            next_id: 1,
        }
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut frame = vec![0x80 | opcode];
        let len = payload.len();
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else if len <= usize::from(u16::MAX) {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
        // Client frames must be masked (§5.3); any key will do.
        let mask = [0x5a, 0x13, 0xc7, 0x2e];
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.stream.get_mut().write_all(&frame).await.unwrap();
    }

    /// The next complete text message (answering pings on the way).
    async fn read_message(&mut self) -> String {
        let mut message = Vec::new();
        loop {
            let mut head = [0u8; 2];
            self.stream.read_exact(&mut head).await.unwrap();
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0f);
            assert_eq!(head[1] & 0x80, 0, "server frames are never masked");
            let len = match head[1] & 0x7f {
                126 => u64::from(self.stream.read_u16().await.unwrap()),
                127 => self.stream.read_u64().await.unwrap(),
                n => u64::from(n),
            };
            assert!(len < 64 << 20, "frame of {len} bytes");
            let mut payload = vec![0u8; len as usize];
            self.stream.read_exact(&mut payload).await.unwrap();
            match opcode {
                OP_TEXT | OP_CONTINUATION => {
                    message.extend_from_slice(&payload);
                    if fin {
                        return String::from_utf8(message).unwrap();
                    }
                }
                OP_PING => self.send_frame(OP_PONG, &payload).await,
                OP_PONG => {}
                OP_CLOSE => panic!("DevTools closed the connection"),
                other => panic!("unexpected frame opcode {other}"),
            }
        }
    }

    /// Call a DevTools method and return its result (events received meanwhile are skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({ "id": id, "method": method, "params": params });
        self.send_frame(OP_TEXT, request.to_string().as_bytes())
            .await;
        loop {
            let msg: Value = serde_json::from_str(&self.read_message().await).unwrap();
            if msg["id"] == id {
                assert!(msg.get("error").is_none(), "{method} failed: {msg}");
                return msg["result"].clone();
            }
        }
    }

    /// Evaluate `expression` in the page; its value (which must be JSON-serializable).
    pub async fn evaluate(&mut self, expression: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await;
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression} threw: {r}"
        );
        r["result"]["value"].clone()
    }
}
