//! `hookline console`, the built binary: safety at the HTTP level, and the
//! operator's path in a real browser (headless Chromium through
//! ChromeDriver's WebDriver protocol), with screenshots under
//! `target/console-screenshots/`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use hookline_core::message::OutboundMessage;
use hookline_core::ports::Queue;
use hookline_core::records::{EventStatus, Outcome};

use crate::helpers::*;

struct Console {
    _child: KillOnDrop,
    base: String,
}

async fn start_console(data_dir: &std::path::Path, addr: &str, token: Option<&str>) -> Console {
    let mut cmd = Command::new(bin("hookline"));
    cmd.env_clear()
        .env("DATA_DIR", data_dir)
        .env("CONSOLE_ADDR", addr)
        .arg("console")
        .stdout(Stdio::null())
        .stderr(log_file(&format!(
            "console-{}",
            addr.replace([':', '.'], "-")
        )));
    if let Some(t) = token {
        cmd.env("CONSOLE_TOKEN", t);
    }
    let child = cmd.spawn().expect("console starts");
    let port = addr.rsplit(':').next().expect("port");
    let base = format!("http://127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(15), || async {
        reqwest::get(format!("{base}/static/console.css"))
            .await
            .is_ok()
    })
    .await;
    assert!(up, "the console listens");
    Console {
        _child: KillOnDrop(child),
        base,
    }
}

fn dead(event_type: &str, id: &str, object: &str, reason: &str) -> OutboundMessage {
    let mut v: serde_json::Value =
        serde_json::from_str(&event_with(event_type, id, now() - 600)).expect("json");
    v["data"]["object"]["id"] = object.into();
    let body = v.to_string();
    let env = hookline_core::envelope::Envelope::parse(body.as_bytes()).expect("event");
    let mut m = OutboundMessage::for_event(&env, Bytes::from(body), now() - 600);
    m.attributes.insert("error".to_owned(), reason.to_owned());
    m
}

/// An embedded backend in a new directory with one dead letter of `id`
/// (a `payout.updated`).
async fn one_dead_letter(id: &str) -> (tempfile::TempDir, hookline_embedded::Embedded) {
    let dir = tempfile::tempdir().expect("tmp");
    let e =
        hookline_embedded::open(dir.path(), hookline_embedded::Options::default()).expect("open");
    let object = id.replace("evt_test_", "po_");
    assert!(e
        .dlq
        .send_batch(&[dead("payout.updated", id, &object, "x")])
        .await[0]
        .is_ok());
    (dir, e)
}

/// The CSRF token a console page carries.
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token in the page")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_token_every_page_and_action_answers_401() {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    // Anything but loopback requires a token: without one it refuses to start.
    let out = Command::new(bin("hookline"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("CONSOLE_ADDR", format!("0.0.0.0:{port}"))
        .arg("console")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONSOLE_TOKEN"));

    let token = "console-test-token-0123456789-abcdef";
    let console = start_console(dir.path(), &format!("0.0.0.0:{port}"), Some(token)).await;
    let client = reqwest::Client::new();
    let base = &console.base;
    for path in [
        "/",
        "/api/summary",
        "/replay/status",
        "/export",
        "/message?id=x",
    ] {
        let r = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 401, "GET {path}");
        assert!(r.headers()["content-security-policy"]
            .to_str()
            .expect("csp")
            .contains("default-src 'none'"));
    }
    for path in ["/replay", "/replay/preview"] {
        let r = client
            .post(format!("{base}{path}"))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status().as_u16(), 401, "POST {path}");
    }
    let wrong = client
        .get(format!("{base}/"))
        .bearer_auth("console-test-token-wrong")
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status().as_u16(), 401);
    let ok = client
        .get(format!("{base}/"))
        .bearer_auth(token)
        .send()
        .await
        .expect("get");
    assert_eq!(ok.status().as_u16(), 200);
    // The login form sets an HttpOnly, SameSite=Strict cookie.
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let login = no_redirect
        .post(format!("{base}/login"))
        .form(&[("token", token)])
        .send()
        .await
        .expect("login");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    // A session, not the token: it expires, and says Secure only over TLS.
    assert!(!cookie.contains(token), "{cookie}");
    assert!(cookie.contains("Max-Age=43200"), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
    let with_cookie = client
        .get(format!("{base}/api/summary"))
        .header("cookie", cookie.split(';').next().expect("pair"))
        .send()
        .await
        .expect("get");
    assert_eq!(with_cookie.status().as_u16(), 200);
    // With the token but without the CSRF token, a POST is refused.
    let no_csrf = client
        .post(format!("{base}/replay"))
        .bearer_auth(token)
        .form(&[("event_type", "payout.updated")])
        .send()
        .await
        .expect("post");
    assert_eq!(no_csrf.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_without_the_csrf_token_is_refused_and_nothing_moves() {
    let (dir, e) = one_dead_letter("evt_test_csrf").await;
    let console = start_console(dir.path(), &format!("127.0.0.1:{}", free_port()), None).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/replay", console.base))
        .form(&[("event_type", "payout.updated")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let r = client
        .post(format!("{}/replay", console.base))
        .header("x-csrf-token", "not-the-token")
        .form(&[("event_type", "payout.updated")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let d = e.dlq.counts().await.expect("counts");
    assert_eq!(d.waiting + d.in_flight, 1, "nothing moved");
    // The page has no raw body: only the one opened message shows it.
    let page = client
        .get(format!("{}/", console.base))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(page.contains("evt_test_csrf"));
    assert!(!page.contains("\"object\""), "no raw body on the page");
}

/// The console's binary with `CONSOLE_TOKEN` set to `token`: its exit code
/// and what it printed.
fn console_refuses(token: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(bin("hookline"))
        .env_clear()
        .env("DATA_DIR", dir.path())
        .env("CONSOLE_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("CONSOLE_TOKEN", token)
        .arg("console")
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("runs");
    // A console that starts instead of refusing is stopped, and fails here.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (code, std::fs::read_to_string(&log).unwrap_or_default())
}

/// An empty, blank or short `CONSOLE_TOKEN` (a compose file's unset
/// `${CONSOLE_TOKEN}`) is refused at start with exit 1 naming the rule,
/// and the value is never printed.
#[test]
fn a_weak_console_token_is_refused_at_start() {
    for weak in ["", "   ", "short-token-0123456789"] {
        let (code, stderr) = console_refuses(weak);
        assert_eq!(code, Some(1), "{weak:?}: {stderr}");
        assert!(stderr.contains("CONSOLE_TOKEN"), "{stderr}");
        assert!(
            stderr.contains("empty") || stderr.contains("at least 32"),
            "{stderr}"
        );
        if !weak.trim().is_empty() {
            assert!(!stderr.contains(weak), "the token is not printed");
        }
    }
}

/// Any printable token works, `;` and spaces included; the session cookie
/// is marked Secure behind a proxy that says the request came over TLS; an
/// empty or forged cookie does not sign in.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_with_any_printable_characters_signs_in() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = "a token; with = spaces, and ;; semicolons 0123456789";
    let console = start_console(
        dir.path(),
        &format!("127.0.0.1:{}", free_port()),
        Some(token),
    )
    .await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let base = &console.base;
    for forged in ["hookline_console=", "hookline_console=9999999999.00"] {
        let r = client
            .get(format!("{base}/api/summary"))
            .header("cookie", forged)
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 401, "{forged}");
    }
    let login = client
        .post(format!("{base}/login"))
        .header("x-forwarded-proto", "https")
        .form(&[("token", token)])
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 303, "signed in");
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_owned();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
    let r = client
        .get(format!("{base}/api/summary"))
        .header("cookie", cookie.split(';').next().expect("pair"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 200);
}

/// Five failed sign-ins a minute per client: the sixth try is refused
/// (429, Retry-After) even with the right token, and every failure is
/// logged without the attempted value.
#[tokio::test(flavor = "multi_thread")]
async fn failed_sign_ins_are_limited_and_logged() {
    let dir = tempfile::tempdir().expect("tmp");
    let token = "console-test-token-0123456789-abcdef";
    let addr = format!("127.0.0.1:{}", free_port());
    let console = start_console(dir.path(), &addr, Some(token)).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for i in 0..5 {
        let r = client
            .post(format!("{}/login", console.base))
            .form(&[("token", format!("wrong-guess-{i}"))])
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 401);
    }
    let r = client
        .post(format!("{}/login", console.base))
        .form(&[("token", token)])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let log = std::fs::read_to_string(log_path(&format!(
        "console-{}",
        addr.replace([':', '.'], "-")
    )))
    .expect("log");
    assert_eq!(log.matches("failed sign-in").count(), 5, "{log}");
    assert!(
        !log.contains("wrong-guess"),
        "no attempted value in the log"
    );
}

/// DNS rebinding: a page whose name now resolves to 127.0.0.1 is not the
/// console. A request naming another host gets 421 with no data; a POST
/// from another origin gets 403, even with the page's CSRF token; nothing
/// moves.
#[tokio::test(flavor = "multi_thread")]
async fn requests_for_another_host_or_from_another_origin_are_refused() {
    let (dir, e) = one_dead_letter("evt_test_rebind").await;
    let port = free_port();
    let console = start_console(dir.path(), &format!("127.0.0.1:{port}"), None).await;
    let client = reqwest::Client::new();
    for path in ["/", "/api/summary", "/export", "/static/console.js"] {
        let r = client
            .get(format!("{}{path}", console.base))
            .header("host", format!("rebound.attacker.example:{port}"))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 421, "{path}");
        assert!(r.text().await.expect("body").is_empty(), "no data: {path}");
    }
    // The console's own name works; its CSRF token is in the page.
    let page = client
        .get(format!("http://localhost:{port}/"))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("page");
    let csrf = csrf_of(&page);
    for (origin, site) in [
        (Some("http://rebound.attacker.example"), None),
        (None, Some("cross-site")),
    ] {
        let mut r = client
            .post(format!("{}/replay", console.base))
            .header("x-csrf-token", &csrf)
            .form(&[("event_type", "payout.updated")]);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        if let Some(s) = site {
            r = r.header("sec-fetch-site", s);
        }
        let r = r.send().await.expect("post");
        assert_eq!(r.status().as_u16(), 403, "{origin:?} {site:?}");
        assert!(r.text().await.expect("body").is_empty());
    }
    let d = e.dlq.counts().await.expect("counts");
    assert_eq!(d.waiting + d.in_flight, 1, "nothing moved");
    // From the console's own page it works.
    let r = client
        .post(format!("{}/replay", console.base))
        .header("x-csrf-token", &csrf)
        .header("origin", console.base.as_str())
        .form(&[("event_type", "payout.updated")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
}

/// A replay whose request is dropped (a closed tab) does not leave the job
/// running: it runs to its end on its own and the next replay starts.
/// While a replay runs, export and opening a message do not touch the DLQ
/// (409): they would hide messages the replay then takes for gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_replay_request_leaves_no_stuck_job() {
    let (dir, e) = one_dead_letter("evt_test_tab").await;
    let console = start_console(dir.path(), &format!("127.0.0.1:{}", free_port()), None).await;
    let client = reqwest::Client::new();
    let page = client
        .get(format!("{}/", console.base))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("page");
    let csrf = csrf_of(&page);
    // Another process holds the database: the dry run cannot finish yet.
    let lock = hookline_embedded::testing::WriteLock::hold(dir.path(), Duration::from_secs(5))
        .expect("lock");
    let dropped = client
        .post(format!("{}/replay", console.base))
        .header("x-csrf-token", &csrf)
        .timeout(Duration::from_millis(500))
        .form(&[("event_type", "payout.updated")])
        .send()
        .await;
    // A job under way: the DLQ is not read for export or a message.
    let status: serde_json::Value = client
        .get(format!("{}/replay/status", console.base))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("json");
    assert_eq!(status["running"], true, "{status} (request: {dropped:?})");
    for path in ["/export", "/message?id=x"] {
        let r = client
            .get(format!("{}{path}", console.base))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status().as_u16(), 409, "{path}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.release().expect("unlock");
    assert!(
        eventually(Duration::from_secs(20), || async {
            let s: serde_json::Value = client
                .get(format!("{}/replay/status", console.base))
                .send()
                .await
                .expect("status")
                .json()
                .await
                .expect("json");
            s["running"] == false
        })
        .await,
        "the job ended on its own"
    );
    let next = client
        .post(format!("{}/replay", console.base))
        .header("x-csrf-token", &csrf)
        .form(&[("event_type", "payout.updated")])
        .send()
        .await
        .expect("post");
    assert_eq!(next.status().as_u16(), 202, "the next replay starts");
    assert!(
        eventually(Duration::from_secs(20), || async {
            let q = e.queue.counts().await.expect("counts");
            q.waiting + q.in_flight == 1
        })
        .await,
        "the dead letter is back on the queue, not lost"
    );
}

/// ChromeDriver and a headless Chromium session, through the W3C WebDriver
/// protocol. Dropping it, whatever the test's outcome (pass, failed
/// assertion, panic), ends the session, stops ChromeDriver's process group
/// and waits until no process runs on the browser's profile any more.
struct Browser {
    driver: Child,
    port: u16,
    profile: std::path::PathBuf,
    base: String,
    session: String,
    http: reqwest::Client,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // ChromeDriver quits the browser it started (and its crash handler)
        // when the session ends; a SIGKILL of ChromeDriver alone would leave
        // the browser running, re-parented to init.
        end_webdriver_session(self.port, &self.session);
        stop_process_group(&mut self.driver);
        kill_and_wait_for(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `DELETE /session/{id}`, plain HTTP/1.1 on a blocking socket: `drop`
/// cannot await, and it runs inside the test's runtime.
fn end_webdriver_session(port: u16, session: &str) {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
    let request = format!(
        "DELETE /session/{session} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    if s.write_all(request.as_bytes()).is_ok() {
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
    }
}

/// SIGTERM to the child's process group (it was spawned as its leader),
/// SIGKILL after 5 s, then reaps it.
fn stop_process_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let signal = |sig: &str| {
        let _ = Command::new("kill")
            .args([sig, "--", &group])
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal("-KILL");
    let _ = child.wait();
}

/// The processes whose command line names `path` (a browser's profile).
fn processes_naming(path: &std::path::Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .collect()
}

/// Kills every process still running on `profile` and waits (up to 10 s)
/// until none is left.
fn kill_and_wait_for(profile: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_naming(profile);
        if left.is_empty() || std::time::Instant::now() > deadline {
            return;
        }
        let pids: Vec<String> = left.iter().map(u32::to_string).collect();
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(100));
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    async fn start() -> Option<Browser> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !std::path::Path::new(chromium).exists() || !std::path::Path::new(driver).exists() {
            return None;
        }
        let port = free_port();
        let mut child = Command::new(driver);
        child
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group, so that stopping it reaches what it started.
        std::os::unix::process::CommandExt::process_group(&mut child, 0);
        let mut child = child.spawn().ok()?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let up = eventually(Duration::from_secs(15), || async {
            http.get(format!("{base}/status")).send().await.is_ok()
        })
        .await;
        if !up {
            stop_process_group(&mut child);
            return None;
        }
        let profile = tempfile::Builder::new()
            .prefix(".tmp-hookline-browser-")
            .tempdir()
            .ok()?
            .keep();
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--disable-quic", "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync", "--window-size=1280,1100",
                         "--disable-crash-reporter", "--disable-breakpad",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let created: Option<serde_json::Value> = async {
            http.post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()
        }
        .await;
        let Some(session) = created
            .as_ref()
            .and_then(|r| r["value"]["sessionId"].as_str())
        else {
            stop_process_group(&mut child);
            kill_and_wait_for(&profile);
            return None;
        };
        let session = session.to_owned();
        Some(Browser {
            driver: child,
            port,
            profile,
            base: format!("{base}/session/{session}"),
            session,
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if !body.is_null() {
            request = request.json(&body);
        }
        let r = request.send().await.expect("webdriver answers");
        let v: serde_json::Value = r.json().await.expect("json");
        assert!(
            v["value"].get("error").is_none(),
            "{} {path}: {v}",
            self.session
        );
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({"url": url}),
        )
        .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({"using": "css selector", "value": css}),
            )
            .await;
        v[ELEMENT].as_str().expect("element").to_owned()
    }

    async fn click(&self, css: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/click"),
            serde_json::json!({}),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{el}/value"),
            serde_json::json!({"text": text}),
        )
        .await;
    }

    /// The page's text content under `css` (empty when absent).
    async fn text(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                serde_json::json!({
                    "script": "const e = document.querySelector(arguments[0]); return e ? e.textContent : '';",
                    "args": [css]
                }),
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn count(&self, css: &str) -> usize {
        let v = self
            .call(
                reqwest::Method::POST,
                "/execute/sync",
                serde_json::json!({"script": "return document.querySelectorAll(arguments[0]).length;", "args": [css]}),
            )
            .await;
        v.as_u64().unwrap_or(0) as usize
    }

    async fn screenshot(&self, name: &str) {
        let v = self
            .call(reqwest::Method::GET, "/screenshot", serde_json::Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64"))
            .expect("png");
        let dir = repo_root().join("target/console-screenshots");
        let _ = std::fs::create_dir_all(&dir);
        std::fs::write(dir.join(format!("{name}.png")), png).expect("screenshot saved");
    }
}

/// A browser test that fails leaves no browser behind: the guard's drop
/// runs while the panic unwinds, ends the session and waits for the browser.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_browser_test_leaves_no_browser_running() {
    let Some(browser) = Browser::start().await else {
        record_skip("no headless Chromium and ChromeDriver");
        return;
    };
    let profile = browser.profile.clone();
    assert!(
        !processes_naming(&profile).is_empty(),
        "the browser runs on its profile"
    );
    let failed = tokio::spawn(async move {
        browser.goto("about:blank").await;
        panic!("a browser test failing on purpose (expected in this test's output)");
    })
    .await;
    assert!(failed.is_err_and(|e| e.is_panic()));
    let left = processes_naming(&profile);
    assert!(left.is_empty(), "still running on {profile:?}: {left:?}");
    assert!(!profile.exists(), "the profile directory is removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_path_in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        record_skip(
            "no headless Chromium and ChromeDriver (/usr/bin/chromium, /usr/bin/chromedriver); `make test` installs Debian's chromium and chromium-driver where it can",
        );
        return;
    };
    let bed = crate::bed::Bed::embedded(5).await;
    let dir = bed
        .env
        .iter()
        .find(|(k, _)| k == "DATA_DIR")
        .map(|(_, v)| v.clone())
        .expect("data dir");
    // Three dead letters for two reasons, and one event to apply.
    let bug = "payout.updated cannot be handled: a bug fixed in the next deploy";
    let messages = [
        dead("payout.updated", "evt_test_ui_1", "po_ui_1", bug),
        dead("payout.updated", "evt_test_ui_2", "po_ui_2", bug),
        dead(
            "account.updated",
            "evt_test_ui_3",
            "acct_ui_3",
            "gave up after 5 deliveries: store timeout",
        ),
    ];
    assert!(bed
        .dlq
        .send_batch(&messages)
        .await
        .iter()
        .all(Result::is_ok));
    let mut applied: serde_json::Value =
        serde_json::from_str(&event_with("payout.created", "evt_test_ui_applied", now()))
            .expect("json");
    applied["data"]["object"]["id"] = "po_ui_applied".into();
    bed.enqueue(&[applied.to_string()]).await;
    let _worker = bed.worker(&[]);
    let ids = vec!["evt_test_ui_applied".to_owned()];
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&ids)).await);

    let console = start_console(
        std::path::Path::new(&dir),
        &format!("127.0.0.1:{}", free_port()),
        None,
    )
    .await;
    browser.goto(&format!("{}/", console.base)).await;
    assert_eq!(
        browser.count("#by-reason details.group").await,
        2,
        "two reason groups"
    );
    let counts: Vec<String> = {
        let mut v = Vec::new();
        for i in 1..=2 {
            v.push(
                browser
                    .text(&format!("#by-reason details.group:nth-of-type({i}) .count"))
                    .await,
            );
        }
        v
    };
    assert_eq!(counts, ["2", "1"]);
    assert!(browser
        .text("#by-reason")
        .await
        .contains("a bug fixed in the next deploy"));
    assert_eq!(browser.text("#dead-lettered").await, "3");
    browser.screenshot("1-overview").await;

    // Event lookup: the ledger item and what it projected.
    browser
        .type_into("input[name=lookup]", "evt_test_ui_applied")
        .await;
    browser.click("#lookup button").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            browser
                .text("#lookup-result")
                .await
                .contains("po_ui_applied")
        })
        .await
    );
    let result = browser.text("#lookup-result").await;
    assert!(
        result.contains("COMPLETED") && result.contains("applied"),
        "{result}"
    );
    browser.screenshot("2-lookup").await;

    // A filtered replay: the dry-run count first, then confirm, progress, result.
    browser
        .type_into("input[name=event_type]", "payout.updated")
        .await;
    browser.click("#preview").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            browser
                .text("#confirm-text")
                .await
                .contains("2 messages would be replayed")
        })
        .await,
        "dry run: {}",
        browser.text("#confirm-text").await
    );
    let d = bed.dlq.counts().await.expect("counts");
    assert_eq!(d.waiting + d.in_flight, 3, "the dry run moved nothing");
    browser.screenshot("3-dry-run").await;
    browser.click("#confirm-replay").await;
    assert!(
        eventually(Duration::from_secs(20), || async {
            browser
                .text("#progress-text")
                .await
                .contains("done: replayed 2, skipped 1, failed 0")
        })
        .await,
        "progress: {}",
        browser.text("#progress-text").await
    );
    browser.screenshot("4-replayed").await;

    // The worker applies them; the group disappears on the next refresh.
    let replayed = vec!["evt_test_ui_1".to_owned(), "evt_test_ui_2".to_owned()];
    assert!(eventually(Duration::from_secs(30), || bed.all_completed(&replayed)).await);
    for id in &replayed {
        assert_eq!(
            bed.ledger(id).await.expect("ledger").outcome,
            Some(Outcome::Applied)
        );
    }
    assert!(
        eventually(Duration::from_secs(15), || async {
            browser.count("#by-reason details.group").await == 1
        })
        .await,
        "the replayed group is gone"
    );
    assert!(!browser.text("#by-reason").await.contains("a bug fixed"));
    assert_eq!(browser.text("#dead-lettered").await, "1");
    browser.screenshot("5-after-replay").await;

    // Export of the rest, as JSON lines; opening one message shows its body.
    let export = reqwest::get(format!(
        "{}/export?event_type=account.updated",
        console.base
    ))
    .await
    .expect("export")
    .text()
    .await
    .expect("text");
    let line: serde_json::Value = serde_json::from_str(export.trim()).expect("one JSON line");
    assert_eq!(line["event_id"], "evt_test_ui_3");
    assert!(line["body"]
        .as_str()
        .is_some_and(|b| b.contains("acct_ui_3")));
    let rec = bed.ledger("evt_test_ui_3").await;
    assert!(
        rec.is_none_or(|r| r.status != EventStatus::Completed),
        "still dead-lettered"
    );
}
