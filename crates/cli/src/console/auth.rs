//! Who may use the console, as pure rules: the token's strength, the
//! session cookie derived from it, the login rate limit, and which `Host`
//! and `Origin` a request may name (DNS rebinding, cross-site POSTs).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hookline_signature::sign_v1;
use subtle::ConstantTimeEq;

/// The shortest `CONSOLE_TOKEN` accepted.
pub const MIN_TOKEN_CHARS: usize = 32;
/// How long a session cookie is valid.
pub const SESSION_SECS: i64 = 12 * 3600;
/// Failed logins a client may make in [`LOGIN_WINDOW`].
pub const LOGIN_FAILURES: usize = 5;
pub const LOGIN_WINDOW: Duration = Duration::from_secs(60);

/// Why a `CONSOLE_TOKEN` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("CONSOLE_TOKEN is set but empty or only whitespace (an unset variable in a compose or task file?): set a random token of at least {MIN_TOKEN_CHARS} characters, for example `openssl rand -hex 32`")]
    Blank,
    #[error("CONSOLE_TOKEN has {0} characters: the console needs at least {MIN_TOKEN_CHARS} (for example `openssl rand -hex 32`)")]
    TooShort(usize),
    #[error("CONSOLE_TOKEN holds a control character: use printable characters only")]
    NotPrintable,
}

/// The token rule: at least [`MIN_TOKEN_CHARS`] characters, not only
/// whitespace, printable. Any printable character is allowed (a `;` or a
/// space too: the token never goes into a cookie).
pub fn check_token(token: &str) -> Result<(), TokenError> {
    if token.trim().is_empty() {
        return Err(TokenError::Blank);
    }
    if token.chars().any(char::is_control) {
        return Err(TokenError::NotPrintable);
    }
    let n = token.chars().count();
    if n < MIN_TOKEN_CHARS {
        return Err(TokenError::TooShort(n));
    }
    Ok(())
}

/// Constant-time equality of two strings.
pub fn equal_in_constant_time(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Session cookies: `<expiry>.<HMAC-SHA256 of the expiry>` under a key
/// derived from the token (the same HMAC as Stripe's signatures). The
/// cookie never holds the token; changing the token ends every session; a
/// stolen cookie ends at its expiry.
#[derive(Clone)]
pub struct Sessions {
    key: String,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    pub fn new(token: &str) -> Self {
        Self {
            key: sign_v1(token.as_bytes(), 0, b"hookline console session key"),
        }
    }

    fn tag(&self, expiry: i64) -> String {
        sign_v1(self.key.as_bytes(), expiry, b"session")
    }

    /// A session valid until `now + SESSION_SECS`.
    pub fn issue(&self, now: i64) -> String {
        let expiry = now + SESSION_SECS;
        format!("{expiry}.{}", self.tag(expiry))
    }

    /// Whether `cookie` is a session this key issued that has not expired.
    pub fn valid(&self, cookie: &str, now: i64) -> bool {
        let Some((expiry, tag)) = cookie.split_once('.') else {
            return false;
        };
        let Ok(at) = expiry.parse::<i64>() else {
            return false;
        };
        // The expiry as written: a tag over another spelling does not match.
        !tag.is_empty()
            && equal_in_constant_time(tag, &self.tag(at))
            && at.to_string() == expiry
            && at > now
    }
}

/// The `Set-Cookie` value for a session: `Secure` when the request came
/// over TLS (a proxy in front says so).
pub fn session_cookie(name: &str, value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={SESSION_SECS}{secure}")
}

/// Failed logins per client, at most [`LOGIN_FAILURES`] in [`LOGIN_WINDOW`].
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: HashMap<IpAddr, VecDeque<Instant>>,
}

/// Clients remembered at most (the oldest are forgotten first).
const CLIENTS: usize = 10_000;

impl LoginLimiter {
    /// Whether `client` may try now.
    pub fn allows(&mut self, client: IpAddr, now: Instant) -> bool {
        match self.failures.get_mut(&client) {
            Some(times) => {
                while times
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= LOGIN_WINDOW)
                {
                    times.pop_front();
                }
                times.len() < LOGIN_FAILURES
            }
            None => true,
        }
    }

    pub fn failed(&mut self, client: IpAddr, now: Instant) {
        if self.failures.len() >= CLIENTS && !self.failures.contains_key(&client) {
            self.failures.retain(|_, t| {
                t.back()
                    .is_some_and(|t| now.duration_since(*t) < LOGIN_WINDOW)
            });
            if self.failures.len() >= CLIENTS {
                self.failures.clear();
            }
        }
        self.failures.entry(client).or_default().push_back(now);
    }

    /// How long until `client` may try again.
    pub fn retry_after(&self, client: IpAddr, now: Instant) -> Duration {
        self.failures
            .get(&client)
            .and_then(|t| t.front())
            .map_or(Duration::ZERO, |first| {
                LOGIN_WINDOW.saturating_sub(now.duration_since(*first))
            })
    }
}

/// The `Host` values the console answers: the loopback names with its
/// port, its own address when bound to one, and the names an operator
/// lists in `CONSOLE_ALLOWED_HOSTS` (a name alone matches any port).
#[derive(Debug, Clone)]
pub struct Hosts {
    exact: Vec<String>,
    names: Vec<String>,
}

impl Hosts {
    pub fn new(bound: SocketAddr, allowed: &[String]) -> Self {
        let port = bound.port();
        let mut exact = vec![
            format!("127.0.0.1:{port}"),
            format!("localhost:{port}"),
            format!("[::1]:{port}"),
        ];
        if !bound.ip().is_unspecified() && !bound.ip().is_loopback() {
            exact.push(bound.to_string());
        }
        let mut names = Vec::new();
        for a in allowed.iter().map(|a| a.trim().to_ascii_lowercase()) {
            if a.is_empty() {
                continue;
            }
            if has_port(&a) {
                exact.push(a);
            } else {
                names.push(a);
            }
        }
        Self { exact, names }
    }

    /// Whether a request naming `host` (its `Host` header) is for this console.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.exact.contains(&host) {
            return true;
        }
        let name = if has_port(&host) {
            host.rsplit_once(':').map_or(host.as_str(), |(n, _)| n)
        } else {
            host.as_str()
        };
        self.names.iter().any(|n| n == name)
    }
}

/// `name:port` or `[v6]:port`, not a bare name or `[v6]`.
fn has_port(host: &str) -> bool {
    match host.rsplit_once(':') {
        Some((name, port)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']'))
        }
        None => false,
    }
}

/// Whether a POST may be from a page of the console itself: its `Origin`
/// names the same host the request was sent to (and an allowed one), or,
/// without `Origin`, `Sec-Fetch-Site` is `same-origin` or absent. A client
/// that sends neither (curl, a script) is not a browser and cannot be made
/// to send a request cross-site.
pub fn same_origin(origin: Option<&str>, fetch_site: Option<&str>, host: &str) -> bool {
    match origin {
        Some(origin) => {
            let rest = origin
                .strip_prefix("http://")
                .or_else(|| origin.strip_prefix("https://"));
            rest.is_some_and(|o| o.eq_ignore_ascii_case(host.trim()))
        }
        None => fetch_site.is_none_or(|s| s.eq_ignore_ascii_case("same-origin")),
    }
}

/// Whether the request came over TLS, as a proxy in front says
/// (`X-Forwarded-Proto: https` or `Forwarded: proto=https`).
pub fn over_tls(forwarded_proto: Option<&str>, forwarded: Option<&str>) -> bool {
    forwarded_proto.is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
        || forwarded.is_some_and(|f| {
            f.split([';', ','])
                .any(|kv| kv.trim().eq_ignore_ascii_case("proto=https"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_tokens_are_refused_printable_ones_accepted() {
        assert_eq!(check_token(""), Err(TokenError::Blank));
        assert_eq!(check_token(&" ".repeat(40)), Err(TokenError::Blank));
        assert_eq!(check_token("short"), Err(TokenError::TooShort(5)));
        assert_eq!(check_token(&"a".repeat(31)), Err(TokenError::TooShort(31)));
        assert_eq!(
            check_token(&format!("{}\n", "a".repeat(40))),
            Err(TokenError::NotPrintable)
        );
        assert_eq!(check_token(&"a".repeat(32)), Ok(()));
        assert_eq!(
            check_token("a token; with spaces, = and ;;; 0123456789"),
            Ok(())
        );
        assert!(TokenError::TooShort(5).to_string().contains("at least 32"));
    }

    #[test]
    fn sessions_hold_no_token_expire_and_die_with_a_new_token() {
        let token = "a-console-token-of-enough-length-0123";
        let s = Sessions::new(token);
        let cookie = s.issue(1_000);
        assert!(!cookie.contains(token));
        assert!(s.valid(&cookie, 1_000));
        assert!(s.valid(&cookie, 1_000 + SESSION_SECS - 1));
        assert!(!s.valid(&cookie, 1_000 + SESSION_SECS), "expired");
        assert!(!Sessions::new("another-console-token-of-enough-length").valid(&cookie, 1_000));
        // The expiry cannot be moved: the tag covers it.
        let (_, tag) = cookie.split_once('.').expect("tag");
        assert!(!s.valid(&format!("{}.{tag}", 1_000 + 10 * SESSION_SECS), 1_000));
        for bad in ["", ".", "x.y", "1.", &format!(".{tag}")] {
            assert!(!s.valid(bad, 1_000), "{bad:?}");
        }
        let set = session_cookie("c", &cookie, true);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(set.contains("Max-Age=43200") && set.ends_with("; Secure"));
        assert!(!session_cookie("c", &cookie, false).contains("Secure"));
    }

    #[test]
    fn five_failed_logins_a_minute_per_client() {
        let mut l = LoginLimiter::default();
        let (a, b): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let t0 = Instant::now();
        for _ in 0..LOGIN_FAILURES {
            assert!(l.allows(a, t0));
            l.failed(a, t0);
        }
        assert!(!l.allows(a, t0));
        assert!(l.allows(b, t0), "another client is not held up");
        assert_eq!(l.retry_after(a, t0), LOGIN_WINDOW);
        assert!(!l.allows(a, t0 + Duration::from_secs(59)));
        assert!(l.allows(a, t0 + LOGIN_WINDOW), "the window passes");
    }

    #[test]
    fn only_the_consoles_own_host_names_are_answered() {
        let loopback: SocketAddr = "127.0.0.1:8090".parse().expect("addr");
        let h = Hosts::new(loopback, &[]);
        for ok in [
            "127.0.0.1:8090",
            "localhost:8090",
            "LOCALHOST:8090",
            "[::1]:8090",
        ] {
            assert!(h.allows(ok), "{ok}");
        }
        for bad in [
            "attacker.example:8090",
            "127.0.0.1:8091",
            "localhost",
            "127.0.0.1.nip.io:8090",
            "",
        ] {
            assert!(!h.allows(bad), "{bad}");
        }
        let any: SocketAddr = "0.0.0.0:8090".parse().expect("addr");
        let h = Hosts::new(
            any,
            &["console.internal".to_owned(), "ops.example:443".to_owned()],
        );
        assert!(h.allows("console.internal"));
        assert!(h.allows("console.internal:8090"));
        assert!(h.allows("ops.example:443"));
        assert!(!h.allows("ops.example"));
        assert!(!h.allows("0.0.0.0:8090"));
        let own: SocketAddr = "10.1.2.3:8090".parse().expect("addr");
        assert!(Hosts::new(own, &[]).allows("10.1.2.3:8090"));
    }

    #[test]
    fn posts_must_come_from_the_consoles_own_pages() {
        let host = "127.0.0.1:8090";
        assert!(same_origin(Some("http://127.0.0.1:8090"), None, host));
        assert!(same_origin(
            Some("https://127.0.0.1:8090"),
            Some("same-origin"),
            host
        ));
        assert!(!same_origin(Some("http://attacker.example"), None, host));
        assert!(!same_origin(Some("null"), None, host));
        assert!(!same_origin(None, Some("cross-site"), host));
        assert!(!same_origin(None, Some("same-site"), host));
        assert!(same_origin(None, Some("same-origin"), host));
        assert!(same_origin(None, None, host), "not a browser");
    }

    #[test]
    fn tls_is_what_the_proxy_says() {
        assert!(over_tls(Some("https"), None));
        assert!(over_tls(None, Some("for=1.2.3.4;proto=https")));
        assert!(!over_tls(Some("http"), None));
        assert!(!over_tls(None, None));
    }
}
