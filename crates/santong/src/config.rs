//! Process settings: flags, then `SANTONG_*` environment variables (both through clap), then the
//! TOML file named by `--config`, then defaults. Each effective value remembers where it came from,
//! for `santong config show`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Settings shared by every command that touches the database or serves.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Data directory: the SQLite database and the file store live here.
    #[arg(long = "data", env = "SANTONG_DATA", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "SANTONG_BIND", value_name = "ADDR")]
    pub bind: Option<SocketAddr>,
    /// postgres://user:password@host/db for PostgreSQL; default is SQLite in the data directory.
    #[arg(long, env = "SANTONG_DATABASE_URL", value_name = "URL")]
    pub database_url: Option<String>,
    /// TOML settings file.
    #[arg(long = "config", env = "SANTONG_CONFIG", value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Public URL of the platform (https:// turns on HSTS).
    #[arg(long, env = "SANTONG_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Largest accepted request body, e.g. 2MiB, 512KiB, 1000000.
    #[arg(long, env = "SANTONG_BODY_LIMIT", value_name = "SIZE", value_parser = parse_size)]
    pub body_limit: Option<u64>,
    /// Largest accepted spreadsheet upload for imports, e.g. 200MiB.
    #[arg(long, env = "SANTONG_UPLOAD_LIMIT", value_name = "SIZE", value_parser = parse_size)]
    pub upload_limit: Option<u64>,
    /// Reverse proxies whose `X-Forwarded-For` is believed, comma separated: addresses or
    /// blocks such as `10.0.0.0/8`. Without this, the client address is the TCP peer.
    #[arg(long, env = "SANTONG_TRUSTED_PROXIES", value_name = "LIST")]
    pub trusted_proxies: Option<String>,
    /// Seconds before a request is answered with a timeout.
    #[arg(long, env = "SANTONG_REQUEST_TIMEOUT", value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: Option<u64>,
    /// Maximum database connections (PostgreSQL).
    #[arg(long, env = "SANTONG_MAX_CONNECTIONS", value_name = "N", value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub max_connections: Option<u32>,
    /// Log line format.
    #[arg(long, env = "SANTONG_LOG_FORMAT", value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `info,santong_storage=debug`.
    #[arg(long, env = "SANTONG_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

/// The optional settings file. Unknown keys are refused so a typo never passes silently.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSettings {
    pub data: Option<PathBuf>,
    pub bind: Option<String>,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub body_limit: Option<toml::Value>,
    pub upload_limit: Option<toml::Value>,
    pub trusted_proxies: Option<Vec<String>>,
    pub request_timeout: Option<u64>,
    pub max_connections: Option<u32>,
    pub log_format: Option<LogFormat>,
    pub log: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env,
    File,
    Default,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Default => "default",
        }
    }
}

/// The effective settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data_dir: PathBuf,
    pub bind: SocketAddr,
    pub database_url: Option<String>,
    pub public_url: Option<String>,
    pub body_limit: u64,
    pub upload_limit: u64,
    pub trusted_proxies: Vec<santong_domain::net::IpNet>,
    pub request_timeout: Duration,
    pub max_connections: u32,
    pub log_format: LogFormat,
    pub log: String,
    pub config_file: Option<PathBuf>,
    pub sources: Vec<(&'static str, Source)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the settings file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the settings file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{key}` in {path}: {message}")]
    Invalid {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
}

const DEFAULT_LOG: &str = "info,sqlx=warn,tower_http=info";

/// Parses `2MiB`, `512KiB`, `10MB`, `1000` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!(
            "'{s}' is not a size: use a number of bytes or a number with KiB, MiB, GiB, KB, MB, GB"
        )
    })?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" | "k" => 1024,
        "mib" | "m" => 1024 * 1024,
        "gib" | "g" => 1024 * 1024 * 1024,
        "kb" => 1000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit: allowed are B, KiB, MiB, GiB, KB, MB, GB"
            ));
        }
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))?;
    if v == 0 {
        return Err("a size must be greater than zero".into());
    }
    Ok(v)
}

fn source_of(m: &ArgMatches, id: &str) -> Option<Source> {
    match m.value_source(id) {
        Some(ValueSource::CommandLine) => Some(Source::Flag),
        Some(ValueSource::EnvVariable) => Some(Source::Env),
        _ => None,
    }
}

impl Settings {
    /// Merges flags/environment (`args`, with their sources in `m`) over the file over defaults.
    pub fn resolve(args: &ConfigArgs, m: &ArgMatches) -> Result<Self, ConfigError> {
        let (file, path) = match &args.config_file {
            Some(p) => (load_file(p)?, p.clone()),
            None => (FileSettings::default(), PathBuf::new()),
        };
        let mut sources = vec![];
        macro_rules! pick {
            ($key:literal, $id:literal, $arg:expr, $file:expr, $default:expr) => {{
                match ($arg, $file) {
                    (Some(v), _) => {
                        sources.push(($key, source_of(m, $id).unwrap_or(Source::Flag)));
                        v
                    }
                    (None, Some(v)) => {
                        sources.push(($key, Source::File));
                        v
                    }
                    (None, None) => {
                        sources.push(($key, Source::Default));
                        $default
                    }
                }
            }};
        }
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            key,
            path: path.clone(),
            message,
        };
        let file_bind = file
            .bind
            .as_deref()
            .map(|b| {
                b.parse::<SocketAddr>().map_err(|_| {
                    invalid(
                        "bind",
                        format!("'{b}' is not an address: expected IP:PORT such as 127.0.0.1:8080"),
                    )
                })
            })
            .transpose()?;
        let size_of = |v: &Option<toml::Value>, name: &'static str| match v {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n > 0 => Ok(Some(n.unsigned_abs())),
            Some(toml::Value::String(s)) => parse_size(s).map(Some).map_err(|e| invalid(name, e)),
            Some(other) => Err(invalid(
                name,
                format!("{other:?} is not a size: use bytes or \"2MiB\""),
            )),
        };
        let file_limit = size_of(&file.body_limit, "body_limit")?;
        let file_upload_limit = size_of(&file.upload_limit, "upload_limit")?;
        if let Some(t) = file.request_timeout.filter(|t| !(1..=3600).contains(t)) {
            return Err(invalid(
                "request_timeout",
                format!("{t} is outside 1–3600 seconds"),
            ));
        }
        if let Some(c) = file.max_connections.filter(|c| !(2..=1000).contains(c)) {
            return Err(invalid("max_connections", format!("{c} is outside 2–1000")));
        }
        let database_url = match (&args.database_url, &file.database_url) {
            (Some(u), _) => {
                sources.push((
                    "database_url",
                    source_of(m, "database_url").unwrap_or(Source::Flag),
                ));
                Some(u.clone())
            }
            (None, Some(u)) => {
                sources.push(("database_url", Source::File));
                Some(u.clone())
            }
            (None, None) => {
                sources.push(("database_url", Source::Default));
                None
            }
        };
        let log: String = pick!(
            "log",
            "log",
            args.log.clone(),
            file.log.clone(),
            DEFAULT_LOG.to_owned()
        );
        if let Err(e) = log.parse::<tracing_subscriber::filter::Targets>() {
            return Err(ConfigError::Invalid {
                key: "log",
                path: path.clone(),
                message: format!(
                    "'{log}' is not a log filter ({e}): use a level such as info, or info,santong_storage=debug"
                ),
            });
        }
        let public_url: Option<String> = pick!(
            "public_url",
            "public_url",
            args.public_url.clone().map(Some),
            file.public_url.clone().map(Some),
            None
        );
        if let Some(u) = public_url.as_deref().filter(|u| {
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace))
        }) {
            return Err(ConfigError::Invalid {
                key: "public_url",
                path: path.clone(),
                message: format!("'{u}' is not a URL: expected https://host or http://host"),
            });
        }
        let proxies: Vec<String> = pick!(
            "trusted_proxies",
            "trusted_proxies",
            args.trusted_proxies
                .as_deref()
                .map(|l| l.split(',').map(|x| x.trim().to_owned()).collect()),
            file.trusted_proxies.clone(),
            Vec::new()
        );
        let mut trusted_proxies = Vec::new();
        for p in proxies.iter().filter(|p| !p.is_empty()) {
            match santong_domain::net::IpNet::parse(p) {
                Some(n) => trusted_proxies.push(n),
                None => {
                    return Err(ConfigError::Invalid {
                        key: "trusted_proxies",
                        path: if args.trusted_proxies.is_some() {
                            PathBuf::from("flags/environment")
                        } else {
                            path.clone()
                        },
                        message: format!("'{p}' is not an address or block like 10.0.0.0/8"),
                    });
                }
            }
        }
        let known_scheme = |u: &str| {
            ["postgres://", "postgresql://", "sqlite:"]
                .iter()
                .any(|p| u.starts_with(p))
        };
        if let Some(u) = database_url.as_deref().filter(|u| !known_scheme(u)) {
            return Err(ConfigError::Invalid {
                key: "database_url",
                path: if args.database_url.is_some() {
                    PathBuf::from("flags/environment")
                } else {
                    path.clone()
                },
                message: format!(
                    "'{}' is not supported: expected postgres://…, postgresql://… or sqlite:PATH",
                    santong_storage::redact_url(u)
                ),
            });
        }
        Ok(Settings {
            data_dir: pick!(
                "data",
                "data_dir",
                args.data_dir.clone(),
                file.data.clone(),
                PathBuf::from("santong-data")
            ),
            bind: pick!(
                "bind",
                "bind",
                args.bind,
                file_bind,
                SocketAddr::from(([127, 0, 0, 1], 8080))
            ),
            public_url,
            trusted_proxies,
            body_limit: pick!(
                "body_limit",
                "body_limit",
                args.body_limit,
                file_limit,
                2 * 1024 * 1024
            ),
            upload_limit: pick!(
                "upload_limit",
                "upload_limit",
                args.upload_limit,
                file_upload_limit,
                200 * 1024 * 1024
            ),
            request_timeout: Duration::from_secs(pick!(
                "request_timeout",
                "request_timeout",
                args.request_timeout,
                file.request_timeout,
                30
            )),
            max_connections: pick!(
                "max_connections",
                "max_connections",
                args.max_connections,
                file.max_connections,
                10
            ),
            log_format: pick!(
                "log_format",
                "log_format",
                args.log_format,
                file.log_format,
                LogFormat::Text
            ),
            log,
            database_url,
            config_file: args.config_file.clone(),
            sources,
        })
    }

    /// `santong config show`: every effective setting, where it came from, secrets redacted.
    pub fn show(&self) -> String {
        let src = |k: &str| {
            self.sources
                .iter()
                .find(|(key, _)| *key == k)
                .map(|(_, s)| s.label())
                .unwrap_or("default")
        };
        let db = match &self.database_url {
            Some(u) => format!("\"{}\"", santong_storage::redact_url(u)),
            None => format!("\"sqlite:{}\"", self.data_dir.join("santong.db").display()),
        };
        let lines = [
            ("data", format!("\"{}\"", self.data_dir.display())),
            ("bind", format!("\"{}\"", self.bind)),
            ("database_url", db),
            (
                "public_url",
                self.public_url
                    .as_deref()
                    .map(|u| format!("\"{u}\""))
                    .unwrap_or_else(|| "\"\"".into()),
            ),
            ("body_limit", self.body_limit.to_string()),
            ("upload_limit", self.upload_limit.to_string()),
            (
                "trusted_proxies",
                format!(
                    "{:?}",
                    self.trusted_proxies
                        .iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                ),
            ),
            (
                "request_timeout",
                self.request_timeout.as_secs().to_string(),
            ),
            ("max_connections", self.max_connections.to_string()),
            (
                "log_format",
                format!(
                    "\"{}\"",
                    match self.log_format {
                        LogFormat::Text => "text",
                        LogFormat::Json => "json",
                    }
                ),
            ),
            ("log", format!("\"{}\"", self.log)),
        ];
        let mut out = String::from(
            "# Effective settings (flags > SANTONG_* environment > config file > defaults)\n",
        );
        if let Some(f) = &self.config_file {
            out.push_str(&format!("# config file: {}\n", f.display()));
        }
        for (k, v) in lines {
            out.push_str(&format!("{k} = {v}  # {}\n", src(k)));
        }
        out
    }

    pub fn db_options(&self) -> santong_storage::DbOptions {
        santong_storage::DbOptions {
            url: self.database_url.clone(),
            data_dir: self.data_dir.clone(),
            max_connections: self.max_connections,
            pg_schema: None,
        }
    }
}

fn load_file(path: &Path) -> Result<FileSettings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("5 parsecs").unwrap_err().contains("KiB"));
        assert!(parse_size("0").is_err());
    }
}
