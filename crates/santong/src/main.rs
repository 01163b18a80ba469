//! The `santong` binary: one executable for every tier.
//!
//! `serve` runs the web application (and a job worker inside it), `worker` runs only a worker for
//! a separate node, `migrate` applies migrations, `demo` seeds demo data, `config show` prints the
//! effective settings.

mod cli;
mod config;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use santong_storage::jobs::{JobContext, JobError, JobFuture, Worker, WorkerOptions};
use santong_storage::{Db, demo, imports, reference, users::Users};
use tokio::sync::watch;

use crate::config::{ConfigArgs, LogFormat, Settings};

#[derive(Debug, Parser)]
#[command(
    name = "santong",
    version,
    about = "三通 Santong: education informatization platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the web application (migrates first; creates the first administrator on first start).
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Seed the demo data before serving.
        #[arg(long)]
        demo: bool,
        /// Do not run a job worker inside this process (run `santong worker` elsewhere).
        #[arg(long)]
        no_worker: bool,
    },
    /// Run only a job worker (a separate worker node).
    Worker {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Apply database migrations and load reference data, then exit.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Seed demo data (idempotent).
    Demo {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Inspect settings.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Manage accounts from scripts (audited as `cli`).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Check or prune the security audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Show or change the policies (passwords, sign-in throttle, sessions and MFA, transfer rules).
    Policy {
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Single sign-on: register applications (OpenID Connect clients), rotate the signing key.
    Oidc {
        #[command(subcommand)]
        action: OidcAction,
    },
    /// Import records from a spreadsheet (CSV in UTF-8 or GB18030, XLSX or XLS), audited as `cli`.
    Import {
        #[command(subcommand)]
        action: ImportAction,
    },
    /// OneRoster 1.2 CSV packages for LMSs and rostering tools, audited as `cli`.
    Oneroster {
        #[command(subcommand)]
        action: OnerosterAction,
    },
}

#[derive(Debug, Subcommand)]
enum OnerosterAction {
    /// Write a school's or a region's package (a zip) for the current school year.
    Export {
        #[command(flatten)]
        config: ConfigArgs,
        /// The zip to write.
        out: std::path::PathBuf,
        /// One school's 10-digit code.
        #[arg(
            long,
            value_name = "CODE",
            conflicts_with = "region",
            required_unless_present = "region"
        )]
        school: Option<String>,
        /// Every open school of a region (GB/T 2260 code: county, city or province).
        #[arg(long, value_name = "CODE")]
        region: Option<String>,
        /// School year, as its first calendar year (2025 = 2025–26); default: the current one.
        #[arg(long, value_name = "YEAR")]
        year: Option<i32>,
        /// Include student numbers (which hold ID numbers) and birth dates, for this purpose
        /// (recorded in the audit log).
        #[arg(long, value_name = "PURPOSE")]
        full: Option<String>,
    },
    /// Read a package (a zip, or a folder of its CSV files): classes and class membership
    /// are updated; the student register is not changed.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        package: std::path::PathBuf,
        /// Write the valid rows and report the rejected ones (default: nothing unless every row
        /// is valid).
        #[arg(long)]
        valid_rows: bool,
        /// Check and report, writing nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What every spreadsheet import takes besides where it goes.
#[derive(Debug, clap::Args)]
struct SheetArgs {
    /// The spreadsheet (CSV in UTF-8 or GB18030, XLSX or XLS); its first row names the columns,
    /// in Chinese or English.
    file: std::path::PathBuf,
    /// Write the valid rows and report the rejected ones (default: nothing unless every row is
    /// valid).
    #[arg(long)]
    valid_rows: bool,
    /// Check every row and report, writing nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also write the rejected rows, with their problems, to this CSV file.
    #[arg(long, value_name = "FILE")]
    rejects: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
enum ImportAction {
    /// Students of one school: new rows are enrolled, known ones (by ID number, national
    /// student number, or name, birth date and sex) updated, in one transaction as a batch.
    Students {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        sheet: SheetArgs,
        /// The school's 10-digit code.
        #[arg(long, value_name = "CODE")]
        school: String,
    },
    /// Staff of one school: people new to the register are recorded and appointed, those on
    /// its staff (by ID number) updated, those who left appointed again; in one transaction as
    /// a batch.
    Teachers {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        sheet: SheetArgs,
        /// The school's 10-digit code.
        #[arg(long, value_name = "CODE")]
        school: String,
    },
    /// Classes of one school (学年, 年级, 班级名称, 班主任): new ones opened, existing ones (same
    /// year, grade and name) given the head teacher the sheet names; in one transaction.
    Classes {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        sheet: SheetArgs,
        /// The school's 10-digit code.
        #[arg(long, value_name = "CODE")]
        school: String,
    },
    /// A county's schools and teaching points (学校标识码, 学校名称, 办学类型, 城乡类型 …): new
    /// codes opened, known schools of the county updated; in one transaction.
    Schools {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        sheet: SheetArgs,
        /// The county's 6-digit code (GB/T 2260).
        #[arg(long, value_name = "CODE")]
        county: String,
    },
    /// A county's school conditions (学校标识码, 学年, 教室数, 宽带接入方式 …), one row per school
    /// and school year: recorded or updated; in one transaction.
    Conditions {
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        sheet: SheetArgs,
        /// The county's 6-digit code (GB/T 2260).
        #[arg(long, value_name = "CODE")]
        county: String,
    },
    /// Undo a committed import batch (by the id `import students` printed).
    Undo {
        #[command(flatten)]
        config: ConfigArgs,
        batch: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
enum OidcAction {
    /// Registered applications.
    Client {
        #[command(subcommand)]
        action: ClientAction,
    },
    /// Sign with a new key from now on; the old key stays published for an hour.
    RotateKey {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ClientAction {
    /// Register an application; prints its client id and, for a confidential client, its
    /// secret (shown once).
    Add {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        name: String,
        /// Where codes may be sent, matched exactly (repeat for several).
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        /// Where the browser may return after signing out (repeat for several).
        #[arg(long = "post-logout-uri", value_name = "URI")]
        post_logout_uris: Vec<String>,
        /// Receives logout tokens when a user's session ends.
        #[arg(long, value_name = "URI")]
        backchannel_logout_uri: Option<String>,
        /// A browser or mobile app without a secret; it must use PKCE.
        #[arg(long)]
        public: bool,
        /// One of the platform's own applications: no consent screen.
        #[arg(long)]
        first_party: bool,
        /// Give the client a service account for the client-credentials grant.
        #[arg(long)]
        service: bool,
        /// Scopes it may ask for (repeat); default `openid profile`. Besides `openid profile
        /// email phone offline_access santong`, API permissions such as `users_view`.
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// List registered applications.
    List {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Replace an application's settings (the flags of `add`; what is not given is cleared).
    Update {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long = "redirect-uri", value_name = "URI")]
        redirect_uris: Vec<String>,
        #[arg(long = "post-logout-uri", value_name = "URI")]
        post_logout_uris: Vec<String>,
        #[arg(long, value_name = "URI")]
        backchannel_logout_uri: Option<String>,
        #[arg(long)]
        first_party: bool,
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
    },
    /// Issue a new secret for a confidential application (printed once; the old one stops).
    NewSecret {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        id: String,
    },
    /// Disable an application: its tokens stop working and its users are signed out of it.
    Disable {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        id: String,
    },
    /// Enable a disabled application again.
    Enable {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        id: String,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Create an account; prints the generated password when none is given.
    Add {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
        /// Real name shown in pages (defaults to the user name).
        #[arg(long)]
        name: Option<String>,
        /// Initial password (must meet the policy); generated when omitted. Visible to other
        /// users of the machine in the process list: prefer --password-stdin.
        #[arg(long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the initial password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// A role: official, school_admin, teacher, student, parent, provider, reviewer,
        /// or an admin duty: security_admin, audit_admin, system_admin.
        #[arg(long)]
        role: Option<String>,
        /// Where the account belongs and the role applies: a region code, or
        /// COUNTY/SCHOOLCODE for a school (e.g. 440305/1144030501); omitted = the nation.
        #[arg(long, value_name = "CODE")]
        at: Option<String>,
    },
    /// Set a new password (generated when omitted), to be changed at next sign-in.
    ResetPassword {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
        #[arg(long)]
        password: Option<String>,
    },
    /// Grant a role at a node (region code, or COUNTY/SCHOOLCODE).
    Grant {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long, value_name = "CODE")]
        at: Option<String>,
    },
    /// Revoke a role granted at a node.
    Revoke {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
        #[arg(long)]
        role: String,
        #[arg(long, value_name = "CODE")]
        at: Option<String>,
    },
    /// Create every account of a CSV list, or none; prints user names and initial passwords as CSV.
    Import {
        #[command(flatten)]
        config: ConfigArgs,
        /// CSV file (UTF-8): 用户名/username, 姓名/name, 角色/role, 行政区划代码/region,
        /// 学校标识码/school, 初始密码/password.
        file: std::path::PathBuf,
    },
    /// Clear the sign-in locks of an account.
    Unlock {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
    },
    /// Disable an account (signs it out everywhere).
    Disable {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
    },
    /// Enable a disabled account.
    Enable {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
    },
    /// Remove an account's second factor (lost phone); it enrols again at next sign-in.
    ResetMfa {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        username: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyAction {
    /// Print the password, throttle and session policies as JSON.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Replace one policy: `password`, `throttle`, `session` or `transfer`, with a JSON object
    /// (missing fields take their defaults).
    Set {
        #[command(flatten)]
        config: ConfigArgs,
        kind: String,
        json: String,
    },
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Recompute the hash chain; names the first broken link and exits 1 if there is one.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Remove events older than the retention period, keeping a checkpoint.
    Prune {
        #[command(flatten)]
        config: ConfigArgs,
        /// Days to keep (default 180: at least six months, as the Cybersecurity Law requires).
        #[arg(long, default_value_t = 180)]
        keep_days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Print the effective settings and where each comes from, with secrets redacted.
    Show {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // The flattened settings live in the (sub)subcommand's matches: that is where sources are read.
    let mut sub = &matches;
    while let Some((_, m)) = sub.subcommand() {
        sub = m;
    }
    let (args, command) = match &cli.command {
        Command::Serve { config, .. }
        | Command::Worker { config }
        | Command::Migrate { config }
        | Command::Demo { config }
        | Command::Config {
            action: ConfigAction::Show { config },
        }
        | Command::User {
            action:
                UserAction::Add { config, .. }
                | UserAction::ResetPassword { config, .. }
                | UserAction::Grant { config, .. }
                | UserAction::Revoke { config, .. }
                | UserAction::Unlock { config, .. }
                | UserAction::Disable { config, .. }
                | UserAction::Enable { config, .. }
                | UserAction::ResetMfa { config, .. }
                | UserAction::Import { config, .. },
        }
        | Command::Policy {
            action: PolicyAction::Show { config } | PolicyAction::Set { config, .. },
        }
        | Command::Audit {
            action: AuditAction::Verify { config } | AuditAction::Prune { config, .. },
        }
        | Command::Oidc {
            action:
                OidcAction::RotateKey { config }
                | OidcAction::Client {
                    action:
                        ClientAction::Add { config, .. }
                        | ClientAction::List { config }
                        | ClientAction::Update { config, .. }
                        | ClientAction::NewSecret { config, .. }
                        | ClientAction::Disable { config, .. }
                        | ClientAction::Enable { config, .. },
                },
        }
        | Command::Import {
            action:
                ImportAction::Students { config, .. }
                | ImportAction::Teachers { config, .. }
                | ImportAction::Classes { config, .. }
                | ImportAction::Schools { config, .. }
                | ImportAction::Conditions { config, .. }
                | ImportAction::Undo { config, .. },
        }
        | Command::Oneroster {
            action: OnerosterAction::Export { config, .. } | OnerosterAction::Import { config, .. },
        } => (config, &cli.command),
    };
    let settings = match Settings::resolve(args, sub) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("santong: {e}");
            return ExitCode::from(2);
        }
    };
    if let Command::Config { .. } = command {
        print!("{}", settings.show());
        return ExitCode::SUCCESS;
    }
    init_logging(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("santong: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("santong: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(settings: &Settings) {
    use tracing_subscriber::filter::Targets;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Validated in `Settings::resolve`; the fallback is unreachable in practice.
    let filter: Targets = settings
        .log
        .parse()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let registry = tracing_subscriber::registry().with(filter);
    match settings.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true),
            )
            .init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(false))
            .init(),
    }
}

async fn open_db(settings: &Settings) -> anyhow::Result<Db> {
    let db = Db::open(&settings.db_options()).await?;
    reference::ensure_regions(&db)
        .await
        .context("loading the region reference data")?;
    Ok(db)
}

async fn run(command: &Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Migrate { .. } => {
            let db = open_db(&settings).await?;
            println!(
                "migrations applied and reference data loaded: {}",
                db.url_redacted()
            );
            db.close().await;
        }
        Command::Demo { .. } => {
            let db = open_db(&settings).await?;
            let report = demo::seed(&db).await?;
            println!(
                "demo data ready: demo county {} ({}); {} schools opened, {} students enrolled, {} classes opened, {} transfers started, {} duplicate cases opened and {} teachers appointed now",
                demo::DEMO_COUNTY,
                if report.county_set {
                    "set now"
                } else {
                    "already set"
                },
                report.schools,
                report.students,
                report.classes,
                report.transfers,
                report.duplicates,
                report.teachers
            );
            db.close().await;
        }
        Command::Worker { .. } => {
            let stop = shutdown_signal();
            let db = open_db(&settings).await?;
            let (tx, rx) = watch::channel(false);
            let worker = tokio::spawn(worker(db.clone()).run(wait_for(rx)));
            stop.await;
            let _ = tx.send(true);
            worker.await.context("worker task")?;
            db.close().await;
        }
        Command::Serve {
            demo: with_demo,
            no_worker,
            ..
        } => serve(settings, *with_demo, *no_worker).await?,
        Command::Config { .. } => {}
        Command::User { action } => {
            let db = open_db(&settings).await?;
            let result = cli::user(&db, action).await;
            db.close().await;
            result?;
        }
        Command::Policy { action } => {
            let db = open_db(&settings).await?;
            let result = cli::policy(&db, action).await;
            db.close().await;
            result?;
        }
        Command::Audit { action } => {
            let db = open_db(&settings).await?;
            let result = cli::audit(&db, action).await;
            db.close().await;
            result?;
        }
        Command::Oidc { action } => {
            let db = open_db(&settings).await?;
            let result = cli::oidc(&db, action).await;
            db.close().await;
            result?;
        }
        Command::Import { action } => {
            let db = open_db(&settings).await?;
            let result = cli::import(&db, action).await;
            db.close().await;
            result?;
        }
        Command::Oneroster { action } => {
            let db = open_db(&settings).await?;
            let result = cli::oneroster(&db, action).await;
            db.close().await;
            result?;
        }
    }
    Ok(())
}

/// The worker with every job kind this build knows.
fn worker(db: Db) -> Worker {
    Worker::new(db, WorkerOptions::default())
        .register("reference.regions", reload_regions)
        .register(
            santong_web::oidc::BACKCHANNEL,
            santong_web::oidc::backchannel_logout,
        )
        .register(imports::CHECK_JOB, imports::check_job)
        .register(imports::COMMIT_JOB, imports::commit_job)
}

/// Reloads the embedded region lists (idempotent: it skips a version already loaded).
fn reload_regions(ctx: &JobContext) -> JobFuture<'_> {
    Box::pin(async move {
        ctx.progress(10).await?;
        reference::ensure_regions(&ctx.db)
            .await
            .map_err(|e| JobError::Failed(e.to_string()))?;
        ctx.progress(100).await
    })
}

async fn serve(settings: Settings, with_demo: bool, no_worker: bool) -> anyhow::Result<()> {
    santong_web::shell::warm_up();
    let db = open_db(&settings).await?;
    if with_demo {
        demo::seed(&db).await.context("seeding demo data")?;
    }
    // Bind before creating the administrator: a start that cannot listen must not consume the
    // one-time password.
    let listener = tokio::net::TcpListener::bind(settings.bind)
        .await
        .with_context(|| format!("cannot listen on {}", settings.bind))?;
    let addr = listener.local_addr()?;
    // Before anything announces that we are up: a SIGTERM from then on is a clean stop.
    let stop = shutdown_signal();
    let admin = Users(&db)
        .ensure_initial_admin()
        .await
        .context("creating the first administrator")?;
    if settings.public_url.is_none() {
        tracing::info!(
            "public_url is not set: single sign-on names its issuer after each request's Host \
             header; set public_url in production"
        );
    }
    let config = santong_web::WebConfig {
        public_url: settings.public_url.clone(),
        trusted_proxies: settings.trusted_proxies.clone(),
        body_limit: usize::try_from(settings.body_limit).unwrap_or(usize::MAX),
        upload_limit: usize::try_from(settings.upload_limit).unwrap_or(usize::MAX),
        request_timeout: settings.request_timeout,
    };
    let app = santong_web::router(santong_web::AppState::new(db.clone(), config));

    // Printed, not logged: the password is shown once to whoever started the server and is never
    // written to a log file.
    if let Some(a) = &admin {
        println!("First start: created the system administrator.");
        println!("  user name: {}", a.username);
        println!("  password:  {}", a.password);
        println!("  (shown only this once; you will be asked to change it at first sign-in)");
    }
    // Last line of start-up output: scripts wait for it.
    println!("Santong is running at http://{addr}/");
    tracing::info!(%addr, database = db.url_redacted(), "serving");

    let (tx, rx) = watch::channel(false);
    let worker_task =
        (!no_worker).then(|| tokio::spawn(worker(db.clone()).run(wait_for(rx.clone()))));
    // The peer address feeds the sign-in throttle and the audit log.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        stop.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = tx.send(true);
    })
    .await
    .context("server error")?;
    if let Some(t) = worker_task {
        // The worker finishes the job in hand; give it a bound so shutdown cannot hang.
        let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
    }
    db.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Registers SIGTERM and SIGINT handlers *now* (so a signal that arrives before the server loop
/// starts is not fatal) and returns the future that resolves on either.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    async move {
        let term = async {
            match term.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let int = async {
            match int.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = term => {}
            () = int => {}
        }
    }
}
