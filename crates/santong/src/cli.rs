//! Admin commands for scripted provisioning: every admin action of the pages has a command here.
//! They act as `cli` in the audit log (an operator with shell access to the server).

use anyhow::{Context, bail};
use santong_domain::identity::{Node, Role, SchoolCode};
use santong_domain::region::RegionCode;
use santong_storage::Db;
use santong_storage::audit::{self, Verification};
use santong_storage::identity::{Actor, Identity, IdentityError};
use santong_storage::regions::Regions;

use santong_storage::imports;

use crate::{
    AuditAction, ClientAction, ImportAction, OidcAction, OnerosterAction, PolicyAction, UserAction,
};

/// `440305` → region; `440305/1144030501` → school in that county; `000000` or nothing → nation.
async fn parse_at(db: &Db, at: Option<&str>) -> anyhow::Result<Node> {
    let Some(at) = at
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "000000")
    else {
        return Ok(Node::Nation);
    };
    let (region, school) = match at.split_once('/') {
        Some((r, s)) => (r, Some(s)),
        None => (at, None),
    };
    let code = RegionCode::parse(region).map_err(|e| anyhow::anyhow!("--at {at}: {e}"))?;
    if Regions(db).get(code).await?.is_none() {
        bail!("--at {at}: no current region has the code {code}");
    }
    match school {
        None => Ok(Node::Region(code)),
        Some(s) => {
            let school = SchoolCode::parse(s)
                .with_context(|| format!("--at {at}: a school code has ten digits"))?;
            if code.is_province_shaped() || code.is_prefecture_shaped() {
                bail!(
                    "--at {at}: a school lies in a county; give the county's code before the slash"
                );
            }
            Ok(Node::School {
                code: school,
                county: code,
            })
        }
    }
}

fn explain_ref(e: &IdentityError) -> String {
    match e {
        IdentityError::Password(problems) => {
            let list: Vec<_> = problems.iter().map(|p| format!("{p:?}")).collect();
            format!("the password does not meet the policy: {}", list.join(", "))
        }
        other => other.to_string(),
    }
}

fn explain(e: IdentityError) -> anyhow::Error {
    anyhow::anyhow!(explain_ref(&e))
}

pub async fn user(db: &Db, action: &UserAction) -> anyhow::Result<()> {
    let id = Identity(db);
    match action {
        UserAction::Add {
            username,
            name,
            password,
            password_stdin,
            role,
            at,
            ..
        } => {
            let password = if *password_stdin {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .context("reading the password from standard input")?;
                Some(line.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                password.clone()
            };
            let node = parse_at(db, at.as_deref()).await?;
            let role = role
                .as_deref()
                .map(|r| Role::parse(r).with_context(|| format!("--role {r}: unknown role")))
                .transpose()?;
            let (system_role, grant) = match role {
                Some(r) if r.is_admin_duty() => (Some(r), None),
                Some(r) => (None, Some((r, node))),
                None => (None, None),
            };
            let new = santong_storage::identity::NewUser {
                username: username.clone(),
                display_name: name.clone().unwrap_or_else(|| username.clone()),
                password,
                home: if system_role.is_some() {
                    Node::Nation
                } else {
                    node
                },
                system_role,
                grant,
            };
            let (uid, generated) = id.create_user(Actor::Cli, new).await.map_err(explain)?;
            println!(
                "created user {} ({uid})",
                username.trim().to_ascii_lowercase()
            );
            if let Some(pw) = generated {
                println!("password: {pw}");
            }
            println!("the password must be changed at first sign-in");
        }
        UserAction::Grant {
            username, role, at, ..
        }
        | UserAction::Revoke {
            username, role, at, ..
        } => {
            let uid = user_id(&id, username).await?;
            let node = parse_at(db, at.as_deref()).await?;
            let role = Role::parse(role).with_context(|| format!("--role {role}: unknown role"))?;
            if matches!(action, UserAction::Grant { .. }) {
                id.grant(Actor::Cli, uid, role, node)
                    .await
                    .map_err(explain)?;
                println!("granted {role} at {} to {username}", node.code());
            } else {
                let grant = id
                    .grants_of(uid)
                    .await?
                    .into_iter()
                    .find(|g| g.role == role.as_str() && g.node_code == node.code())
                    .with_context(|| format!("{username} holds no {role} at {}", node.code()))?;
                id.revoke_grant(Actor::Cli, uid, grant.id)
                    .await
                    .map_err(explain)?;
                println!("revoked {role} at {} from {username}", node.code());
            }
        }
        UserAction::Import { file, .. } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            match id.import_users(Actor::Cli, &bytes).await {
                Ok(created) => {
                    println!("username,initial_password");
                    for (name, pw) in &created {
                        println!("{name},{}", pw.as_deref().unwrap_or(""));
                    }
                    eprintln!(
                        "created {} accounts; each must change its password at first sign-in",
                        created.len()
                    );
                }
                Err(rows) => {
                    for (line, e) in &rows {
                        eprintln!("line {line}: {}", explain_ref(e));
                    }
                    bail!("{} rows refused; no account was created", rows.len());
                }
            }
        }
        UserAction::Unlock { username, .. } => {
            id.unlock(Actor::Cli, user_id(&id, username).await?)
                .await
                .map_err(explain)?;
            println!("unlocked {username}");
        }
        UserAction::Disable { username, .. } | UserAction::Enable { username, .. } => {
            let disable = matches!(action, UserAction::Disable { .. });
            id.set_disabled(Actor::Cli, user_id(&id, username).await?, disable)
                .await
                .map_err(explain)?;
            println!(
                "{} {username}",
                if disable { "disabled" } else { "enabled" }
            );
        }
        UserAction::ResetMfa { username, .. } => {
            id.mfa_reset(Actor::Cli, user_id(&id, username).await?)
                .await
                .map_err(explain)?;
            println!("removed the second factor of {username}");
        }
        UserAction::ResetPassword {
            username, password, ..
        } => {
            let pw = id
                .reset_password_by_name(username, password.as_deref())
                .await
                .map_err(explain)?;
            if password.is_none() {
                println!("password: {pw}");
            }
            println!("password reset for {username}; it must be changed at next sign-in");
        }
    }
    Ok(())
}

pub async fn audit(db: &Db, action: &AuditAction) -> anyhow::Result<()> {
    match action {
        AuditAction::Verify { .. } => match audit::verify(db).await? {
            Verification::Intact { events, from_seq } => {
                println!("audit chain intact: {events} events verified after event {from_seq}");
            }
            Verification::Broken { seq, reason } => {
                bail!("audit chain broken at event {seq}: {reason}");
            }
        },
        AuditAction::Prune { keep_days, .. } => {
            // The Cybersecurity Law (art. 21) asks for at least six months of logs.
            if *keep_days < 180 {
                bail!("--keep-days {keep_days}: the audit log is kept at least 180 days");
            }
            let removed = audit::prune(db, *keep_days).await?;
            println!(
                "removed {removed} audit events older than {keep_days} days; a checkpoint keeps the chain verifiable"
            );
        }
    }
    Ok(())
}

pub async fn oidc(db: &Db, action: &OidcAction) -> anyhow::Result<()> {
    use santong_storage::oidc::{ClientSpec, Oidc};
    let oidc = Oidc(db);
    match action {
        OidcAction::RotateKey { .. } => {
            let key = oidc.rotate_key(Actor::Cli).await.map_err(explain)?;
            println!("signing with key {} from now on", key.kid);
        }
        OidcAction::Client {
            action:
                ClientAction::Update {
                    id,
                    name,
                    redirect_uris,
                    post_logout_uris,
                    backchannel_logout_uri,
                    first_party,
                    scopes,
                    ..
                },
        } => {
            let spec = ClientSpec {
                name: name.clone(),
                redirect_uris: redirect_uris.clone(),
                post_logout_uris: post_logout_uris.clone(),
                backchannel_logout_uri: backchannel_logout_uri.clone(),
                first_party: *first_party,
                scopes: scopes.clone(),
            };
            oidc.update_client(Actor::Cli, id, &spec)
                .await
                .map_err(explain)?;
            println!("updated {id}");
        }
        OidcAction::Client {
            action: ClientAction::NewSecret { id, .. },
        } => {
            let secret = oidc.rotate_secret(Actor::Cli, id).await.map_err(explain)?;
            println!("client_secret: {secret}");
            eprintln!("The old secret no longer works; this one is shown only now.");
        }
        OidcAction::Client {
            action: ClientAction::Disable { id, .. } | ClientAction::Enable { id, .. },
        } => {
            let disable = matches!(
                action,
                OidcAction::Client {
                    action: ClientAction::Disable { .. }
                }
            );
            oidc.set_client_disabled(Actor::Cli, id, disable)
                .await
                .map_err(explain)?;
            println!("{} {id}", if disable { "disabled" } else { "enabled" });
        }
        OidcAction::Client {
            action: ClientAction::List { .. },
        } => {
            println!("client id\ttype\tfirst-party\tstatus\tname\tredirect URIs");
            for c in oidc.clients().await? {
                let kind = if c.service_user_id.is_some() {
                    "service"
                } else if c.is_public() {
                    "public"
                } else {
                    "confidential"
                };
                println!(
                    "{}\t{kind}\t{}\t{}\t{}\t{}",
                    c.id,
                    if c.first_party { "yes" } else { "no" },
                    if c.disabled_at.is_some() {
                        "disabled"
                    } else {
                        "active"
                    },
                    c.name,
                    c.redirect_uris().collect::<Vec<_>>().join(" ")
                );
            }
        }
        OidcAction::Client {
            action:
                ClientAction::Add {
                    name,
                    redirect_uris,
                    post_logout_uris,
                    backchannel_logout_uri,
                    public,
                    first_party,
                    service,
                    scopes,
                    ..
                },
        } => {
            let spec = ClientSpec {
                name: name.clone(),
                redirect_uris: redirect_uris.clone(),
                post_logout_uris: post_logout_uris.clone(),
                backchannel_logout_uri: backchannel_logout_uri.clone(),
                first_party: *first_party,
                scopes: scopes.clone(),
            };
            let (row, secret) = oidc
                .add_client(Actor::Cli, &spec, *public, *service)
                .await
                .map_err(explain)?;
            println!("client_id: {}", row.id);
            if let Some(s) = secret {
                println!("client_secret: {s}");
                eprintln!("The secret is shown only now; store it in the application's settings.");
            }
            if let Some(uid) = row.service_user_id {
                eprintln!(
                    "Service account svc-{} ({uid}): grant it roles with `santong user grant` to \
                     let the client read records.",
                    row.id
                );
            }
        }
    }
    Ok(())
}

async fn user_id(id: &Identity<'_>, username: &str) -> anyhow::Result<uuid::Uuid> {
    let name = santong_domain::identity::parse_username(username)
        .with_context(|| format!("'{username}' is not a valid user name"))?;
    Ok(id
        .user_by_username(&name)
        .await?
        .with_context(|| format!("no account {name}"))?
        .id)
}

pub async fn policy(db: &Db, action: &PolicyAction) -> anyhow::Result<()> {
    use santong_domain::identity::{PasswordPolicy, SessionPolicy, ThrottlePolicy};
    use santong_storage::identity::{password_policy, session_policy, throttle_policy};
    match action {
        PolicyAction::Show { .. } => {
            let all = serde_json::json!({
                "password": password_policy(db).await?,
                "throttle": throttle_policy(db).await?,
                "session": session_policy(db).await?,
                "transfer": santong_storage::identity::transfer_policy(db).await?,
                "quality": santong_storage::quality::policy(db).await?,
            });
            println!("{}", serde_json::to_string_pretty(&all)?);
        }
        PolicyAction::Set { kind, json, .. } => {
            // Parse into the typed policy first: unknown fields and wrong types are refused.
            let normalised = match kind.as_str() {
                "password" => {
                    serde_json::to_string(&serde_json::from_str::<PasswordPolicy>(json)?)?
                }
                "throttle" => {
                    serde_json::to_string(&serde_json::from_str::<ThrottlePolicy>(json)?)?
                }
                "session" => serde_json::to_string(&serde_json::from_str::<SessionPolicy>(json)?)?,
                "transfer" => {
                    let rules: santong_domain::lifecycle::TransferPolicy =
                        serde_json::from_str(json)?;
                    if let Some(bad) = rules
                        .no_graduating_year_provinces
                        .iter()
                        .find(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
                    {
                        bail!("'{bad}' is not a two-digit province code (44 for 广东省)");
                    }
                    serde_json::to_string(&rules)?
                }
                "quality" => {
                    let rules: santong_domain::quality::QualityPolicy = serde_json::from_str(json)?;
                    if let Some(p) = rules.problems().first() {
                        bail!(santong_web::i18n::Tr::new(cli_lang()).t(p));
                    }
                    serde_json::to_string(&rules)?
                }
                other => {
                    bail!(
                        "unknown policy '{other}': use password, throttle, session, transfer or quality"
                    )
                }
            };
            santong_storage::identity::set_policy(db, kind, &normalised).await?;
            println!("policy.{kind} = {normalised}");
        }
    }
    Ok(())
}

/// The language of the command line's messages: `LANG` / `LC_ALL` naming Chinese, else English.
fn cli_lang() -> santong_web::i18n::Lang {
    let env = std::env::var("LC_ALL")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| std::env::var("LANG").ok())
        .unwrap_or_default();
    if env.starts_with("zh") {
        santong_web::i18n::Lang::ZhCn
    } else {
        santong_web::i18n::Lang::En
    }
}

/// Draws a progress bar on standard error while `progress` runs (on a terminal; elsewhere a line
/// per tenth, so logs stay short).
fn progress_bar(progress: std::sync::Arc<imports::Progress>) -> tokio::task::JoinHandle<()> {
    use std::io::{IsTerminal, Write};
    tokio::spawn(async move {
        let tty = std::io::stderr().is_terminal();
        let mut last_tenth = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let f = progress.fraction();
            if tty {
                let done = (f * 30.0) as usize;
                eprint!(
                    "\r[{}{}] {:>3}%",
                    "#".repeat(done),
                    " ".repeat(30 - done.min(30)),
                    (f * 100.0) as u32
                );
                let _ = std::io::stderr().flush();
            } else if (f * 10.0) as u32 > last_tenth {
                last_tenth = (f * 10.0) as u32;
                eprintln!("{}%", last_tenth * 10);
            }
        }
    })
}

pub async fn import(db: &Db, action: &ImportAction) -> anyhow::Result<()> {
    let lang = cli_lang();
    let tr = santong_web::i18n::Tr::new(lang);
    let store = imports::Imports(db);
    match action {
        ImportAction::Students { sheet, school, .. }
        | ImportAction::Teachers { sheet, school, .. }
        | ImportAction::Classes { sheet, school, .. }
        | ImportAction::Schools {
            sheet,
            county: school,
            ..
        }
        | ImportAction::Conditions {
            sheet,
            county: school,
            ..
        } => {
            let crate::SheetArgs {
                file,
                valid_rows,
                dry_run,
                rejects,
            } = sheet;
            let kind = match action {
                ImportAction::Teachers { .. } => imports::Kind::Teachers,
                ImportAction::Classes { .. } => imports::Kind::Classes,
                ImportAction::Schools { .. } => imports::Kind::Schools,
                ImportAction::Conditions { .. } => imports::Kind::Conditions,
                _ => imports::Kind::Students,
            };
            let limits = santong_storage::sheet::Limits::default();
            let progress = imports::Progress::new();
            let bar = progress_bar(progress.clone());
            let mode = if *valid_rows {
                imports::Mode::Valid
            } else {
                imports::Mode::All
            };
            let outcome = if *dry_run {
                let place =
                    if kind.county_level() {
                        imports::Place::County(RegionCode::parse(school).map_err(|_| {
                            anyhow::anyhow!("{school}: {}", tr.t("student-bad-region"))
                        })?)
                    } else {
                        imports::Place::School(
                            santong_storage::registry::Registry(db)
                                .school(&santong_domain::identity::Scope::everything(), school)
                                .await?
                                .with_context(|| format!("no school has the code {school}"))?,
                        )
                    };
                store
                    .check_file(kind, &place, file, &limits, &progress, None)
                    .await
            } else {
                let name = file
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("import");
                store
                    .import_file(
                        Actor::Cli,
                        kind,
                        school,
                        file,
                        name,
                        mode,
                        &limits,
                        &progress,
                    )
                    .await
            };
            bar.abort();
            eprintln!();
            let outcome =
                outcome.map_err(|e| anyhow::anyhow!(santong_web::imports::error_text(&tr, &e)))?;
            let written = outcome.committed;
            let t = outcome.tally;
            println!(
                "{}",
                tr.f(
                    "import-cli-summary",
                    &[
                        ("rows", santong_web::i18n::n(t.rows as f64)),
                        ("new", santong_web::i18n::n(t.new as f64)),
                        ("updated", santong_web::i18n::n(t.updated as f64)),
                        ("unchanged", santong_web::i18n::n(t.unchanged as f64)),
                        ("rejected", santong_web::i18n::n(t.rejected as f64)),
                    ]
                )
            );
            for r in &outcome.rejects {
                println!(
                    "{}",
                    santong_web::imports::reject_line(&tr, r, &outcome.headers)
                );
            }
            if let Some(path) = rejects {
                let rows = match outcome.batch {
                    Some(b) => {
                        let everything = santong_domain::identity::Scope::everything();
                        let mut all: Vec<imports::Reject> = vec![];
                        loop {
                            let after = all.last().map_or(0, |r| r.line);
                            let page = store.rejects(&everything, b, after, 5000).await?;
                            if page.is_empty() {
                                break;
                            }
                            all.extend(page);
                        }
                        all
                    }
                    None => outcome.rejects.clone(),
                };
                let mut w = std::fs::File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                santong_web::imports::write_rejects_csv(&mut w, &tr, &outcome.headers, &rows)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            match (written, outcome.batch) {
                (true, Some(b)) => println!(
                    "{}",
                    tr.f(
                        "import-cli-batch",
                        &[("batch", santong_web::i18n::s(b.to_string()))]
                    )
                ),
                _ => println!("{}", tr.t("import-cli-nothing-written")),
            }
            if t.rejected > 0 && !written {
                bail!(tr.t("import-rejected-all"));
            }
            Ok(())
        }
        ImportAction::Undo { batch, .. } => {
            let scope = santong_domain::identity::Scope::everything();
            store
                .undo(Actor::Cli, &scope, *batch)
                .await
                .map_err(|e| anyhow::anyhow!(santong_web::imports::error_text(&tr, &e)))?;
            println!("{}", tr.t("import-undone"));
            Ok(())
        }
    }
}

pub async fn oneroster(db: &Db, action: &OnerosterAction) -> anyhow::Result<()> {
    use santong_storage::oneroster::{OneRoster, Source, Target};
    let tr = santong_web::i18n::Tr::new(cli_lang());
    let or = OneRoster(db);
    match action {
        OnerosterAction::Export {
            out,
            school,
            region,
            year,
            full,
            ..
        } => {
            let target = match (school, region) {
                (Some(s), _) => Target::School(s.clone()),
                (None, Some(r)) => Target::Region(
                    RegionCode::parse(r)
                        .map_err(|_| anyhow::anyhow!("{r}: {}", tr.t("student-bad-region")))?,
                ),
                (None, None) => bail!("--school or --region"),
            };
            let year =
                year.map_or_else(
                    || {
                        santong_domain::registry::SchoolYear::of_date(
                            santong_storage::registry::today(),
                        )
                    },
                    santong_domain::registry::SchoolYear,
                );
            if let Some(p) = full {
                santong_storage::students::check_purpose(p)
                    .map_err(|_| anyhow::anyhow!(tr.t("student-purpose-required")))?;
            }
            let file = std::fs::File::create(out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let counts = or
                .export(
                    Actor::Cli,
                    &santong_domain::identity::Scope::everything(),
                    &target,
                    year,
                    full.as_deref(),
                    std::io::BufWriter::new(file),
                )
                .await
                .map_err(|e| anyhow::anyhow!(santong_web::oneroster::error_text(&tr, &e)))?;
            println!(
                "{}",
                tr.f(
                    "or-cli-exported",
                    &[
                        ("orgs", santong_web::i18n::n(counts.orgs as f64)),
                        ("classes", santong_web::i18n::n(counts.classes as f64)),
                        ("users", santong_web::i18n::n(counts.users as f64)),
                        (
                            "enrollments",
                            santong_web::i18n::n(counts.enrollments as f64)
                        ),
                        ("file", santong_web::i18n::s(out.display().to_string())),
                    ]
                )
            );
            Ok(())
        }
        OnerosterAction::Import {
            package,
            valid_rows,
            dry_run,
            ..
        } => {
            let source = if package.is_dir() {
                Source::Dir(package)
            } else {
                Source::Zip(package)
            };
            let report = or
                .import(Actor::Cli, source, *valid_rows, *dry_run)
                .await
                .map_err(|e| anyhow::anyhow!(santong_web::oneroster::error_text(&tr, &e)))?;
            println!("{}", santong_web::oneroster::summary(&tr, &report));
            for r in &report.rejected {
                println!(
                    "{}",
                    tr.f(
                        "or-cli-reject",
                        &[
                            ("file", santong_web::i18n::s(r.file.to_owned())),
                            ("line", santong_web::i18n::n(r.line as f64)),
                            ("problem", santong_web::i18n::s(tr.t(r.key))),
                            ("id", santong_web::i18n::s(r.value.clone())),
                        ]
                    )
                );
            }
            if !report.committed {
                println!("{}", tr.t("import-cli-nothing-written"));
            }
            if !report.rejected.is_empty() && !report.committed && !dry_run {
                bail!(tr.t("import-rejected-all"));
            }
            Ok(())
        }
    }
}
