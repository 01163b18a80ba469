//! Spreadsheet exports: CSV in UTF-8 with a BOM (so Excel reads Chinese), streamed in batches so
//! memory stays flat whatever the size, with every cell neutralised against formula injection.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use santong_domain::identity::{Permission, Scope};
use santong_storage::registry::{Registry, SchoolRow};

use crate::AppState;
use crate::auth::User;
use crate::error::AppError;
use crate::schools::{Params, p};

/// What every export of a school's list checks first.
pub struct Gate {
    /// The caller's registry scope, for the list's query.
    pub scope: Scope,
    pub school: SchoolRow,
    /// `full=1`: unmasked data, allowed with the sensitive-data permission at the school.
    pub full: bool,
    /// Why, for a full export (checked like the full record's purpose).
    pub purpose: String,
}

/// The school in the caller's scope (404 otherwise) and, for a full export, the permission and a
/// purpose (403, 400). A full export is a form post (`posted`, its CSRF token checked by the
/// caller), of today's list only: a past list holds people who may have left the caller's scope,
/// and only their current data exists.
pub async fn gate(
    state: &AppState,
    user: &User,
    code: &str,
    q: &Params,
    posted: bool,
) -> Result<Gate, AppError> {
    user.require(Permission::RegistryView)?;
    let scope = user.0.scope(Permission::RegistryView);
    let school = Registry(&state.db)
        .school(&scope, code)
        .await?
        .ok_or_else(AppError::not_found)?;
    let full = posted && p(q, "full") == "1";
    if full && crate::schools::parse_on(q)? != santong_storage::registry::today() {
        return Err(AppError::bad_params(vec![
            santong_domain::paging::FieldError::new(
                "on",
                santong_domain::paging::FieldErrorKind::Rule("export-full-today"),
            ),
        ]));
    }
    let purpose = if full {
        if !user
            .0
            .scope(Permission::SensitiveView)
            .contains(&school.node())
        {
            return Err(AppError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "error-forbidden",
            ));
        }
        santong_storage::students::check_purpose(p(q, "purpose"))
            .map_err(crate::schools::registry_error)?
            .to_owned()
    } else {
        String::new()
    };
    Ok(Gate {
        scope,
        school,
        full,
        purpose,
    })
}

pub use santong_domain::import::{csv_field, push_line};

pub type Chunks = tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>;

/// A streamed CSV download named `filename` (ASCII), from chunks a producer task sends (the first
/// should start with the BOM). Not cached anywhere: it holds personal data.
pub fn csv_response(filename: &str, rx: Chunks) -> Response {
    let mut res = axum::body::Body::from_stream(ChunkStream(rx)).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// What the audit log keeps of a free-text filter: the text, unless it holds a number that may
/// be an ID or phone number.
pub fn logged_text(text: &str) -> String {
    if santong_storage::registry::holds_number(text) {
        "[number]".into()
    } else {
        text.to_owned()
    }
}

/// A national mobile number as spreadsheets keep it: the 11 digits, without `+86`, so that it is
/// a plain value rather than something a spreadsheet computes.
pub fn national_phone(phone: &str) -> String {
    phone.strip_prefix("+86").unwrap_or(phone).to_owned()
}

/// An 18-digit ID number as text: a trailing tab keeps spreadsheets from turning it into a
/// rounded number (imports trim it).
pub fn id_as_text(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!("{id}\t")
    }
}

/// Rows a list export reads per query.
pub const PAGE: u64 = 1000;

/// A streamed CSV download: `head`, then the rows `fetch(offset)` returns, [`PAGE`] at a time,
/// until a short page. The producer runs as its own task, so the response starts at once and
/// memory holds one page; a failed read ends the download with an error (a truncated file, never
/// a silently short one).
pub fn stream_csv<F, Fut>(filename: &str, head: Vec<String>, fetch: F) -> Response
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<Vec<String>>, String>> + Send,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut out = String::from("\u{feff}");
        push_line(&mut out, &head);
        let mut offset = 0u64;
        loop {
            let rows = match fetch(offset).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            };
            for r in &rows {
                push_line(&mut out, r);
            }
            if tx.send(Ok(std::mem::take(&mut out))).await.is_err() {
                return;
            }
            if (rows.len() as u64) < PAGE {
                break;
            }
            offset += PAGE;
        }
    });
    csv_response(filename, rx)
}

/// The file type of a list download, from the requested path (`…/export.csv`, `…/export.xlsx`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Csv,
    Xlsx,
}

impl ListFormat {
    pub fn of_path(path: &str) -> Self {
        if path.ends_with(".xlsx") {
            ListFormat::Xlsx
        } else {
            ListFormat::Csv
        }
    }

    pub fn ext(self) -> &'static str {
        match self {
            ListFormat::Csv => "csv",
            ListFormat::Xlsx => "xlsx",
        }
    }
}

/// A streamed list download in `format`, named `stem` plus the extension: CSV as
/// [`stream_csv`]; XLSX written page by page by a constant-memory writer to a temporary file,
/// then streamed from it (an XLSX is a zip whose directory comes last, so it cannot start
/// before the last row). Every cell is written as text: nothing is ever a formula, and ID and
/// phone numbers keep every digit.
pub fn stream_list<F, Fut>(format: ListFormat, stem: &str, head: Vec<String>, fetch: F) -> Response
where
    F: Fn(u64) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<Vec<String>>, String>> + Send,
{
    let filename = format!("{stem}.{}", format.ext());
    if format == ListFormat::Csv {
        return stream_csv(&filename, head, fetch);
    }
    let path = std::env::temp_dir().join(format!("santong-export-{}.xlsx", uuid::Uuid::new_v4()));
    let written = {
        let path = path.clone();
        async move { write_xlsx(&path, &head, fetch).await }
    };
    temp_file_download(
        path,
        written,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        &filename,
    )
}

/// A download of the temporary file at `path` once `written` has made it, streamed in pieces
/// and removed afterwards (or when writing fails, which ends the download with an error).
pub fn temp_file_download<W>(
    path: std::path::PathBuf,
    written: W,
    content_type: &'static str,
    filename: &str,
) -> Response
where
    W: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::spawn(async move {
        match written.await {
            Ok(()) => send_file(&path, &tx).await,
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    let mut res = axum::body::Body::from_stream(BytesStream(rx)).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// Fetches the pages here and hands them to a blocking thread that owns the writer (it is not
/// `Send`), two pages in flight at most.
async fn write_xlsx<F, Fut>(path: &std::path::Path, head: &[String], fetch: F) -> Result<(), String>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Vec<String>>, String>>,
{
    let (pages, inbox) = std::sync::mpsc::sync_channel::<Vec<Vec<String>>>(2);
    let (path_owned, head_owned) = (path.to_owned(), head.to_vec());
    let writer = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut book = santong_storage::sheet::XlsxList::new(&path_owned, "list", &head_owned)
            .map_err(|e| e.to_string())?;
        for rows in inbox {
            for r in &rows {
                // The tab that keeps a CSV's ID numbers text is not needed in a text cell.
                let cells: Vec<String> = r
                    .iter()
                    .map(|c| c.strip_suffix('\t').unwrap_or(c).to_owned())
                    .collect();
                book.row(&cells).map_err(|e| e.to_string())?;
            }
        }
        book.finish().map_err(|e| e.to_string())
    });
    let mut offset = 0u64;
    let fetched = loop {
        let rows = match fetch(offset).await {
            Ok(r) => r,
            Err(e) => break Err(e),
        };
        let last = (rows.len() as u64) < PAGE;
        // A writer that stopped has its reason in its result.
        let (pages_tx, rows) = (pages.clone(), rows);
        if tokio::task::spawn_blocking(move || pages_tx.send(rows))
            .await
            .map_or(true, |r| r.is_err())
        {
            break Ok(());
        }
        if last {
            break Ok(());
        }
        offset += PAGE;
    };
    drop(pages);
    let written = writer.await.map_err(|e| e.to_string())?;
    fetched.and(written)
}

/// Sends a file in 64 KiB pieces, until the end or the client goes away.
async fn send_file(
    path: &std::path::Path,
    tx: &tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>,
) {
    use std::io::Read;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            return;
        }
    };
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if tx.send(Ok(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

struct BytesStream(tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>);

impl futures_core::Stream for BytesStream {
    type Item = Result<Vec<u8>, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// Adapts a channel receiver to a stream without another dependency.
struct ChunkStream(Chunks);

impl futures_core::Stream for ChunkStream {
    type Item = Result<String, std::io::Error>;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_neutralises_formulas_and_keeps_numbers() {
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(csv_field("=cmd|' /C calc'!A0"), "'=cmd|' /C calc'!A0");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("-2+3+cmd"), "'-2+3+cmd");
        assert_eq!(csv_field("\tx"), "'\tx");
        // Negative numbers are values: kept whole. Anything a spreadsheet computes is not.
        assert_eq!(csv_field("-12.5"), "-12.5");
        assert_eq!(csv_field("+86 138 0013 8000"), "'+86 138 0013 8000");
        assert_eq!(csv_field("-1+1"), "'-1+1");
        assert_eq!(national_phone("+8613812345678"), "13812345678");
        assert_eq!(csv_field("+"), "'+");
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        let mut line = String::new();
        push_line(&mut line, &["张三", "=1+1"]);
        assert_eq!(line, "张三,'=1+1\r\n");
    }
}
