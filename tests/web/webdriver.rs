//! A small W3C WebDriver client for the browser tests: it starts `chromedriver` on a free
//! 127.0.0.1 port, opens one headless Chromium session and speaks JSON over plain HTTP/1.1
//! to it. Every wait is bounded; dropping the [`Browser`] ends the session and kills the
//! chromedriver process group (chromedriver and the Chromium it started).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The W3C key of an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Bound of one HTTP exchange with chromedriver.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// Whether the Debian `chromium` and `chromium-driver` packages are installed.
pub fn browser_installed() -> bool {
    Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists()
}

/// One headless Chromium, driven through chromedriver.
pub struct Browser {
    driver: Option<Child>,
    addr: SocketAddr,
    session: Option<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile. Chromium resolves no
    /// host name but 127.0.0.1 and accepts the node's self-signed certificate.
    pub fn start() -> Browser {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::env::temp_dir().join(format!("atrest-chromedriver-{port}.log"));
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver (apt-get install chromium chromium-driver)");
        let profile = tempfile::Builder::new()
            .prefix("atrest-chromium-")
            .tempdir()
            .expect("profile dir");
        let mut b = Browser {
            driver: Some(driver),
            addr,
            session: None,
            _profile: profile,
        };
        b.wait_ready();
        b.new_session();
        b
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok((200, v)) = self.http("GET", "/status", None)
                && v["value"]["ready"] == json!(true)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("chromedriver did not become ready within 20 s");
    }

    fn new_session(&mut self) {
        let profile = self._profile.path().display().to_string();
        let args = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--ignore-certificate-errors",
            "--window-size=1280,900",
            // Nothing but 127.0.0.1 resolves: a request to any other host fails.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            &format!("--user-data-dir={profile}"),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "acceptInsecureCerts": true,
                    "goog:chromeOptions": {
                        "binary": "/usr/bin/chromium",
                        "args": args,
                    },
                    "timeouts": {"pageLoad": 30000, "script": 30000, "implicit": 0},
                }
            }
        });
        let v = self.cmd("POST", "/session", Some(caps));
        let id = v["value"]["sessionId"]
            .as_str()
            .expect("session id in new session answer");
        self.session = Some(id.to_string());
    }

    /// One HTTP/1.1 exchange with chromedriver; returns the status and the JSON body.
    fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> std::io::Result<(u16, Value)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(IO_TIMEOUT))?;
        s.set_write_timeout(Some(IO_TIMEOUT))?;
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            payload.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(payload.as_bytes())?;
        // chromedriver keeps the connection open despite `Connection: close`: read the
        // headers, then exactly Content-Length bytes (or chunks up to the last one).
        let mut raw = Vec::new();
        let mut buf = [0u8; 16384];
        let split = loop {
            if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Err(std::io::Error::other(
                    "chromedriver closed before its headers",
                ));
            }
            raw.extend_from_slice(&buf[..n]);
        };
        let headers = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status: u16 = headers
            .split_whitespace()
            .nth(1)
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad status line from chromedriver"))?;
        let length: Option<usize> = headers.lines().find_map(|l| {
            l.strip_prefix("content-length:")
                .and_then(|v| v.trim().parse().ok())
        });
        let chunked = headers.contains("transfer-encoding: chunked")
            || headers.contains("transfer-encoding:chunked");
        let mut body = raw[split + 4..].to_vec();
        loop {
            let complete = match length {
                Some(n) => body.len() >= n,
                None if chunked => body.ends_with(b"0\r\n\r\n"),
                None => false,
            };
            if complete {
                break;
            }
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&buf[..n]);
        }
        if let Some(n) = length {
            body.truncate(n);
        } else if chunked {
            body = dechunk(&body);
        }
        let v = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).map_err(std::io::Error::other)?
        };
        Ok((status, v))
    }

    /// A WebDriver command that must succeed; returns the answer's JSON.
    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self
            .http(method, path, body.as_ref())
            .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        assert_eq!(status, 200, "webdriver {method} {path}: {v}");
        v
    }

    fn s(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().unwrap_or(""))
    }

    /// Opens `url` and waits for it to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    /// The current URL.
    pub fn url(&self) -> String {
        let v = self.cmd("GET", &self.s("/url"), None);
        v["value"].as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        let v = self.cmd(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": script, "args": args })),
        );
        v["value"].clone()
    }

    /// Runs an async `script` that calls `arguments[arguments.length - 1]` with its result.
    pub fn js_async(&self, script: &str, args: Value) -> Value {
        let v = self.cmd(
            "POST",
            &self.s("/execute/async"),
            Some(json!({ "script": script, "args": args })),
        );
        v["value"].clone()
    }

    /// Finds the element matching the CSS `selector` (which must exist) and returns its id.
    pub fn find(&self, selector: &str) -> String {
        let v = self.cmd(
            "POST",
            &self.s("/element"),
            Some(json!({ "using": "css selector", "value": selector })),
        );
        v["value"][ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element id for {selector}: {v}"))
            .to_string()
    }

    /// Clicks the element matching `selector` (waiting, bounded, until it is shown).
    pub fn click(&self, selector: &str) {
        self.wait_visible(selector, Duration::from_secs(15));
        let id = self.find(selector);
        self.cmd(
            "POST",
            &self.s(&format!("/element/{id}/click")),
            Some(json!({})),
        );
    }

    /// Types `text` into the element matching `selector`.
    pub fn type_into(&self, selector: &str, text: &str) {
        self.wait_visible(selector, Duration::from_secs(15));
        let id = self.find(selector);
        self.cmd(
            "POST",
            &self.s(&format!("/element/{id}/value")),
            Some(json!({ "text": text })),
        );
    }

    /// The text of the element with DOM id `id`, or `None` if there is none.
    pub fn text_of(&self, id: &str) -> Option<String> {
        let v = self.js(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : null;",
            json!([id]),
        );
        v.as_str().map(str::to_string)
    }

    /// Whether the element matching `selector` exists and is rendered.
    pub fn is_visible(&self, selector: &str) -> bool {
        let v = self.js(
            "const e = document.querySelector(arguments[0]);\
             return !!e && e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';",
            json!([selector]),
        );
        v == json!(true)
    }

    /// Polls `cond` every 100 ms until it holds, at most `limit`; panics with `what` if not.
    pub fn wait_until(&self, what: &str, limit: Duration, mut cond: impl FnMut(&Browser) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {limit:?} waiting for {what}; at {} the page says:\n{}",
                    self.url(),
                    self.js(
                        "return document.body ? document.body.innerText : '';",
                        json!([])
                    )
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) until the element matching `selector` is shown.
    pub fn wait_visible(&self, selector: &str, limit: Duration) {
        self.wait_until(&format!("{selector} to be shown"), limit, |b| {
            b.is_visible(selector)
        });
    }

    /// Waits (bounded) until the element with id `id` has a text containing `needle`.
    pub fn wait_text(&self, id: &str, needle: &str, limit: Duration) -> String {
        let mut last = String::new();
        self.wait_until(&format!("#{id} to contain {needle:?}"), limit, |b| {
            last = b.text_of(id).unwrap_or_default();
            last.contains(needle)
        });
        last
    }

    /// Saves a PNG screenshot of the window to `path`.
    pub fn screenshot(&self, path: &Path) {
        let v = self.cmd("GET", &self.s("/screenshot"), None);
        let b64 = v["value"].as_str().expect("screenshot data");
        let png = base64_decode(b64).expect("screenshot is base64");
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot dir");
        }
        std::fs::write(path, png).expect("write screenshot");
    }

    /// Every URL the page loaded (document and resources, from the Performance API).
    pub fn loaded_urls(&self) -> Vec<String> {
        let v = self.js(
            "return [location.href].concat(performance.getEntriesByType('resource')\
             .map(e => e.name));",
            json!([]),
        );
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(id) = self.session.take() {
            let _ = self.http("DELETE", &format!("/session/{id}"), None);
        }
        if let Some(mut child) = self.driver.take() {
            // The driver runs in its own process group with the browser it started.
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The body of a chunked HTTP answer.
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = data.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// Decodes standard base64 (with or without padding).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\n' | b'\r' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// `docs/images/NAME` of the repository.
pub fn image_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("docs")
        .join("images")
        .join(name)
}
