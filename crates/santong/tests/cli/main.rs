//! The binary as an operator uses it: settings precedence, bad settings, first start, demo data,
//! clean shutdown on SIGTERM. One test binary for the crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn santong() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_santong"));
    // The developer's environment must not leak into these tests.
    for (k, _) in std::env::vars() {
        if k.starts_with("SANTONG_") {
            c.env_remove(k);
        }
    }
    c
}

fn output(c: &mut Command) -> (i32, String, String) {
    let o = c.output().expect("runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn config_show_follows_precedence_and_redacts() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("santong.toml");
    std::fs::write(
        &file,
        "bind = \"127.0.0.1:9000\"\nbody_limit = \"1MiB\"\nlog_format = \"json\"\n\
         database_url = \"postgres://santong:hunter2@db.example/santong\"\n",
    )
    .unwrap();
    let (code, out, _) = output(
        santong()
            .args(["config", "show", "--config"])
            .arg(&file)
            .args(["--bind", "127.0.0.1:9100"])
            .env("SANTONG_BIND", "127.0.0.1:9200")
            .env("SANTONG_BODY_LIMIT", "4096"),
    );
    assert_eq!(code, 0);
    assert!(out.contains("bind = \"127.0.0.1:9100\"  # flag"), "{out}");
    assert!(out.contains("body_limit = 4096  # environment"), "{out}");
    assert!(
        out.contains("log_format = \"json\"  # config file"),
        "{out}"
    );
    assert!(out.contains("request_timeout = 30  # default"), "{out}");
    assert!(
        out.contains("postgres://santong:***@db.example/santong"),
        "{out}"
    );
    assert!(!out.contains("hunter2"));

    // Environment over file when no flag is given.
    let (_, out, _) = output(
        santong()
            .args(["config", "show", "--config"])
            .arg(&file)
            .env("SANTONG_BIND", "127.0.0.1:9200"),
    );
    assert!(
        out.contains("bind = \"127.0.0.1:9200\"  # environment"),
        "{out}"
    );
}

#[test]
fn bad_settings_name_the_setting_and_fail() {
    let (code, _, err) = output(santong().args(["config", "show", "--bind", "nowhere"]));
    assert_ne!(code, 0);
    assert!(err.contains("--bind"), "{err}");
    let (code, _, err) = output(
        santong()
            .args(["config", "show"])
            .env("SANTONG_LOG_FORMAT", "xml"),
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("xml") && err.contains("text") && err.contains("json"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let check = |content: &str, needles: &[&str]| {
        std::fs::write(&file, content).unwrap();
        let (code, _, err) = output(santong().args(["config", "show", "--config"]).arg(&file));
        assert_eq!(code, 2, "{content}: {err}");
        for n in needles {
            assert!(err.contains(n), "{content}: {err} lacks {n}");
        }
    };
    check("bind = \"localhost\"\n", &["setting `bind`", "IP:PORT"]);
    check("bnid = \"127.0.0.1:1\"\n", &["bnid", "bind"]);
    check("body_limit = \"5 parsecs\"\n", &["body_limit", "MiB"]);
    check("request_timeout = 0\n", &["request_timeout", "3600"]);
    check("bind = [\n", &["not valid"]);
    let (code, _, err) = output(santong().args(["config", "show", "--database-url", "mysql://x"]));
    assert_eq!(code, 2);
    assert!(
        err.contains("database_url") && err.contains("postgres://"),
        "{err}"
    );
    let (code, _, err) =
        output(santong().args(["config", "show", "--config", "/no/such/file.toml"]));
    assert_eq!(code, 2);
    assert!(err.contains("/no/such/file.toml"), "{err}");
}

#[test]
fn unreachable_database_names_the_url_without_password() {
    let (code, _, err) = output(santong().args([
        "migrate",
        "--database-url",
        "postgres://santong:hunter2@127.0.0.1:1/santong",
    ]));
    assert_eq!(code, 1);
    assert!(
        err.contains("postgres://santong:***@127.0.0.1:1/santong"),
        "{err}"
    );
    assert!(!err.contains("hunter2"));
    assert!(err.to_lowercase().contains("connect"), "{err}");
}

#[test]
fn demo_and_migrate_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let (code, out, err) = output(santong().arg("demo").arg("--data").arg(dir.path()));
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("440305"));
    }
    let (code, out, _) = output(santong().arg("migrate").arg("--data").arg(dir.path()));
    assert_eq!(code, 0);
    assert!(out.contains("migrations applied"));
}

struct Server {
    child: Child,
    addr: String,
    stdout: Vec<String>,
}

/// Starts `serve` on a free port and reads its start-up output up to the URL line.
fn start(data: &std::path::Path) -> Server {
    let mut child = santong()
        .args(["serve", "--bind", "127.0.0.1:0", "--log", "warn", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = vec![];
    let mut addr = String::new();
    for line in lines.map_while(Result::ok) {
        if let Some(u) = line.strip_prefix("Santong is running at http://") {
            addr = u.trim_end_matches('/').to_owned();
        }
        stdout.push(line);
        if !addr.is_empty() {
            break;
        }
    }
    assert!(!addr.is_empty(), "no URL printed: {stdout:?}");
    Server {
        child,
        addr,
        stdout,
    }
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[test]
fn first_start_prints_admin_once_and_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = start(dir.path());
    assert!(
        first.stdout.iter().any(|l| l.contains("user name: admin")),
        "{:?}",
        first.stdout
    );
    let pw_line = first
        .stdout
        .iter()
        .find(|l| l.contains("password:"))
        .unwrap()
        .clone();
    assert!(pw_line.split_whitespace().last().unwrap().len() >= 16);
    let res = http_get(&first.addr, "/healthz");
    assert!(res.starts_with("HTTP/1.1 200"), "{res}");
    let page = http_get(&first.addr, "/regions/440305");
    assert!(page.contains("南山区"));

    // A request in flight when SIGTERM arrives is still answered, then the process exits 0.
    let addr = first.addr.clone();
    let mut slow = TcpStream::connect(&addr).unwrap();
    write!(
        slow,
        "GET /regions/440000 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n"
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    sigterm(&first.child);
    std::thread::sleep(Duration::from_millis(200));
    write!(slow, "\r\n").unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "in-flight request dropped: {answer:?}"
    );
    let status = wait_exit(&mut first.child, Duration::from_secs(20)).expect("exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    // After shutdown nothing listens any more.
    assert!(TcpStream::connect(&addr).is_err());

    // Second start: no new password is printed.
    let mut second = start(dir.path());
    assert!(
        !second.stdout.iter().any(|l| l.contains("password")),
        "{:?}",
        second.stdout
    );
    sigterm(&second.child);
    assert!(
        wait_exit(&mut second.child, Duration::from_secs(20))
            .unwrap()
            .success()
    );
}
