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
    check("log = \"info,santong=loud\"\n", &["setting `log`", "info"]);
    check(
        "public_url = \"edu.example.cn\"\n",
        &["setting `public_url`", "https://"],
    );
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
    lines: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
}

/// Starts `serve` on a free port and reads its start-up output up to the URL line.
fn start(data: &std::path::Path) -> Server {
    start_with(data, &["--log", "warn"])
}

fn start_with(data: &std::path::Path, extra: &[&str]) -> Server {
    let mut child = santong()
        .args(["serve", "--bind", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = vec![];
    let mut addr = String::new();
    for line in lines.by_ref().map_while(Result::ok) {
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
        lines: Some(lines),
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

#[test]
fn a_start_that_cannot_listen_keeps_the_first_password() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let (code, out, err) = output(
        santong()
            .args(["serve", "--bind", &addr, "--data"])
            .arg(dir.path()),
    );
    assert_eq!(code, 1);
    assert!(err.contains(&addr), "{err}");
    assert!(!out.contains("password"), "{out}");
    drop(busy);
    let mut s = start(dir.path());
    assert!(
        s.stdout.iter().any(|l| l.contains("password:")),
        "{:?}",
        s.stdout
    );
    sigterm(&s.child);
    assert!(
        wait_exit(&mut s.child, Duration::from_secs(20))
            .unwrap()
            .success()
    );
}

#[test]
fn json_logs_carry_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start_with(dir.path(), &["--log-format", "json", "--log", "info"]);
    let res = http_get(&s.addr, "/healthz");
    let id = res
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: "))
        .expect("request id header")
        .trim()
        .to_owned();
    let lines = s.lines.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut found = None;
    while Instant::now() < deadline && found.is_none() {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200))
            && line.contains(&id)
        {
            found = Some(line);
        }
    }
    let line = found.expect("a log line with the request id");
    let v: serde_json::Value = serde_json::from_str(&line).expect("the log line is JSON");
    assert_eq!(v["span"]["request_id"], id.as_str(), "{line}");
    assert_eq!(v["span"]["path"], "/healthz");
    sigterm(&s.child);
    assert!(
        wait_exit(&mut s.child, Duration::from_secs(20))
            .unwrap()
            .success()
    );
}

#[test]
fn the_worker_inside_serve_and_santong_worker_run_jobs() {
    use santong_storage::jobs::{JobState, Jobs, NewJob};
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let wait_done = |kind: &str| {
        rt.block_on(async {
            let db = santong_storage::Db::open(&santong_storage::DbOptions::sqlite_in(dir.path()))
                .await
                .unwrap();
            let id = Jobs(&db)
                .enqueue(NewJob::new(kind, serde_json::json!({})))
                .await
                .unwrap()
                .id;
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut state = None;
            while Instant::now() < deadline {
                state = Jobs(&db).get(id).await.unwrap().and_then(|r| r.state());
                if state == Some(JobState::Done) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            db.close().await;
            state
        })
    };

    let mut s = start(dir.path());
    assert_eq!(wait_done("reference.regions"), Some(JobState::Done));
    sigterm(&s.child);
    assert!(
        wait_exit(&mut s.child, Duration::from_secs(20))
            .unwrap()
            .success()
    );

    let mut worker = santong()
        .args(["worker", "--log", "warn", "--data"])
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(wait_done("reference.regions"), Some(JobState::Done));
    sigterm(&worker);
    assert!(
        wait_exit(&mut worker, Duration::from_secs(20))
            .unwrap()
            .success()
    );
}

#[test]
fn user_commands_and_audit_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let run = |args: &[&str]| output(santong().args(args).args(["--data", &data]));

    let (code, out, err) = run(&[
        "user",
        "add",
        "--username",
        "Sec.Admin",
        "--role",
        "security_admin",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("created user sec.admin") && out.contains("password: "),
        "{out}"
    );
    let (code, out, err) = run(&[
        "user",
        "add",
        "--username",
        "wang.teacher",
        "--name",
        "王老师",
        "--password",
        "Kx9!long-enough",
        "--role",
        "teacher",
        "--at",
        "440305/1144030501",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("password: "),
        "a given password is not echoed: {out}"
    );

    // Bad input names what is wrong and changes nothing.
    let (code, _, err) = run(&["user", "add", "--username", "x", "--role", "teacher"]);
    assert_eq!(code, 1);
    assert!(err.contains("user name"), "{err}");
    let (code, _, err) = run(&["user", "add", "--username", "li.si", "--role", "wizard"]);
    assert_eq!(code, 1);
    assert!(err.contains("--role wizard"), "{err}");
    let (code, _, err) = run(&["user", "add", "--username", "li.si", "--at", "999999"]);
    assert_eq!(code, 1);
    assert!(err.contains("999999"), "{err}");
    let (code, _, err) = run(&["user", "add", "--username", "li.si", "--password", "123456"]);
    assert_eq!(code, 1);
    assert!(err.contains("policy") && err.contains("Common"), "{err}");
    let (code, _, err) = run(&["user", "add", "--username", "wang.teacher"]);
    assert_eq!(code, 1);
    assert!(err.contains("taken"), "{err}");

    // --password-stdin keeps the password out of the process list.
    let mut child = santong()
        .args([
            "user",
            "add",
            "--username",
            "zhao.teacher",
            "--password-stdin",
            "--data",
            &data,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Kx9!long-enough\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("password: "));
    let (code, out, err) = run(&["user", "reset-password", "--username", "wang.teacher"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("password: "));
    let (code, _, err) = run(&["user", "reset-password", "--username", "nobody"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");

    let (code, out, err) = run(&["audit", "verify"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("audit chain intact: 5 events"), "{out}");

    // Tamper with the file directly: verify names the event and fails.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let db = santong_storage::Db::open(&santong_storage::DbOptions::sqlite_in(dir.path()))
            .await
            .unwrap();
        db.execute_unchecked("UPDATE audit_event SET target = 'someone.else' WHERE seq = 2")
            .await
            .unwrap();
        db.close().await;
    });
    let (code, _, err) = run(&["audit", "verify"]);
    assert_eq!(code, 1);
    assert!(err.contains("broken at event 2"), "{err}");

    let (code, out, _) = run(&["audit", "prune", "--keep-days", "180"]);
    assert_eq!(code, 0);
    assert!(out.contains("removed 0"), "{out}");
}

#[test]
fn every_admin_action_has_a_command() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let run = |args: &[&str]| output(santong().args(args).args(["--data", &data]));
    let ok = |args: &[&str]| {
        let (code, out, err) = run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    ok(&[
        "user",
        "add",
        "--username",
        "wang.teacher",
        "--password",
        "Kx9!long-enough",
    ]);
    assert!(
        ok(&[
            "user",
            "grant",
            "--username",
            "wang.teacher",
            "--role",
            "teacher",
            "--at",
            "440305/1144030501"
        ])
        .contains("granted teacher at 1144030501")
    );
    assert!(
        ok(&[
            "user",
            "revoke",
            "--username",
            "wang.teacher",
            "--role",
            "teacher",
            "--at",
            "440305/1144030501"
        ])
        .contains("revoked")
    );
    let (code, _, err) = run(&[
        "user",
        "revoke",
        "--username",
        "wang.teacher",
        "--role",
        "teacher",
        "--at",
        "440305",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("holds no teacher"), "{err}");
    ok(&["user", "unlock", "--username", "wang.teacher"]);
    ok(&["user", "disable", "--username", "wang.teacher"]);
    ok(&["user", "enable", "--username", "wang.teacher"]);
    ok(&["user", "reset-mfa", "--username", "wang.teacher"]);
    let (code, _, err) = run(&["user", "disable", "--username", "nobody.here"]);
    assert_eq!(code, 1);
    assert!(err.contains("no account nobody.here"), "{err}");

    let shown = ok(&["policy", "show"]);
    assert!(
        shown.contains("\"min_length\": 8") && shown.contains("\"mfa_required_privileged\": true"),
        "{shown}"
    );
    assert!(
        ok(&["policy", "set", "password", r#"{"min_length": 12}"#]).contains("\"min_length\":12")
    );
    assert!(ok(&["policy", "show"]).contains("\"min_length\": 12"));
    let (code, _, err) = run(&["policy", "set", "password", r#"{"min_lenght": 12}"#]);
    assert_eq!(code, 1);
    assert!(err.contains("min_lenght"), "{err}");
    let (code, _, err) = run(&["policy", "set", "colour", "{}"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown policy"), "{err}");
    // The new policy applies: a 10-character password is now too short.
    let (code, _, err) = run(&[
        "user",
        "add",
        "--username",
        "li.si",
        "--password",
        "Kx9!longer",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("TooShort"), "{err}");
    // Every one of those actions is in the audit log, and the chain verifies.
    assert!(ok(&["audit", "verify"]).contains("audit chain intact"));
}

#[test]
fn user_import_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let file = dir.path().join("users.csv");
    std::fs::write(&file, "用户名,角色,行政区划代码,学校标识码\nzhang.san,学生,440305,1144030501\nbad name,学生,440305,\n").unwrap();
    let (code, out, err) = output(
        santong()
            .args(["user", "import"])
            .arg(&file)
            .args(["--data", &data]),
    );
    assert_eq!(code, 1);
    assert!(
        err.contains("line 3") && err.contains("no account was created"),
        "{err}"
    );
    assert!(!out.contains("zhang.san"));
    std::fs::write(&file, "用户名,角色,行政区划代码,学校标识码\nzhang.san,学生,440305,1144030501\nli.si,学生,440305,1144030501\n").unwrap();
    let (code, out, err) = output(
        santong()
            .args(["user", "import"])
            .arg(&file)
            .args(["--data", &data]),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("username,initial_password\nzhang.san,") && out.contains("\nli.si,"),
        "{out}"
    );
    assert!(err.contains("created 2 accounts"));
}

#[test]
fn oidc_clients_are_registered_and_listed_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap().to_owned();
    let run = |args: &[&str]| output(santong().args(args).args(["--data", &data]));
    let (code, out, err) = run(&[
        "oidc",
        "client",
        "add",
        "--name",
        "教务系统",
        "--redirect-uri",
        "https://jw.example.cn/cb",
        "--first-party",
    ]);
    assert_eq!(code, 0, "{err}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("client_id: "))
        .expect("the client id is printed")
        .to_owned();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("client_secret: "))
        .expect("a confidential client's secret is printed once");
    assert_eq!(secret.len(), 64);
    let (code, out, err) = run(&[
        "oidc",
        "client",
        "add",
        "--name",
        "家校通",
        "--redirect-uri",
        "cn.example.jxt:/oauth",
        "--public",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("client_secret"),
        "public clients have no secret"
    );
    let (code, _, err) = run(&[
        "oidc",
        "client",
        "add",
        "--name",
        "x",
        "--redirect-uri",
        "https://*.example.cn/cb",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("redirect_uris"), "{err}");
    let (code, list, _) = run(&["oidc", "client", "list"]);
    assert_eq!(code, 0);
    assert!(list.contains(&id) && list.contains("confidential") && list.contains("public"));
    assert!(!list.contains(secret), "the secret is never shown again");
    let (code, out, err) = run(&["oidc", "client", "new-secret", "--id", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("client_secret: ") && !out.contains(secret));
    let (code, _, err) = run(&[
        "oidc",
        "client",
        "update",
        "--id",
        &id,
        "--name",
        "教务系统 2",
        "--redirect-uri",
        "https://jw.example.cn/cb2",
        "--scope",
        "openid",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["oidc", "client", "disable", "--id", &id]);
    assert_eq!(code, 0, "{err}");
    let (_, list, _) = run(&["oidc", "client", "list"]);
    assert!(
        list.contains("disabled") && list.contains("jw.example.cn/cb2"),
        "{list}"
    );
    let (code, _, err) = run(&["oidc", "client", "enable", "--id", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["oidc", "client", "disable", "--id", "nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");
    let (code, out, _) = run(&["oidc", "rotate-key"]);
    assert_eq!(code, 0);
    assert!(out.contains("signing with key"));
    let (code, out, _) = run(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn students_are_imported_and_undone_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = output(santong().args(["demo", "--data"]).arg(&data));
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("pupils.csv");
    // One good row, one bad.
    let text = "姓名,性别,出生日期,民族,年级,监护人,与学生关系,监护人电话\r\n\
                王小一,男,2018/3/1,汉族,三年级,王大一,父亲,13800138001\r\n\
                坏行,X,2018-13-01,汉族,3,王大一,父亲,13800138001\r\n";
    std::fs::write(&file, text.as_bytes()).unwrap();
    let import = |extra: &[&str]| {
        let mut c = santong();
        c.args(["import", "students"])
            .arg(&file)
            .args(["--school", "1440305001", "--data"])
            .arg(&data)
            .args(extra)
            .env("LANG", "en_US.UTF-8");
        output(&mut c)
    };
    // All or nothing: refused with every problem named, exit code 1, nothing written.
    let (code, out, err) = import(&[]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("2 rows: 1 new, 0 updated, 0 unchanged, 1 with problems"),
        "{out}"
    );
    assert!(
        out.contains("Line 3:") && out.contains("Nothing was written."),
        "{out}"
    );
    // The valid rows, with the rejected ones saved; a batch id to undo.
    let rejects = dir.path().join("rejects.csv");
    let (code, out, err) = import(&["--valid-rows", "--rejects", rejects.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let saved = std::fs::read_to_string(&rejects).unwrap();
    assert!(
        saved.starts_with('\u{feff}') && saved.contains("坏行"),
        "{saved}"
    );
    let batch = out
        .split_whitespace()
        .find(|w| w.len() == 36 && w.matches('-').count() == 4)
        .expect("a batch id")
        .to_owned();
    // Again: unchanged.
    let (_, out, _) = import(&["--valid-rows"]);
    assert!(out.contains("1 unchanged"), "{out}");
    let (code, out, err) = output(
        santong()
            .args(["import", "undo", &batch, "--data"])
            .arg(&data)
            .env("LANG", "zh_CN.UTF-8"),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("已撤销"), "{out}");
    // A file that is not a table.
    std::fs::write(&file, b"\x89PNG\r\n\x1a\n\x00\x00").unwrap();
    let (code, _, err) = import(&[]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot be read as a table"), "{err}");
}

#[test]
fn oneroster_packages_are_written_and_read_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = output(santong().args(["demo", "--data"]).arg(&data));
    assert_eq!(code, 0, "{err}");
    let zip = dir.path().join("county.zip");
    let run = |args: &[&str]| {
        let mut c = santong();
        c.args(args)
            .arg("--data")
            .arg(&data)
            .env("LANG", "en_US.UTF-8");
        output(&mut c)
    };
    let (code, out, err) = run(&[
        "oneroster",
        "export",
        zip.to_str().unwrap(),
        "--region",
        "440305",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Wrote") && out.contains("users"), "{out}");
    // Read back by the command line (which manages every school): nothing changes.
    let (code, out, err) = run(&["oneroster", "import", zip.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("0 classes opened") && out.contains("0 placements, 0 ended"),
        "{out}"
    );
    assert!(out.contains("0 rows rejected"), "{out}");
    // A folder without a manifest is refused with its reason.
    let feed = dir.path().join("feed");
    std::fs::create_dir(&feed).unwrap();
    std::fs::write(feed.join("orgs.csv"), "sourcedId,name,type\n").unwrap();
    let (code, _, err) = run(&["oneroster", "import", feed.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("no manifest.csv"), "{err}");
}

#[test]
fn staff_are_imported_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, _, err) = output(santong().args(["demo", "--data"]).arg(&data));
    assert_eq!(code, 0, "{err}");
    let file = dir.path().join("staff.csv");
    // 44030519850601011 and its check character.
    let body17 = "44030519850601011";
    let weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body17
        .bytes()
        .zip(weights)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    let check = b"10X98765432"[(sum % 11) as usize] as char;
    std::fs::write(
        &file,
        format!(
            "姓名,性别,出生日期,身份证号,教师资格,职称,岗位类别\r\n\
             李老师,男,1985-06-01,{body17}{check},小学教师资格,一级教师,专任教师\r\n"
        ),
    )
    .unwrap();
    let run = || {
        let mut c = santong();
        c.args(["import", "teachers"])
            .arg(&file)
            .args(["--school", "1440305001", "--data"])
            .arg(&data)
            .env("LANG", "en_US.UTF-8");
        output(&mut c)
    };
    let (code, out, err) = run();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 rows: 1 new"), "{out}");
    let (code, out, _) = run();
    assert_eq!(code, 0);
    assert!(out.contains("1 unchanged"), "{out}");
}
