//! Spreadsheet files in and out. [`open`] reads an upload — CSV in whatever encoding a school's
//! Excel or WPS saved it, XLSX or XLS, told apart by content — as rows of text in bounded memory;
//! the writers (feature `xlsx`) make the import template, the list of rejected rows and big
//! exports, every cell as a string so ID numbers keep their digits and nothing is a formula.
//!
//! Cell values are passed on as written (no trimming, no normalisation): that is
//! `santong_domain::import`'s job. Only the shape is cleaned: trailing empty cells are cut and
//! empty rows skipped, so the rows are exactly the ones a person sees.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use encoding_rs::{Decoder, DecoderResult, Encoding, GB18030, UTF_8};
use santong_domain::import::TextEncoding;

/// How far an upload may go before it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Zip entries in an XLSX.
    pub max_entries: usize,
    /// Sum of the uncompressed sizes of an XLSX's entries, in bytes.
    pub max_uncompressed: u64,
    /// Uncompressed / compressed size of any one XLSX entry.
    pub max_ratio: u64,
    /// Cells in a row, after trailing empty cells are cut.
    pub max_columns: usize,
    /// Rows, the header included, after empty rows are skipped.
    pub max_rows: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 2_000,
            max_uncompressed: 1 << 30,
            max_ratio: 200,
            max_columns: 200,
            max_rows: 2_000_000,
        }
    }
}

/// Why an upload cannot be read. [`SheetError::key`] names the message shown for it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SheetError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is neither a spreadsheet nor text")]
    Binary,
    #[error("the archive is not a spreadsheet")]
    NotSpreadsheet,
    #[error("the workbook has too many parts")]
    TooManyEntries,
    #[error("the workbook is too large")]
    TooLarge,
    #[error("the workbook is compressed suspiciously well (a zip bomb)")]
    ZipBomb,
    #[error("the workbook contains macros")]
    Macros,
    #[error("the workbook links to other workbooks")]
    ExternalLinks,
    #[error("the workbook has no worksheet")]
    NoSheet,
    #[error("a row has more than {limit} cells")]
    TooManyColumns { limit: usize },
    #[error("the sheet has more than {limit} rows")]
    TooManyRows { limit: u64 },
    #[error("the spreadsheet is damaged or of an unsupported kind")]
    Unreadable,
    #[error("this build reads CSV files only")]
    XlsxDisabled,
    #[error("the file could not be read or written")]
    Io,
}

impl SheetError {
    /// The Fluent message key (`TooManyColumns` and `TooManyRows` pass `$limit`).
    pub fn key(&self) -> &'static str {
        match self {
            SheetError::Empty => "sheet-empty",
            SheetError::Binary => "sheet-binary",
            SheetError::NotSpreadsheet => "sheet-not-spreadsheet",
            SheetError::TooManyEntries => "sheet-too-many-entries",
            SheetError::TooLarge => "sheet-too-large",
            SheetError::ZipBomb => "sheet-zip-bomb",
            SheetError::Macros => "sheet-macros",
            SheetError::ExternalLinks => "sheet-external-links",
            SheetError::NoSheet => "sheet-no-sheet",
            SheetError::TooManyColumns { .. } => "sheet-too-many-columns",
            SheetError::TooManyRows { .. } => "sheet-too-many-rows",
            SheetError::Unreadable => "sheet-unreadable",
            SheetError::XlsxDisabled => "sheet-xlsx-disabled",
            SheetError::Io => "sheet-io",
        }
    }
}

fn io_error(e: &io::Error) -> SheetError {
    // The variant stays comparable and cloneable; the cause goes to the log.
    tracing::warn!(error = %e, "spreadsheet file i/o");
    SheetError::Io
}

/// What an upload turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv(TextEncoding),
    Xlsx,
    Xls,
}

const XLS_MAGIC: [u8; 8] = [0xd0, 0xcf, 0x11, 0xe0, 0xa1, 0xb1, 0x1a, 0xe1];
/// XLS has no streaming reader; calamine holds the whole workbook.
#[cfg(feature = "xlsx")]
const MAX_XLS_BYTES: u64 = 50 << 20;

/// Opens an upload and reads its format: `PK\3\4` is XLSX, the OLE signature XLS, anything else
/// CSV text. Problems of the whole file (zip bomb, macros, no sheet, an encoding no text has) are
/// answered here; problems found further in (a row too wide, an encoding that changes) come
/// from the iterator.
pub fn open(path: &Path, limits: &Limits) -> Result<Rows, SheetError> {
    let mut file = File::open(path).map_err(|e| io_error(&e))?;
    let size = file.metadata().map_err(|e| io_error(&e))?.len();
    if size == 0 {
        return Err(SheetError::Empty);
    }
    let mut magic = [0u8; 8];
    let n = read_full(&mut file, &mut magic).map_err(|e| io_error(&e))?;
    file.seek(SeekFrom::Start(0)).map_err(|e| io_error(&e))?;
    let magic = &magic[..n];
    let source = if magic.starts_with(b"PK\x03\x04") {
        open_xlsx(file, limits)?
    } else if magic == XLS_MAGIC {
        open_xls(file, size)?
    } else {
        let source = CsvSource {
            text: Decoding::new(file)?,
            parser: csv_core::Reader::new(),
            fields: vec![0; 1024],
            ends: vec![0; 64],
            size,
        };
        Source::Csv(Box::new(source))
    };
    Ok(Rows {
        source,
        max_columns: limits.max_columns,
        max_rows: limits.max_rows,
        yielded: 0,
        line: 0,
        done: false,
    })
}

#[cfg(not(feature = "xlsx"))]
fn open_xlsx(_: File, _: &Limits) -> Result<Source, SheetError> {
    Err(SheetError::XlsxDisabled)
}

#[cfg(not(feature = "xlsx"))]
fn open_xls(_: File, _: u64) -> Result<Source, SheetError> {
    Err(SheetError::XlsxDisabled)
}

#[cfg(feature = "xlsx")]
fn open_xlsx(file: File, limits: &Limits) -> Result<Source, SheetError> {
    Ok(Source::Sheet(xlsx_in::open_xlsx(file, limits)?))
}

#[cfg(feature = "xlsx")]
fn open_xls(file: File, size: u64) -> Result<Source, SheetError> {
    if size > MAX_XLS_BYTES {
        return Err(SheetError::TooLarge);
    }
    Ok(Source::Sheet(xlsx_in::open_xls(file)?))
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The rows of an upload: the header row first, then the data rows, each with its trailing
/// empty cells cut; empty rows are skipped. After an error the iterator ends. A file without a
/// single non-empty row yields `Err(Empty)`.
pub struct Rows {
    source: Source,
    max_columns: usize,
    max_rows: u64,
    yielded: u64,
    line: u64,
    done: bool,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows")
            .field("format", &self.format())
            .field("line", &self.line)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

enum Source {
    Csv(Box<CsvSource>),
    #[cfg(feature = "xlsx")]
    Sheet(xlsx_in::SheetSource),
}

impl Rows {
    /// How much of the file has been read, for a progress bar: bytes for CSV, rows against the
    /// sheet's declared dimension for XLSX and XLS (0 until the end when it declares none).
    pub fn fraction_done(&self) -> f32 {
        if self.done {
            return 1.0;
        }
        let (done, total) = match &self.source {
            Source::Csv(csv) => (csv.text.consumed, csv.size),
            #[cfg(feature = "xlsx")]
            Source::Sheet(sheet) => (sheet.last_line, sheet.total),
        };
        if total == 0 {
            0.0
        } else {
            (done as f64 / total as f64).min(1.0) as f32
        }
    }

    /// The file's format. A CSV that is all ASCII so far says UTF-8; its first non-ASCII bytes
    /// decide between UTF-8 and GB18030, wherever they come.
    pub fn format(&self) -> Format {
        match &self.source {
            Source::Csv(csv) => Format::Csv(csv.text.encoding()),
            #[cfg(feature = "xlsx")]
            Source::Sheet(sheet) => sheet.format,
        }
    }

    /// Where the row last yielded starts in the file, 1-based: the line of a CSV (a quoted
    /// field may span more), the row number of a sheet. Skipped empty rows count, so this is the
    /// number the person sees in their editor.
    pub fn line(&self) -> u64 {
        self.line
    }

    fn fail(&mut self, e: SheetError) -> Option<Result<Vec<String>, SheetError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl Iterator for Rows {
    type Item = Result<Vec<String>, SheetError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            let next = match &mut self.source {
                Source::Csv(csv) => csv.next_row(),
                #[cfg(feature = "xlsx")]
                Source::Sheet(sheet) => sheet.next_row(),
            };
            let (line, mut cells) = match next {
                None if self.yielded == 0 => return self.fail(SheetError::Empty),
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(e)) => return self.fail(e),
                Some(Ok(row)) => row,
            };
            let width = cells
                .iter()
                .rposition(|c| !c.trim().is_empty())
                .map_or(0, |i| i + 1);
            if width == 0 {
                continue;
            }
            if width > self.max_columns {
                let limit = self.max_columns;
                return self.fail(SheetError::TooManyColumns { limit });
            }
            self.yielded += 1;
            if self.yielded > self.max_rows {
                let limit = self.max_rows;
                return self.fail(SheetError::TooManyRows { limit });
            }
            cells.truncate(width);
            self.line = line;
            return Some(Ok(cells));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CSV

/// CSV is parsed with `csv_core` directly: the `csv` reader gives a record after blank lines
/// the position where the blank lines start, so its line would be wrong.
struct CsvSource {
    text: Decoding<File>,
    parser: csv_core::Reader,
    fields: Vec<u8>,
    ends: Vec<usize>,
    size: u64,
}

impl CsvSource {
    fn next_row(&mut self) -> Option<Result<(u64, Vec<String>), SheetError>> {
        self.read_record().transpose()
    }

    fn read_record(&mut self) -> Result<Option<(u64, Vec<String>)>, SheetError> {
        use csv_core::ReadRecordResult as R;
        self.skip_blank_lines()?;
        self.text.mark();
        let line = self.parser.line();
        let (mut out, mut end) = (0, 0);
        loop {
            let input = self.text.fill_buf()?;
            let (result, nin, nout, nend) =
                self.parser
                    .read_record(input, &mut self.fields[out..], &mut self.ends[end..]);
            self.text.consume(nin);
            out += nout;
            end += nend;
            match result {
                R::InputEmpty => {}
                R::OutputFull => self.fields.resize(self.fields.len() * 2, 0),
                R::OutputEndsFull => self.ends.resize(self.ends.len() * 2, 0),
                R::Record => break,
                R::End => return Ok(None),
            }
        }
        let mut cells = Vec::with_capacity(end);
        let mut from = 0;
        for &to in &self.ends[..end] {
            // The text is UTF-8 and fields split at ASCII bytes only.
            let cell =
                std::str::from_utf8(&self.fields[from..to]).map_err(|_| SheetError::Binary)?;
            cells.push(cell.to_owned());
            from = to;
        }
        Ok(Some((line, cells)))
    }

    /// Consumes the line ends before a record, counting them: the parser would skip them too,
    /// but then the record's first line is lost.
    fn skip_blank_lines(&mut self) -> Result<(), SheetError> {
        loop {
            let input = self.text.fill_buf()?;
            if input.is_empty() {
                return Ok(());
            }
            let n = input
                .iter()
                .position(|b| *b != b'\n' && *b != b'\r')
                .unwrap_or(input.len());
            let lines = input[..n].iter().filter(|b| **b == b'\n').count() as u64;
            let more = n == input.len();
            self.text.consume(n);
            // Blank lines are no runaway record, however many there are.
            self.text.mark();
            self.parser.set_line(self.parser.line() + lines);
            if !more {
                return Ok(());
            }
        }
    }
}

/// Raw bytes read from the file per step.
const CHUNK: usize = 64 << 10;
/// Bytes from the first non-ASCII one on that decide the encoding.
const SNIFF: usize = 64 << 10;
/// A record longer than this is a stray quote swallowing the rest of the file, not data.
const MAX_RECORD_BYTES: u64 = 8 << 20;

/// Decodes a text file to UTF-8 chunk by chunk for the CSV parser. The encoding is chosen as
/// `santong_domain::import::decode_text` chooses it, but on the bytes from the first non-ASCII
/// one on (ASCII reads the same in UTF-8 and GB18030), so an ASCII head decides nothing.
struct Decoding<R> {
    src: R,
    decoder: Option<(Decoder, TextEncoding)>,
    input: Vec<u8>,
    out: Vec<u8>,
    pos: usize,
    eof: bool,
    /// Raw bytes read from `src`, for progress.
    consumed: u64,
    since_mark: u64,
    failed: Option<SheetError>,
    /// The decoder has been told the input ended.
    flushed: bool,
}

impl<R: Read> Decoding<R> {
    fn new(src: R) -> Result<Self, SheetError> {
        let mut me = Decoding {
            src,
            decoder: None,
            input: Vec::with_capacity(CHUNK + SNIFF),
            out: Vec::new(),
            pos: 0,
            eof: false,
            consumed: 0,
            since_mark: 0,
            failed: None,
            flushed: false,
        };
        me.top_up(CHUNK).map_err(|e| io_error(&e))?;
        if let Some((enc, bom)) = Encoding::for_bom(&me.input) {
            me.input.drain(..bom);
            let kind = if enc == UTF_8 {
                TextEncoding::Utf8
            } else {
                TextEncoding::Utf16
            };
            me.decoder = Some((enc.new_decoder_without_bom_handling(), kind));
        }
        // Most files decide on their first chunk, so `open` can answer and name the encoding.
        me.decide()?;
        Ok(me)
    }

    /// Chooses the encoding once non-ASCII bytes are in `input`.
    fn decide(&mut self) -> Result<(), SheetError> {
        if self.decoder.is_some() {
            return Ok(());
        }
        let Some(k) = self.input.iter().position(|b| !b.is_ascii()) else {
            return match self.input.contains(&0) {
                true => Err(SheetError::Binary),
                false => Ok(()),
            };
        };
        self.top_up(k + SNIFF).map_err(|e| io_error(&e))?;
        if self.input[..k].contains(&0) {
            return Err(SheetError::Binary);
        }
        self.decoder = Some(choose(&self.input[k..], self.eof).ok_or(SheetError::Binary)?);
        Ok(())
    }

    fn encoding(&self) -> TextEncoding {
        self.decoder
            .as_ref()
            .map_or(TextEncoding::Utf8, |(_, k)| *k)
    }

    /// A record starts: the runaway count starts again.
    fn mark(&mut self) {
        self.since_mark = 0;
    }

    /// Reads until `input` holds at least `want` bytes or the file ends.
    fn top_up(&mut self, want: usize) -> io::Result<()> {
        let mut buf = [0u8; 8192];
        while !self.eof && self.input.len() < want {
            let n = match self.src.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                self.eof = true;
            }
            self.input.extend_from_slice(&buf[..n]);
            self.consumed += n as u64;
        }
        Ok(())
    }

    /// Decoded text not yet consumed; empty at the end of the file.
    fn fill_buf(&mut self) -> Result<&[u8], SheetError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.since_mark > MAX_RECORD_BYTES {
            self.failed = Some(SheetError::Unreadable);
            return Err(SheetError::Unreadable);
        }
        while self.pos >= self.out.len() {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    self.failed = Some(e.clone());
                    return Err(e);
                }
            }
        }
        Ok(&self.out[self.pos..])
    }

    fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.out.len());
        self.since_mark += n as u64;
    }

    /// Decodes the next chunk into `out`; false at the end of the file.
    fn fill(&mut self) -> Result<bool, SheetError> {
        self.top_up(CHUNK).map_err(|e| io_error(&e))?;
        if self.input.is_empty() && self.eof {
            // A character cut by the end of the file, when the last chunk ended exactly there.
            if let Some((decoder, _)) = self.decoder.as_mut()
                && !self.flushed
            {
                self.flushed = true;
                if decode(decoder, &[], true).is_none_or(|s| !s.is_empty()) {
                    return Err(SheetError::Binary);
                }
            }
            return Ok(false);
        }
        self.decide()?;
        let Some((decoder, kind)) = self.decoder.as_mut() else {
            // All ASCII so far: the same bytes in either encoding.
            self.out.clear();
            self.out.append(&mut self.input);
            self.pos = 0;
            return Ok(true);
        };
        let gb = *kind == TextEncoding::Gb18030;
        let binary = |s: &str| s.contains('\0') || (gb && implausible(s));
        let out = match decode(decoder, &self.input, self.eof) {
            Some(s) if !binary(&s) => s,
            _ => return Err(SheetError::Binary),
        };
        self.flushed = self.eof;
        self.input.clear();
        self.out = out.into_bytes();
        self.pos = 0;
        Ok(true)
    }
}

/// The encoding of text whose first non-ASCII byte starts `window`: UTF-8 if valid (a
/// character cut at the window's end is fine while the file goes on), else GB18030 if it reads
/// plausibly; `None` for binary.
fn choose(window: &[u8], eof: bool) -> Option<(Decoder, TextEncoding)> {
    if window.contains(&0) {
        return None;
    }
    match std::str::from_utf8(window) {
        Ok(_) => return Some((UTF_8.new_decoder_without_bom_handling(), TextEncoding::Utf8)),
        Err(e) if e.error_len().is_none() && !eof => {
            return Some((UTF_8.new_decoder_without_bom_handling(), TextEncoding::Utf8));
        }
        Err(_) => {}
    }
    let mut probe = GB18030.new_decoder_without_bom_handling();
    let text = decode(&mut probe, window, eof)?;
    if implausible(&text) {
        return None;
    }
    Some((
        GB18030.new_decoder_without_bom_handling(),
        TextEncoding::Gb18030,
    ))
}

/// Decodes one chunk; a sequence cut at its end waits in the decoder for the next one.
fn decode(decoder: &mut Decoder, input: &[u8], last: bool) -> Option<String> {
    let cap = decoder
        .max_utf8_buffer_length_without_replacement(input.len())
        .unwrap_or(input.len().saturating_mul(3).saturating_add(16));
    let mut out = String::with_capacity(cap);
    let (result, read) = decoder.decode_to_string_without_replacement(input, &mut out, last);
    match result {
        DecoderResult::InputEmpty if read == input.len() => Some(out),
        _ => None,
    }
}

/// GB18030 reads nearly any bytes; a Latin-1 or Big5 file comes out as C1 controls or
/// private-use characters, which no school's spreadsheet holds (as in `decode_text`).
fn implausible(text: &str) -> bool {
    text.chars()
        .any(|c| ('\u{80}'..='\u{9f}').contains(&c) || ('\u{e000}'..='\u{f8ff}').contains(&c))
}

// ---------------------------------------------------------------------------------------------
// XLSX and XLS

#[cfg(feature = "xlsx")]
pub(crate) use xlsx_in::check_archive;

#[cfg(feature = "xlsx")]
mod xlsx_in {
    use std::fs::File;
    use std::io::{BufReader, Read, Seek, SeekFrom};
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

    use calamine::{Data, Reader, Sheet, SheetType, SheetVisible, Xls, Xlsx};

    use super::{Format, Limits, SheetError, io_error};

    /// Entries smaller than this are not ratio-checked: however well they compress, they
    /// cannot be a bomb, and small repetitive XML parts compress very well.
    const RATIO_FLOOR: u64 = 1 << 20;
    /// Rows buffered between the reading thread and the consumer.
    const CHANNEL_ROWS: usize = 256;

    enum Msg {
        /// Rows the sheet declares, for progress.
        Total(u64),
        Row(u64, Vec<String>),
        Failed(SheetError),
        End,
    }

    /// Rows read by a thread that owns the workbook: calamine's streaming reader borrows the
    /// workbook, so the two cannot live in one struct without `unsafe`. The bounded channel
    /// keeps memory flat; dropping the receiver stops the thread at its next send.
    pub(super) struct SheetSource {
        rx: Receiver<Msg>,
        pub(super) format: Format,
        pub(super) total: u64,
        pub(super) last_line: u64,
        ended: bool,
    }

    impl SheetSource {
        pub(super) fn next_row(&mut self) -> Option<Result<(u64, Vec<String>), SheetError>> {
            if self.ended {
                return None;
            }
            loop {
                match self.rx.recv() {
                    Ok(Msg::Total(t)) => self.total = t,
                    Ok(Msg::Row(line, cells)) => {
                        self.last_line = line;
                        return Some(Ok((line, cells)));
                    }
                    Ok(Msg::Failed(e)) => {
                        self.ended = true;
                        return Some(Err(e));
                    }
                    Ok(Msg::End) => {
                        self.ended = true;
                        return None;
                    }
                    // The thread died without saying it had finished: calamine panicked.
                    Err(_) => {
                        self.ended = true;
                        return Some(Err(SheetError::Unreadable));
                    }
                }
            }
        }
    }

    fn spawn(
        format: Format,
        work: impl FnOnce(&SyncSender<Msg>) + Send + 'static,
    ) -> Result<SheetSource, SheetError> {
        let (tx, rx) = sync_channel(CHANNEL_ROWS);
        std::thread::Builder::new()
            .name("sheet-reader".into())
            .spawn(move || {
                work(&tx);
                let _ = tx.send(Msg::End);
            })
            .map_err(|e| io_error(&e))?;
        Ok(SheetSource {
            rx,
            format,
            total: 0,
            last_line: 0,
            ended: false,
        })
    }

    /// Checks an archive's directory before any entry is inflated: one name per entry, at most
    /// `max_entries` of them, their declared sizes within `max_uncompressed` and each within
    /// `max_ratio` of its packed size. The entry names, lower-cased.
    pub(crate) fn check_archive<R: Read + Seek>(
        zip: &mut zip::ZipArchive<R>,
        limits: &Limits,
    ) -> Result<Vec<String>, SheetError> {
        // Two parts of one name: which one a reader takes is up to the reader.
        if zip.has_duplicate_names() {
            return Err(SheetError::Unreadable);
        }
        if zip.len() > limits.max_entries {
            return Err(SheetError::TooManyEntries);
        }
        let mut total = 0u64;
        let mut names = Vec::with_capacity(zip.len());
        for i in 0..zip.len() {
            let entry = zip.by_index_data(i).map_err(|_| SheetError::Unreadable)?;
            let (size, packed) = (entry.size(), entry.compressed_size());
            total = total.saturating_add(size);
            if total > limits.max_uncompressed {
                return Err(SheetError::TooLarge);
            }
            // zip stops inflating at the declared size, so declared sizes bound the work.
            if size >= RATIO_FLOOR && size > packed.saturating_mul(limits.max_ratio) {
                return Err(SheetError::ZipBomb);
            }
            names.push(String::from_utf8_lossy(entry.name_raw()).to_ascii_lowercase());
        }
        Ok(names)
    }

    /// Checks the archive's directory before any part is inflated.
    fn inspect(reader: BufReader<File>, limits: &Limits) -> Result<BufReader<File>, SheetError> {
        let mut zip = zip::ZipArchive::new(reader).map_err(|_| SheetError::Unreadable)?;
        let names = check_archive(&mut zip, limits)?;
        let types = match zip.by_name("[Content_Types].xml") {
            Ok(part) => {
                let mut buf = Vec::new();
                part.take(1 << 20)
                    .read_to_end(&mut buf)
                    .map_err(|_| SheetError::Unreadable)?;
                String::from_utf8_lossy(&buf).to_ascii_lowercase()
            }
            Err(_) => String::new(),
        };
        let macros = names
            .iter()
            .any(|n| n.ends_with("vbaproject.bin") || n.starts_with("xl/macrosheets/"))
            || ["macroenabled.main+xml", "vbaproject", "macrosheet"]
                .iter()
                .any(|t| types.contains(t));
        if macros {
            return Err(SheetError::Macros);
        }
        if names.iter().any(|n| n.starts_with("xl/externallinks/"))
            || types.contains("externallink")
        {
            return Err(SheetError::ExternalLinks);
        }
        let workbook = [
            "spreadsheetml.sheet.main+xml",
            "spreadsheetml.template.main+xml",
        ]
        .iter()
        .any(|t| types.contains(t));
        if !workbook {
            // XLSB is a spreadsheet, but not one read here.
            return Err(if types.contains("sheet.binary") {
                SheetError::Unreadable
            } else {
                SheetError::NotSpreadsheet
            });
        }
        let mut reader = zip.into_inner();
        reader.seek(SeekFrom::Start(0)).map_err(|e| io_error(&e))?;
        Ok(reader)
    }

    /// The first visible worksheet, else the first worksheet (chart sheets have no cells).
    fn first_sheet(sheets: &[Sheet]) -> Result<String, SheetError> {
        let work = |s: &&Sheet| s.typ == SheetType::WorkSheet;
        sheets
            .iter()
            .filter(work)
            .find(|s| s.visible == SheetVisible::Visible)
            .or_else(|| sheets.iter().find(work))
            .map(|s| s.name.clone())
            .ok_or(SheetError::NoSheet)
    }

    /// calamine is a parser of untrusted input; a panic in it is an unreadable file.
    fn guarded<T>(f: impl FnOnce() -> Result<T, SheetError>) -> Result<T, SheetError> {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or(Err(SheetError::Unreadable))
    }

    pub(super) fn open_xlsx(file: File, limits: &Limits) -> Result<SheetSource, SheetError> {
        let reader = inspect(BufReader::new(file), limits)?;
        let (book, name) = guarded(|| {
            let book: Xlsx<_> = Xlsx::new(reader).map_err(|e| {
                tracing::debug!(error = %e, "xlsx refused");
                SheetError::Unreadable
            })?;
            let name = first_sheet(book.sheets_metadata())?;
            Ok((book, name))
        })?;
        let max_columns = limits.max_columns;
        spawn(Format::Xlsx, move |tx| {
            stream_xlsx(book, &name, max_columns, tx)
        })
    }

    fn stream_xlsx(
        mut book: Xlsx<BufReader<File>>,
        name: &str,
        max_columns: usize,
        tx: &SyncSender<Msg>,
    ) {
        let mut cells = match book.worksheet_cells_reader(name) {
            Ok(cells) => cells,
            Err(e) => {
                tracing::debug!(error = %e, "xlsx sheet refused");
                let _ = tx.send(Msg::Failed(SheetError::Unreadable));
                return;
            }
        };
        let end = cells.dimensions().end.0;
        if end > 0 && tx.send(Msg::Total(u64::from(end) + 1)).is_err() {
            return;
        }
        let mut row: Vec<String> = Vec::new();
        let mut at: Option<u32> = None;
        loop {
            let cell = match cells.next_cell() {
                Ok(Some(cell)) => cell,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "xlsx cell refused");
                    let _ = tx.send(Msg::Failed(SheetError::Unreadable));
                    return;
                }
            };
            let (r, c) = cell.get_position();
            if at != Some(r) {
                if let Some(prev) = at
                    && !row.is_empty()
                    && tx
                        .send(Msg::Row(u64::from(prev) + 1, std::mem::take(&mut row)))
                        .is_err()
                {
                    return;
                }
                at = Some(r);
            }
            let text = cell_text(cell.get_value().clone().into());
            if text.is_empty() {
                continue;
            }
            // Checked before the row grows: a cell reference can name any column.
            let c = c as usize;
            if c >= max_columns {
                let _ = tx.send(Msg::Failed(SheetError::TooManyColumns {
                    limit: max_columns,
                }));
                return;
            }
            if row.len() <= c {
                row.resize(c + 1, String::new());
            }
            row[c] = text;
        }
        if let Some(prev) = at
            && !row.is_empty()
        {
            let _ = tx.send(Msg::Row(u64::from(prev) + 1, row));
        }
    }

    pub(super) fn open_xls(file: File) -> Result<SheetSource, SheetError> {
        let (range, name) = guarded(|| {
            let mut book: Xls<_> = Xls::new(BufReader::new(file)).map_err(|e| {
                tracing::debug!(error = %e, "xls refused");
                SheetError::Unreadable
            })?;
            if !matches!(book.vba_project(), Ok(None)) {
                return Err(SheetError::Macros);
            }
            let name = first_sheet(book.sheets_metadata())?;
            let range = book
                .worksheet_range(&name)
                .map_err(|_| SheetError::Unreadable)?;
            Ok((range, name))
        })?;
        tracing::debug!(sheet = %name, rows = range.height(), "xls read");
        spawn(Format::Xls, move |tx| {
            let Some((top, _)) = range.start() else {
                return;
            };
            if tx.send(Msg::Total(range.height() as u64)).is_err() {
                return;
            }
            for (i, cells) in range.rows().enumerate() {
                let row: Vec<String> = cells.iter().map(|d| cell_text(d.clone())).collect();
                if tx
                    .send(Msg::Row(u64::from(top) + i as u64 + 1, row))
                    .is_err()
                {
                    return;
                }
            }
        })
    }

    /// A cell as the text a person sees, without the display format's rounding: integral
    /// numbers without `.0` or exponent, dates as ISO dates, errors as nothing.
    pub(super) fn cell_text(d: Data) -> String {
        match d {
            Data::String(s) | Data::DateTimeIso(s) | Data::DurationIso(s) => s,
            Data::Int(i) => i.to_string(),
            Data::Float(f) => number_text(f),
            Data::Bool(b) => if b { "TRUE" } else { "FALSE" }.to_owned(),
            Data::DateTime(dt) if dt.is_datetime() => {
                let (y, mo, d, h, mi, s, _) = dt.to_ymd_hms_milli();
                if (0.0..1.0).contains(&dt.as_f64()) {
                    format!("{h:02}:{mi:02}:{s:02}")
                } else if (h, mi, s) == (0, 0, 0) {
                    format!("{y:04}-{mo:02}-{d:02}")
                } else {
                    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
                }
            }
            Data::DateTime(dt) => number_text(dt.as_f64()),
            Data::Error(_) | Data::Empty => String::new(),
        }
    }

    pub(super) fn number_text(f: f64) -> String {
        if !f.is_finite() {
            String::new()
        } else if f == 0.0 {
            "0".to_owned()
        } else if f.fract() == 0.0 {
            // Rust never prints an exponent; `.0` keeps a 17-digit number in digits.
            format!("{f:.0}")
        } else {
            format!("{f}")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Writing

#[cfg(feature = "xlsx")]
pub use xlsx_out::{Rejected, TemplateColumn, XlsxList, rejects_xlsx, template_xlsx};

#[cfg(feature = "xlsx")]
mod xlsx_out {
    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    use rust_xlsxwriter::{
        Color, DataValidation, DataValidationErrorStyle, Format as CellFormat, Formula, Note,
        Workbook, Worksheet, XlsxError, utility::column_number_to_name,
    };

    use super::SheetError;

    /// Excel's limits: rows and columns of a sheet, UTF-16 units of a cell and of a note.
    const MAX_ROWS: u32 = 1_048_576;
    const MAX_COLUMNS: usize = 16_384;
    const MAX_CELL: usize = 32_767;
    const MAX_NOTE: usize = 32_767 - 54;
    /// Rows of the template that carry the drop-down lists (rows 2..=10001).
    const TEMPLATE_ROWS: u32 = 10_000;
    /// The hidden sheet the drop-down lists come from (inline lists stop at 255 characters).
    const LISTS: &str = "lists";

    fn write_error(e: XlsxError) -> SheetError {
        tracing::warn!(error = %e, "writing a spreadsheet");
        SheetError::Io
    }

    /// Text cut to Excel's limit, at a character boundary.
    fn fit(s: &str, limit: usize) -> &str {
        let mut units = 0;
        for (i, c) in s.char_indices() {
            units += c.len_utf16();
            if units > limit {
                return &s[..i];
            }
        }
        s
    }

    /// A sheet name Excel accepts: no `[]:*?/\`, no apostrophe at either end, 31 units.
    fn sheet_name(raw: &str, fallback: &str) -> String {
        let cleaned: String = raw
            .chars()
            .map(|c| if "[]:*?/\\".contains(c) { '_' } else { c })
            .collect();
        let cleaned = fit(cleaned.trim_matches(['\'', ' ']), 31).trim_end_matches('\'');
        if cleaned.is_empty() {
            fallback.to_owned()
        } else {
            cleaned.to_owned()
        }
    }

    fn column(i: usize) -> Result<u16, SheetError> {
        if i >= MAX_COLUMNS {
            return Err(SheetError::TooManyColumns { limit: MAX_COLUMNS });
        }
        Ok(i as u16)
    }

    fn row(i: usize) -> Result<u32, SheetError> {
        u32::try_from(i)
            .ok()
            .filter(|r| *r < MAX_ROWS)
            .ok_or(SheetError::TooManyRows {
                limit: u64::from(MAX_ROWS),
            })
    }

    fn note(text: &str) -> Note {
        Note::new(fit(text, MAX_NOTE))
            .add_author_prefix(false)
            .set_width(240)
            .set_height(90)
    }

    /// Width in Excel's character units, wide enough for the header (CJK counts double).
    fn width_for(text: &str, at_least: f64) -> f64 {
        let w: usize = text.chars().map(|c| if c.is_ascii() { 1 } else { 2 }).sum();
        (w as f64 + 2.0).clamp(at_least, 60.0)
    }

    /// One column of an import template.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct TemplateColumn {
        pub header: String,
        /// Shown as the header cell's comment (what to type, which format).
        pub note: String,
        /// Marked with a leading `*` and a fill.
        pub required: bool,
        /// The values of a drop-down list; empty for free input.
        pub choices: Vec<String>,
        /// Formatted as text, so Excel keeps an ID number's digits and leading zeros.
        pub text: bool,
    }

    /// An import template: the data sheet (bold headers, required ones as `*header` on a fill,
    /// notes as comments, frozen top row, text columns, drop-down lists on rows 2..=10001), a
    /// second sheet with one instruction per row, and the lists on a hidden sheet `lists`.
    /// Sheet names are cleaned to what Excel accepts; neither may be `lists`.
    pub fn template_xlsx(
        sheet_name_raw: &str,
        columns: &[TemplateColumn],
        instructions_title: &str,
        instructions: &[String],
    ) -> Result<Vec<u8>, SheetError> {
        let mut book = Workbook::new();
        let header = CellFormat::new().set_bold();
        let required = CellFormat::new()
            .set_bold()
            .set_background_color(Color::RGB(0xFFE699));
        // Built-in format 49 is Excel's own "Text" (`@`).
        let text = CellFormat::new().set_num_format_index(49);
        let coded: Vec<(usize, &TemplateColumn)> = columns
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.choices.is_empty())
            .collect();

        let sheet = book.add_worksheet();
        sheet
            .set_name(sheet_name(sheet_name_raw, "Sheet1"))
            .map_err(write_error)?;
        for (i, col) in columns.iter().enumerate() {
            let c = column(i)?;
            let title = if col.required && !col.header.starts_with('*') {
                format!("*{}", col.header)
            } else {
                col.header.clone()
            };
            if col.text {
                sheet.set_column_format(c, &text).map_err(write_error)?;
            }
            let at_least = if col.text { 22.0 } else { 12.0 };
            sheet
                .set_column_width(c, width_for(&title, at_least))
                .map_err(write_error)?;
            let format = if col.required { &required } else { &header };
            sheet
                .write_string_with_format(0, c, fit(&title, MAX_CELL), format)
                .map_err(write_error)?;
            if !col.note.is_empty() {
                sheet
                    .insert_note(0, c, &note(&col.note))
                    .map_err(write_error)?;
            }
        }
        sheet.set_freeze_panes(1, 0).map_err(write_error)?;
        for (k, (i, col)) in coded.iter().enumerate() {
            let letter = column_number_to_name(column(k)?);
            let last = col.choices.len() + 1;
            let list = Formula::new(format!("={LISTS}!${letter}$2:${letter}${last}"));
            // A warning, not a stop: the importer also reads codes and other spellings.
            let validation = DataValidation::new()
                .allow_list_formula(list)
                .set_error_style(DataValidationErrorStyle::Warning);
            let c = column(*i)?;
            sheet
                .add_data_validation(1, c, TEMPLATE_ROWS, c, &validation)
                .map_err(write_error)?;
        }

        let help = book.add_worksheet();
        help.set_name(sheet_name(instructions_title, "Sheet2"))
            .map_err(write_error)?;
        help.set_column_width(0, 100).map_err(write_error)?;
        for (r, line) in instructions.iter().enumerate() {
            help.write_string(row(r)?, 0, fit(line, MAX_CELL))
                .map_err(write_error)?;
        }

        if !coded.is_empty() {
            let lists = book.add_worksheet();
            lists.set_name(LISTS).map_err(write_error)?;
            lists.set_hidden(true);
            for (k, (_, col)) in coded.iter().enumerate() {
                let c = column(k)?;
                lists
                    .write_string(0, c, fit(&col.header, MAX_CELL))
                    .map_err(write_error)?;
                for (r, choice) in col.choices.iter().enumerate() {
                    lists
                        .write_string(row(r + 1)?, c, fit(choice, MAX_CELL))
                        .map_err(write_error)?;
                }
            }
        }
        book.save_to_buffer().map_err(write_error)
    }

    /// A row the import refused, as read, with what is wrong with it.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    pub struct Rejected {
        /// Where the row was in the upload ([`super::Rows::line`]).
        pub line: u64,
        pub cells: Vec<String>,
        /// The 0-based column a message is about (`None`: the whole row) and the message, in
        /// the reader's language.
        pub problems: Vec<(Option<usize>, String)>,
    }

    /// The rejected rows as a workbook to correct and upload again: the original headers and
    /// cells unchanged, then a column `error_header` with every message of the row joined by
    /// `；`. Cells with a problem are filled red and carry their messages as a comment. Cells a
    /// row has beyond the headers follow the error column, so nothing typed is lost.
    pub fn rejects_xlsx(
        headers: &[String],
        error_header: &str,
        rows: impl Iterator<Item = Rejected>,
    ) -> Result<Vec<u8>, SheetError> {
        let mut book = Workbook::new();
        let bold = CellFormat::new().set_bold();
        let bad = CellFormat::new()
            .set_background_color(Color::RGB(0xFFC7CE))
            .set_font_color(Color::RGB(0x9C0006));
        let error_title = CellFormat::new()
            .set_bold()
            .set_font_color(Color::RGB(0x9C0006));
        let width = headers.len();
        let error_col = column(width)?;

        let sheet = book.add_worksheet();
        for (c, h) in headers.iter().enumerate() {
            sheet
                .write_string_with_format(0, column(c)?, fit(h, MAX_CELL), &bold)
                .map_err(write_error)?;
        }
        sheet
            .write_string_with_format(0, error_col, fit(error_header, MAX_CELL), &error_title)
            .map_err(write_error)?;
        sheet.set_column_width(error_col, 60).map_err(write_error)?;
        sheet.set_freeze_panes(1, 0).map_err(write_error)?;

        for (i, rejected) in rows.enumerate() {
            let r = row(i + 1)?;
            let mut flagged: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
            for (col, message) in &rejected.problems {
                if let Some(c) = col.filter(|c| *c < width) {
                    flagged.entry(c).or_default().push(message);
                }
            }
            for (c, cell) in rejected.cells.iter().enumerate() {
                let at = column(if c < width { c } else { c + 1 })?;
                let cell = fit(cell, MAX_CELL);
                if flagged.contains_key(&c) {
                    sheet.write_string_with_format(r, at, cell, &bad)
                } else if cell.is_empty() {
                    continue;
                } else {
                    sheet.write_string(r, at, cell)
                }
                .map_err(write_error)?;
            }
            for (c, messages) in &flagged {
                let at = column(*c)?;
                if *c >= rejected.cells.len() {
                    sheet.write_blank(r, at, &bad).map_err(write_error)?;
                }
                sheet
                    .insert_note(r, at, &note(&messages.join("；")))
                    .map_err(write_error)?;
            }
            let all: Vec<&str> = rejected.problems.iter().map(|(_, m)| m.as_str()).collect();
            sheet
                .write_string(r, error_col, fit(&all.join("；"), MAX_CELL))
                .map_err(write_error)?;
        }
        book.save_to_buffer().map_err(write_error)
    }

    /// A big list written row by row in constant memory (rows go to a temporary file beside
    /// the target, not to RAM or a tmpfs), every cell a string.
    pub struct XlsxList {
        book: Workbook,
        path: PathBuf,
        next_row: u32,
    }

    impl std::fmt::Debug for XlsxList {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("XlsxList")
                .field("path", &self.path)
                .field("next_row", &self.next_row)
                .finish_non_exhaustive()
        }
    }

    impl XlsxList {
        /// Starts the list at `path` (written by [`XlsxList::finish`]) with a bold header row.
        pub fn new(
            path: &Path,
            sheet_name_raw: &str,
            headers: &[String],
        ) -> Result<Self, SheetError> {
            let mut book = Workbook::new();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                book.set_tempdir(dir).map_err(write_error)?;
            }
            let bold = CellFormat::new().set_bold();
            let sheet = book
                .add_worksheet_with_constant_memory()
                .map_err(write_error)?;
            sheet
                .set_name(sheet_name(sheet_name_raw, "Sheet1"))
                .map_err(write_error)?;
            sheet.set_freeze_panes(1, 0).map_err(write_error)?;
            for (c, h) in headers.iter().enumerate() {
                let c = column(c)?;
                sheet
                    .set_column_width(c, width_for(h, 12.0))
                    .map_err(write_error)?;
                sheet
                    .write_string_with_format(0, c, fit(h, MAX_CELL), &bold)
                    .map_err(write_error)?;
            }
            Ok(XlsxList {
                book,
                path: path.to_path_buf(),
                next_row: 1,
            })
        }

        fn sheet(&mut self) -> Result<&mut Worksheet, SheetError> {
            self.book.worksheet_from_index(0).map_err(write_error)
        }

        /// Appends a row. Past Excel's 1,048,576 rows: `TooManyRows`.
        pub fn row(&mut self, cells: &[String]) -> Result<(), SheetError> {
            let r = self.next_row;
            if r >= MAX_ROWS {
                return Err(SheetError::TooManyRows {
                    limit: u64::from(MAX_ROWS),
                });
            }
            let sheet = self.sheet()?;
            for (c, cell) in cells.iter().enumerate() {
                if !cell.is_empty() {
                    sheet
                        .write_string(r, column(c)?, fit(cell, MAX_CELL))
                        .map_err(write_error)?;
                }
            }
            self.next_row += 1;
            Ok(())
        }

        /// Writes the workbook to the path given to [`XlsxList::new`].
        pub fn finish(mut self) -> Result<(), SheetError> {
            self.book.save(&self.path).map_err(write_error)
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn sheet_names_are_cleaned_to_what_excel_accepts() {
            assert_eq!(super::sheet_name("学生/名单:2024", "S"), "学生_名单_2024");
            assert_eq!(super::sheet_name("'x'", "S"), "x");
            assert_eq!(super::sheet_name("", "S"), "S");
            let long = "学".repeat(40);
            assert_eq!(super::sheet_name(&long, "S").chars().count(), 31);
            assert_eq!(super::fit("ab学c", 3), "ab学");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Every row, or the first error.
    fn read(path: &Path, limits: &Limits) -> Result<Vec<Vec<String>>, SheetError> {
        open(path, limits)?.collect()
    }

    fn read_bytes(bytes: &[u8]) -> Result<Vec<Vec<String>>, SheetError> {
        let dir = tempfile::tempdir().unwrap();
        read(&write(&dir, "upload", bytes), &Limits::default())
    }

    fn format_of(bytes: &[u8]) -> Format {
        let dir = tempfile::tempdir().unwrap();
        let mut rows = open(&write(&dir, "upload", bytes), &Limits::default()).unwrap();
        rows.by_ref().for_each(drop);
        rows.format()
    }

    fn table(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
            .collect()
    }

    const SIMPLE: &str = "姓名,性别\n张三,男\n李四,女\n";

    fn simple() -> Vec<Vec<String>> {
        table(&[&["姓名", "性别"], &["张三", "男"], &["李四", "女"]])
    }

    #[test]
    fn rows_and_writers_can_move_to_a_worker_thread() {
        fn send<T: Send>() {}
        send::<Rows>();
        #[cfg(feature = "xlsx")]
        send::<XlsxList>();
    }

    #[test]
    fn keys_are_distinct_fluent_ids() {
        let all = [
            SheetError::Empty,
            SheetError::Binary,
            SheetError::NotSpreadsheet,
            SheetError::TooManyEntries,
            SheetError::TooLarge,
            SheetError::ZipBomb,
            SheetError::Macros,
            SheetError::ExternalLinks,
            SheetError::NoSheet,
            SheetError::TooManyColumns { limit: 1 },
            SheetError::TooManyRows { limit: 1 },
            SheetError::Unreadable,
            SheetError::XlsxDisabled,
            SheetError::Io,
        ];
        let keys: std::collections::BTreeSet<_> = all.iter().map(SheetError::key).collect();
        assert_eq!(keys.len(), all.len());
        assert!(
            keys.iter().all(|k| k.starts_with("sheet-")
                && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        );
    }

    // ---- CSV ------------------------------------------------------------------------------

    #[test]
    fn utf8_with_and_without_bom_lf_and_crlf() {
        assert_eq!(read_bytes(SIMPLE.as_bytes()).unwrap(), simple());
        let crlf = SIMPLE.replace('\n', "\r\n");
        let mut bom = b"\xef\xbb\xbf".to_vec();
        bom.extend_from_slice(crlf.as_bytes());
        assert_eq!(read_bytes(&bom).unwrap(), simple());
        assert_eq!(format_of(&bom), Format::Csv(TextEncoding::Utf8));
        assert_eq!(
            format_of(SIMPLE.as_bytes()),
            Format::Csv(TextEncoding::Utf8)
        );
        // No newline at the end, a lone CR line ending.
        assert_eq!(
            read_bytes(b"a,b\r1,2").unwrap(),
            table(&[&["a", "b"], &["1", "2"]])
        );
    }

    #[test]
    fn gbk_as_excel_saves_it_on_chinese_windows() {
        let crlf = SIMPLE.replace('\n', "\r\n");
        let (bytes, _, bad) = encoding_rs::GBK.encode(&crlf);
        assert!(!bad);
        assert_eq!(read_bytes(&bytes).unwrap(), simple());
        assert_eq!(format_of(&bytes), Format::Csv(TextEncoding::Gb18030));
    }

    #[test]
    fn utf16_with_a_bom() {
        let le: Vec<u8> = std::iter::once(0xfeff)
            .chain(SIMPLE.encode_utf16())
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(read_bytes(&le).unwrap(), simple());
        assert_eq!(format_of(&le), Format::Csv(TextEncoding::Utf16));
        let be: Vec<u8> = std::iter::once(0xfeff)
            .chain(SIMPLE.encode_utf16())
            .flat_map(u16::to_be_bytes)
            .collect();
        assert_eq!(read_bytes(&be).unwrap(), simple());
        // An odd byte at the end is no UTF-16.
        let mut odd = le.clone();
        odd.push(b'x');
        assert_eq!(read_bytes(&odd), Err(SheetError::Binary));
    }

    #[test]
    fn quoted_fields_keep_commas_newlines_and_quotes() {
        let csv = "备注,名字\r\n\"a,b\",\"第一行\r\n第二行\"\r\n\"他说\"\"好\"\"\",x\r\n";
        assert_eq!(
            read_bytes(csv.as_bytes()).unwrap(),
            table(&[
                &["备注", "名字"],
                &["a,b", "第一行\r\n第二行"],
                &["他说\"好\"", "x"]
            ])
        );
    }

    #[test]
    fn trailing_empty_cells_and_rows_are_dropped_and_lines_counted() {
        let csv = "姓名,性别,,\n\n张三,男,,\n,,,\n李四,,女,\n \n\n,,\n";
        let dir = tempfile::tempdir().unwrap();
        let mut rows = open(&write(&dir, "t.csv", csv.as_bytes()), &Limits::default()).unwrap();
        let mut seen = Vec::new();
        while let Some(row) = rows.next() {
            seen.push((rows.line(), row.unwrap()));
        }
        let expected: Vec<(u64, Vec<String>)> = vec![
            (1, table(&[&["姓名", "性别"]]).remove(0)),
            (3, table(&[&["张三", "男"]]).remove(0)),
            (5, table(&[&["李四", "", "女"]]).remove(0)),
        ];
        assert_eq!(seen, expected);
        assert_eq!(rows.fraction_done(), 1.0);
    }

    #[test]
    fn a_quoted_field_over_lines_reports_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "q.csv", b"h1,h2\n\"x\ny\",z\nnext,1\n");
        let mut rows = open(&path, &Limits::default()).unwrap();
        let lines: Vec<u64> = std::iter::from_fn(|| rows.next().map(|_| rows.line())).collect();
        assert_eq!(lines, [1, 2, 4]);
    }

    #[test]
    fn empty_files_are_refused() {
        assert_eq!(read_bytes(b"").unwrap_err(), SheetError::Empty);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            open(&write(&dir, "e", b""), &Limits::default()).unwrap_err(),
            SheetError::Empty
        );
        // Blank lines only, or a bare byte-order mark: nothing to import either.
        assert_eq!(read_bytes(b"\r\n\r\n,,\n").unwrap_err(), SheetError::Empty);
        assert_eq!(read_bytes(b"\xef\xbb\xbf").unwrap_err(), SheetError::Empty);
    }

    #[test]
    fn binary_files_are_refused() {
        // A PNG saved as .csv.
        let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x06\0\0\0\x1f\xf3\xffa";
        assert_eq!(read_bytes(png).unwrap_err(), SheetError::Binary);
        assert_eq!(read_bytes(b"a,b\n1,\0\n").unwrap_err(), SheetError::Binary);
        // UTF-16 without a mark is full of NULs.
        let utf16: Vec<u8> = "a,b\n".encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert_eq!(read_bytes(&utf16).unwrap_err(), SheetError::Binary);
        // Latin-1 reads as GB18030 only with control characters.
        assert_eq!(
            read_bytes(b"caf\xe9,\x80\x81\n").unwrap_err(),
            SheetError::Binary
        );
    }

    /// A file of `rows` ASCII rows (about 64 KiB per 3,000), then `tail`.
    fn ascii_then(rows: usize, tail: &[u8]) -> Vec<u8> {
        let mut bytes = b"name,number\n".to_vec();
        for i in 0..rows {
            bytes.extend_from_slice(format!("student{i:06},{i:010}\n").as_bytes());
        }
        bytes.extend_from_slice(tail);
        bytes
    }

    #[test]
    fn bytes_past_the_sniffed_prefix_that_no_encoding_reads_are_binary() {
        let bytes = ascii_then(4_000, b"bad,\xff\xfe\xff\n");
        assert!(bytes.len() > 64 << 10);
        let rows: Vec<_> = {
            let dir = tempfile::tempdir().unwrap();
            open(&write(&dir, "m.csv", &bytes), &Limits::default())
                .unwrap()
                .collect()
        };
        // Rows before the bad chunk may come out; then the error, and nothing after it.
        assert_eq!(rows.last(), Some(&Err(SheetError::Binary)));
        assert_eq!(rows.iter().filter(|r| r.is_err()).count(), 1);
    }

    #[test]
    fn an_encoding_that_changes_midway_is_binary() {
        // UTF-8 Chinese first (chosen), GBK later (invalid UTF-8).
        let mut bytes = "姓名,号\n".repeat(20_000).into_bytes();
        bytes.extend_from_slice(&encoding_rs::GBK.encode("张三,1\n").0);
        let rows = read_bytes(&bytes);
        assert_eq!(rows, Err(SheetError::Binary));
        // GBK first, then UTF-8 that happens to read as GB18030 private-use or fails.
        let mut bytes = encoding_rs::GBK
            .encode(&"姓名,号\n".repeat(20_000))
            .0
            .into_owned();
        bytes.extend_from_slice("\u{e000}".as_bytes());
        bytes.extend_from_slice(b"\xff\xff\n");
        assert_eq!(read_bytes(&bytes), Err(SheetError::Binary));
    }

    #[test]
    fn an_ascii_head_leaves_the_encoding_to_the_first_chinese() {
        let tail = encoding_rs::GBK.encode("张三,男\n").0.into_owned();
        let bytes = ascii_then(4_000, &tail);
        let rows = read_bytes(&bytes).unwrap();
        assert_eq!(rows.len(), 4_002);
        assert_eq!(rows.last().unwrap(), &["张三", "男"]);
        assert_eq!(format_of(&bytes), Format::Csv(TextEncoding::Gb18030));
        let bytes = ascii_then(4_000, "张三,男\n".as_bytes());
        assert_eq!(read_bytes(&bytes).unwrap().last().unwrap(), &["张三", "男"]);
        assert_eq!(format_of(&bytes), Format::Csv(TextEncoding::Utf8));
    }

    #[test]
    fn characters_cut_at_chunk_boundaries_decode_whole() {
        // Odd-length rows so that chunk ends fall inside three-byte (UTF-8) and two-byte (GBK)
        // characters somewhere.
        let text: String = (0..30_000)
            .map(|i| format!("学生{i},甲乙丙{}\n", "丁".repeat(i % 7)))
            .collect();
        let expected: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect();
        assert_eq!(read_bytes(text.as_bytes()).unwrap(), expected);
        let gbk = encoding_rs::GBK.encode(&text).0.into_owned();
        assert_eq!(read_bytes(&gbk).unwrap(), expected);
        let utf16: Vec<u8> = std::iter::once(0xfeff)
            .chain(text.encode_utf16())
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(read_bytes(&utf16).unwrap(), expected);
    }

    #[test]
    fn a_character_cut_by_the_end_of_the_file_is_binary() {
        // Exactly one chunk, so the decoder learns of the end only after the last bytes.
        let mut bytes = vec![0xff, 0xfe];
        bytes.extend(
            "a\n"
                .repeat(16_383)
                .encode_utf16()
                .flat_map(u16::to_le_bytes),
        );
        bytes.extend_from_slice(&0xd800u16.to_le_bytes());
        assert_eq!(bytes.len(), CHUNK);
        let rows: Vec<_> = {
            let dir = tempfile::tempdir().unwrap();
            open(&write(&dir, "cut.csv", &bytes), &Limits::default())
                .unwrap()
                .collect()
        };
        assert_eq!(rows.last(), Some(&Err(SheetError::Binary)));
        bytes.truncate(CHUNK - 2);
        assert_eq!(read_bytes(&bytes).unwrap().len(), 16_383);
    }

    #[test]
    fn wide_rows_and_long_files_are_refused() {
        let header: Vec<String> = (0..3_000).map(|i| format!("c{i}")).collect();
        let csv = format!("{}\n", header.join(","));
        assert_eq!(
            read_bytes(csv.as_bytes()),
            Err(SheetError::TooManyColumns { limit: 200 })
        );
        // Empty cells past the limit are trailing, not columns.
        let csv = format!("a,b{}\n1,2\n", ",".repeat(3_000));
        assert_eq!(read_bytes(csv.as_bytes()).unwrap().len(), 2);

        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "long.csv", b"h\n1\n2\n\n3\n");
        let limits = Limits {
            max_rows: 3,
            ..Limits::default()
        };
        let rows: Vec<_> = open(&path, &limits).unwrap().collect();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[3], Err(SheetError::TooManyRows { limit: 3 }));
    }

    #[test]
    fn a_stray_quote_does_not_swallow_the_file_into_memory() {
        let mut bytes = b"a,b\n\"unclosed,1\n".to_vec();
        bytes.extend(std::iter::repeat_n(b"x,y\n".as_slice(), 3 << 20).flatten());
        assert_eq!(read_bytes(&bytes), Err(SheetError::Unreadable));
    }

    #[test]
    fn a_200_000_row_csv_streams_every_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.csv");
        {
            use std::io::Write;
            let mut out = std::io::BufWriter::new(File::create(&path).unwrap());
            out.write_all("姓名,身份证件号,年级\n".as_bytes()).unwrap();
            for i in 0..200_000u32 {
                writeln!(out, "学生{i},44030520160301{:04},{}", i % 10_000, i % 9 + 1).unwrap();
            }
        }
        let mut rows = open(&path, &Limits::default()).unwrap();
        let mut count = 0u64;
        let mut halfway = None;
        for row in rows.by_ref() {
            let row = row.unwrap();
            assert_eq!(row.len(), 3);
            count += 1;
            if count == 100_000 {
                halfway = Some(());
            }
        }
        assert!(halfway.is_some());
        assert_eq!(count, 200_001);
        assert_eq!(rows.line(), 200_001);
        assert_eq!(rows.fraction_done(), 1.0);
    }

    #[test]
    fn progress_moves_through_a_csv() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = ascii_then(20_000, b"");
        let mut rows = open(&write(&dir, "p.csv", &bytes), &Limits::default()).unwrap();
        assert!(rows.fraction_done() < 0.5);
        rows.by_ref().take(10_000).for_each(|r| drop(r.unwrap()));
        let mid = rows.fraction_done();
        assert!(mid > 0.2 && mid < 0.9, "{mid}");
        rows.by_ref().for_each(drop);
        assert_eq!(rows.fraction_done(), 1.0);
    }

    #[test]
    fn the_committed_corpus_gives_what_its_readme_says() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
        let ok = |name: &str| read(&dir.join(name), &Limits::default());
        let format = |name: &str| open(&dir.join(name), &Limits::default()).unwrap().format();
        assert_eq!(ok("utf8-bom-crlf.csv").unwrap(), simple());
        assert_eq!(format("utf8-bom-crlf.csv"), Format::Csv(TextEncoding::Utf8));
        assert_eq!(ok("gbk.csv").unwrap(), simple());
        assert_eq!(format("gbk.csv"), Format::Csv(TextEncoding::Gb18030));
        assert_eq!(ok("utf16le-bom.csv").unwrap(), simple());
        assert_eq!(format("utf16le-bom.csv"), Format::Csv(TextEncoding::Utf16));
        assert_eq!(
            ok("quoted.csv").unwrap(),
            table(&[
                &["姓名", "备注"],
                &["张三", "爱好:读书,画画\n会游泳"],
                &["李四", "外号\"小李\""]
            ])
        );
        assert_eq!(
            ok("trailing-empty.csv").unwrap(),
            table(&[&["姓名", "性别"], &["张三", "男"], &["李四", "", "女"]])
        );
        assert_eq!(ok("png-renamed.csv"), Err(SheetError::Binary));
        assert_eq!(ok("empty.csv"), Err(SheetError::Empty));
    }

    #[cfg(not(feature = "xlsx"))]
    #[test]
    fn without_the_feature_workbooks_are_refused() {
        assert_eq!(
            read_bytes(b"PK\x03\x04rest of a zip").unwrap_err(),
            SheetError::XlsxDisabled
        );
        assert_eq!(
            read_bytes(&XLS_MAGIC).unwrap_err(),
            SheetError::XlsxDisabled
        );
    }

    // ---- XLSX -----------------------------------------------------------------------------

    #[cfg(feature = "xlsx")]
    mod xlsx {
        use std::io::{Cursor, Write};

        use rust_xlsxwriter::{ExcelDateTime, Format as CellFormat, Workbook};
        use zip::write::SimpleFileOptions;

        use super::*;

        fn date(y: u16, m: u8, d: u8) -> ExcelDateTime {
            ExcelDateTime::from_ymd(y, m, d).unwrap()
        }

        /// A sheet the way schools fill them in.
        fn school_sheet() -> Vec<u8> {
            let mut book = Workbook::new();
            let ymd = CellFormat::new().set_num_format("yyyy-mm-dd");
            let stamp = CellFormat::new().set_num_format("yyyy-mm-dd hh:mm");
            let grey = CellFormat::new().set_background_color(0xDDDDDD);
            let s = book.add_worksheet();
            s.write_string(0, 0, "姓名").unwrap();
            s.merge_range(0, 1, 0, 2, "监护人", &CellFormat::new())
                .unwrap();
            for (c, h) in ["入学日期", "身份证件号", "电话", "分数", "在校"]
                .iter()
                .enumerate()
            {
                s.write_string(0, c as u16 + 3, *h).unwrap();
            }
            s.write_string(1, 0, "张三").unwrap();
            s.write_string(1, 1, "李四").unwrap();
            s.write_string(1, 2, "父亲").unwrap();
            s.write_datetime_with_format(1, 3, date(2014, 9, 1), &ymd)
                .unwrap();
            s.write_string(1, 4, "440305201603010012").unwrap();
            s.write_number(1, 5, 13_800_138_000.0).unwrap();
            s.write_number(1, 6, 92.5).unwrap();
            s.write_boolean(1, 7, true).unwrap();
            // Sparse: gaps are empty strings.
            s.write_string(2, 0, "王五").unwrap();
            s.write_datetime_with_format(2, 3, date(2014, 9, 1).and_hms(8, 30, 0).unwrap(), &stamp)
                .unwrap();
            s.write_number(2, 4, 1e17).unwrap();
            // Row 4 (index 3) left out; formatted blanks right of and below the data.
            s.write_string(4, 0, "赵六").unwrap();
            s.write_blank(1, 12, &grey).unwrap();
            for r in 5..9 {
                for c in 0..10 {
                    s.write_blank(r, c, &grey).unwrap();
                }
            }
            s.write_string(9, 3, "  ").unwrap();
            book.add_worksheet().write_string(0, 0, "not read").unwrap();
            book.save_to_buffer().unwrap()
        }

        /// The archive with parts replaced (`Some`) or dropped (`None`) and parts added.
        fn rezip(xlsx: &[u8], change: &[(&str, Option<&[u8]>)], add: &[(&str, &[u8])]) -> Vec<u8> {
            let mut src = zip::ZipArchive::new(Cursor::new(xlsx)).unwrap();
            let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
            let opts = SimpleFileOptions::default();
            for i in 0..src.len() {
                let file = src.by_index(i).unwrap();
                let name = file.name().unwrap().into_owned();
                match change.iter().find(|(n, _)| *n == name) {
                    Some((_, Some(bytes))) => {
                        out.start_file(name, opts).unwrap();
                        out.write_all(bytes).unwrap();
                    }
                    Some((_, None)) => {}
                    None => out.raw_copy_file(file).unwrap(),
                }
            }
            for (name, bytes) in add {
                out.start_file(*name, opts).unwrap();
                out.write_all(bytes).unwrap();
            }
            out.finish().unwrap().into_inner()
        }

        fn part(xlsx: &[u8], name: &str) -> String {
            let mut zip = zip::ZipArchive::new(Cursor::new(xlsx)).unwrap();
            std::io::read_to_string(zip.by_name(name).unwrap()).unwrap()
        }

        #[test]
        fn a_school_sheet_reads_as_people_see_it() {
            let dir = tempfile::tempdir().unwrap();
            let path = write(&dir, "roster.xlsx", &school_sheet());
            let mut rows = open(&path, &Limits::default()).unwrap();
            assert_eq!(rows.format(), Format::Xlsx);
            let mut seen = Vec::new();
            while let Some(row) = rows.next() {
                seen.push((rows.line(), row.unwrap()));
            }
            let expected = table(&[
                &[
                    "姓名",
                    "监护人",
                    "",
                    "入学日期",
                    "身份证件号",
                    "电话",
                    "分数",
                    "在校",
                ],
                &[
                    "张三",
                    "李四",
                    "父亲",
                    "2014-09-01",
                    "440305201603010012",
                    "13800138000",
                    "92.5",
                    "TRUE",
                ],
                &["王五", "", "", "2014-09-01 08:30:00", "100000000000000000"],
                &["赵六"],
            ]);
            let lines: Vec<u64> = seen.iter().map(|(l, _)| *l).collect();
            let cells: Vec<Vec<String>> = seen.into_iter().map(|(_, c)| c).collect();
            assert_eq!(cells, expected);
            assert_eq!(lines, [1, 2, 3, 5]);
            assert_eq!(rows.fraction_done(), 1.0);
        }

        #[test]
        fn the_first_visible_worksheet_is_read() {
            let mut book = Workbook::new();
            book.add_worksheet().write_string(0, 0, "hidden").unwrap();
            book.add_worksheet().write_string(0, 0, "shown").unwrap();
            let xlsx = book.save_to_buffer().unwrap();
            assert_eq!(read_bytes(&xlsx).unwrap(), table(&[&["hidden"]]));
            // rust_xlsxwriter will not hide the active first sheet; Excel will.
            let workbook = part(&xlsx, "xl/workbook.xml")
                .replace("sheetId=\"1\"", "sheetId=\"1\" state=\"hidden\"");
            let xlsx = rezip(
                &xlsx,
                &[("xl/workbook.xml", Some(workbook.as_bytes()))],
                &[],
            );
            assert_eq!(read_bytes(&xlsx).unwrap(), table(&[&["shown"]]));
        }

        #[test]
        fn progress_follows_the_declared_dimension() {
            let mut book = Workbook::new();
            let s = book.add_worksheet();
            for r in 0..100 {
                s.write_string(r, 0, format!("r{r}")).unwrap();
            }
            let dir = tempfile::tempdir().unwrap();
            let path = write(&dir, "p.xlsx", &book.save_to_buffer().unwrap());
            let mut rows = open(&path, &Limits::default()).unwrap();
            rows.by_ref().take(50).for_each(|r| drop(r.unwrap()));
            assert!((rows.fraction_done() - 0.5).abs() < 0.01);
            rows.by_ref().for_each(drop);
            assert_eq!(rows.fraction_done(), 1.0);
        }

        #[test]
        fn cells_become_plain_text() {
            use calamine::{Data, ExcelDateTime as Dt, ExcelDateTimeType};
            let text = xlsx_in::cell_text;
            assert_eq!(text(Data::Float(44030520160301001.0)), "44030520160301000");
            assert_eq!(text(Data::Float(1e21)), "1000000000000000000000");
            assert_eq!(text(Data::Float(-3.0)), "-3");
            assert_eq!(text(Data::Float(-0.0)), "0");
            assert_eq!(text(Data::Float(0.1)), "0.1");
            assert_eq!(text(Data::Int(7)), "7");
            assert_eq!(text(Data::Bool(false)), "FALSE");
            let dt = |v| Data::DateTime(Dt::new(v, ExcelDateTimeType::DateTime, false));
            assert_eq!(text(dt(41883.0)), "2014-09-01");
            assert_eq!(text(dt(41883.5)), "2014-09-01 12:00:00");
            assert_eq!(text(dt(0.75)), "18:00:00");
            let span = Data::DateTime(Dt::new(1.5, ExcelDateTimeType::TimeDelta, false));
            assert_eq!(text(span), "1.5");
            assert_eq!(text(Data::Error(calamine::CellErrorType::Div0)), "");
        }

        #[test]
        fn a_zip_bomb_is_refused_before_inflating() {
            let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
            let opts =
                SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
            out.start_file("xl/worksheets/sheet1.xml", opts).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..50 {
                out.write_all(&zeros).unwrap();
            }
            let bomb = out.finish().unwrap().into_inner();
            assert!(bomb.len() < 1 << 20);
            assert_eq!(read_bytes(&bomb).unwrap_err(), SheetError::ZipBomb);
        }

        #[test]
        fn archive_limits() {
            let dir = tempfile::tempdir().unwrap();
            let path = write(&dir, "s.xlsx", &school_sheet());
            let few = Limits {
                max_entries: 3,
                ..Limits::default()
            };
            assert_eq!(open(&path, &few).unwrap_err(), SheetError::TooManyEntries);
            let small = Limits {
                max_uncompressed: 1_000,
                ..Limits::default()
            };
            assert_eq!(open(&path, &small).unwrap_err(), SheetError::TooLarge);
        }

        #[test]
        fn macros_are_refused() {
            let xlsx = school_sheet();
            let vba = rezip(&xlsx, &[], &[("xl/vbaProject.bin", b"\xd0\xcf\x11\xe0")]);
            assert_eq!(read_bytes(&vba).unwrap_err(), SheetError::Macros);
            let types = part(&xlsx, "[Content_Types].xml").replace(
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml",
                "application/vnd.ms-excel.sheet.macroEnabled.main+xml",
            );
            let xlsm = rezip(
                &xlsx,
                &[("[Content_Types].xml", Some(types.as_bytes()))],
                &[],
            );
            assert_eq!(read_bytes(&xlsm).unwrap_err(), SheetError::Macros);
            let xl4 = rezip(&xlsx, &[], &[("xl/macrosheets/sheet1.xml", b"<xm/>")]);
            assert_eq!(read_bytes(&xl4).unwrap_err(), SheetError::Macros);
        }

        #[test]
        fn external_links_are_refused() {
            let linked = rezip(
                &school_sheet(),
                &[],
                &[("xl/externalLinks/externalLink1.xml", b"<externalLink/>")],
            );
            assert_eq!(read_bytes(&linked).unwrap_err(), SheetError::ExternalLinks);
        }

        #[test]
        fn a_workbook_without_worksheets_has_no_sheet() {
            let xlsx = school_sheet();
            let workbook = part(&xlsx, "xl/workbook.xml");
            let start = workbook.find("<sheets>").unwrap();
            let end = workbook.find("</sheets>").unwrap() + "</sheets>".len();
            let none = format!("{}<sheets/>{}", &workbook[..start], &workbook[end..]);
            let empty = rezip(&xlsx, &[("xl/workbook.xml", Some(none.as_bytes()))], &[]);
            assert_eq!(read_bytes(&empty).unwrap_err(), SheetError::NoSheet);
        }

        #[test]
        fn damaged_and_foreign_archives() {
            let xlsx = school_sheet();
            assert_eq!(
                read_bytes(&xlsx[..xlsx.len() / 2]).unwrap_err(),
                SheetError::Unreadable
            );
            assert_eq!(
                read_bytes(b"PK\x03\x04 and then nothing like a zip").unwrap_err(),
                SheetError::Unreadable
            );
            let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
            out.start_file("readme.txt", SimpleFileOptions::default())
                .unwrap();
            out.write_all(b"hello").unwrap();
            let plain = out.finish().unwrap().into_inner();
            assert_eq!(read_bytes(&plain).unwrap_err(), SheetError::NotSpreadsheet);
            // The sheet part missing: the workbook names a part the archive lacks.
            let gutted = rezip(&xlsx, &[("xl/worksheets/sheet1.xml", None)], &[]);
            assert_eq!(read_bytes(&gutted).unwrap_err(), SheetError::Unreadable);
            // A sheet part that is not XML.
            let garbage = rezip(
                &xlsx,
                &[(
                    "xl/worksheets/sheet1.xml",
                    Some(b"<worksheet><sheetData><row><c r=\"A1\"><v>1</v>"),
                )],
                &[],
            );
            let rows = read_bytes(&garbage);
            assert_eq!(rows, Err(SheetError::Unreadable));
            let mut xls = XLS_MAGIC.to_vec();
            xls.extend_from_slice(&[0u8; 600]);
            assert_eq!(read_bytes(&xls).unwrap_err(), SheetError::Unreadable);
        }

        #[test]
        fn a_sheet_wider_than_the_limit_is_refused() {
            let mut book = Workbook::new();
            let s = book.add_worksheet();
            for c in 0..3_000u16 {
                s.write_string(0, c, format!("c{c}")).unwrap();
            }
            assert_eq!(
                read_bytes(&book.save_to_buffer().unwrap()),
                Err(SheetError::TooManyColumns { limit: 200 })
            );
            // A cell reference far to the right, whatever the sheet's size.
            let xlsx = school_sheet();
            let sheet = part(&xlsx, "xl/worksheets/sheet1.xml").replace("r=\"A5\"", "r=\"XFD5\"");
            let far = rezip(
                &xlsx,
                &[("xl/worksheets/sheet1.xml", Some(sheet.as_bytes()))],
                &[],
            );
            assert_eq!(
                read_bytes(&far),
                Err(SheetError::TooManyColumns { limit: 200 })
            );
        }

        #[test]
        fn dropping_rows_early_stops_the_reader() {
            let mut book = Workbook::new();
            let s = book.add_worksheet();
            for r in 0..5_000 {
                s.write_string(r, 0, "x").unwrap();
            }
            let dir = tempfile::tempdir().unwrap();
            let path = write(&dir, "d.xlsx", &book.save_to_buffer().unwrap());
            let mut rows = open(&path, &Limits::default()).unwrap();
            assert!(rows.next().unwrap().is_ok());
            drop(rows);
        }

        // ---- writers ----------------------------------------------------------------------

        fn column(header: &str) -> TemplateColumn {
            TemplateColumn {
                header: header.to_owned(),
                ..TemplateColumn::default()
            }
        }

        #[test]
        fn the_template_reads_back_as_its_headers() {
            let ethnic: Vec<String> = (1..=56).map(|i| format!("民族{i:02}")).collect();
            let columns = [
                TemplateColumn {
                    required: true,
                    ..column("姓名")
                },
                TemplateColumn {
                    required: true,
                    choices: vec!["男".into(), "女".into()],
                    ..column("性别")
                },
                TemplateColumn {
                    choices: ethnic,
                    ..column("民族")
                },
                TemplateColumn {
                    required: true,
                    text: true,
                    note: "18 位公民身份号码".into(),
                    ..column("身份证件号")
                },
                column("备注"),
            ];
            let help = ["每行一名学生。".to_owned(), "带 * 的列必填。".to_owned()];
            let xlsx = template_xlsx("学生名单", &columns, "填写说明", &help).unwrap();
            assert_eq!(
                read_bytes(&xlsx).unwrap(),
                table(&[&["*姓名", "*性别", "民族", "*身份证件号", "备注"]])
            );
            let sheet = part(&xlsx, "xl/worksheets/sheet1.xml");
            assert!(sheet.contains("lists!$A$2:$A$3"), "{sheet}");
            assert!(sheet.contains("lists!$B$2:$B$57"));
            assert!(sheet.contains("sqref=\"B2:B10001\""));
            assert!(sheet.contains("sqref=\"C2:C10001\""));
            assert!(sheet.contains("ySplit=\"1\""), "frozen top row");
            let workbook = part(&xlsx, "xl/workbook.xml");
            assert!(workbook.contains("name=\"学生名单\""));
            assert!(workbook.contains("name=\"填写说明\""));
            assert!(
                workbook.contains("name=\"lists\" sheetId=\"3\" state=\"hidden\""),
                "{workbook}"
            );
            assert!(part(&xlsx, "xl/comments1.xml").contains("18 位公民身份号码"));
            // The text format (built-in 49, "@") on the ID column.
            assert!(part(&xlsx, "xl/styles.xml").contains("numFmtId=\"49\""));
            let lists = part(&xlsx, "xl/worksheets/sheet3.xml");
            assert!(lists.contains("<dimension ref=\"A1:B57\"/>"), "{lists}");
        }

        #[test]
        fn rejected_rows_read_back_with_their_messages() {
            let headers: Vec<String> = ["姓名", "身份证件号", "性别"].map(String::from).to_vec();
            let rows = vec![
                Rejected {
                    line: 2,
                    cells: ["张三", "123", "男"].map(String::from).to_vec(),
                    problems: vec![
                        (Some(1), "身份证件号无效".into()),
                        (None, "与第 5 行重复".into()),
                    ],
                },
                Rejected {
                    line: 7,
                    cells: ["=HYPERLINK(\"x\")", "", "女", "多余"]
                        .map(String::from)
                        .to_vec(),
                    problems: vec![(Some(1), "缺少身份证件号".into()), (Some(9), "列外".into())],
                },
                Rejected {
                    line: 8,
                    cells: vec!["王五".into()],
                    problems: vec![(Some(2), "缺少性别".into())],
                },
            ];
            let xlsx = rejects_xlsx(&headers, "错误说明", rows.into_iter()).unwrap();
            assert_eq!(
                read_bytes(&xlsx).unwrap(),
                table(&[
                    &["姓名", "身份证件号", "性别", "错误说明"],
                    &["张三", "123", "男", "身份证件号无效；与第 5 行重复"],
                    &[
                        "=HYPERLINK(\"x\")",
                        "",
                        "女",
                        "缺少身份证件号；列外",
                        "多余"
                    ],
                    &["王五", "", "", "缺少性别"],
                ])
            );
            let sheet = part(&xlsx, "xl/worksheets/sheet1.xml");
            assert!(!sheet.contains("<f>"), "no formulas");
            let comments = part(&xlsx, "xl/comments1.xml");
            for m in ["身份证件号无效", "缺少身份证件号", "缺少性别"] {
                assert!(comments.contains(m), "{m}");
            }
            assert!(
                !comments.contains("与第 5 行重复"),
                "row messages are not cell comments"
            );
            assert!(part(&xlsx, "xl/styles.xml").contains("FFFFC7CE"));
        }

        #[test]
        fn a_big_list_writes_strings_only() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("export.xlsx");
            let headers: Vec<String> = ["姓名", "身份证件号", "电话"].map(String::from).to_vec();
            let mut list = XlsxList::new(&path, "名单", &headers).unwrap();
            let data = [
                ["张三", "440305201603010012", "013800138000"],
                ["=1+1", "", "+SUM(A1)"],
                ["李四", "0012", ""],
            ];
            for row in &data {
                list.row(&row.map(String::from)).unwrap();
            }
            for i in 0..20_000 {
                list.row(&[format!("学生{i}"), format!("{i:018}")]).unwrap();
            }
            list.finish().unwrap();
            let rows = read(&path, &Limits::default()).unwrap();
            assert_eq!(rows.len(), 20_004);
            assert_eq!(
                rows[..4],
                table(&[
                    &["姓名", "身份证件号", "电话"],
                    &["张三", "440305201603010012", "013800138000"],
                    &["=1+1", "", "+SUM(A1)"],
                    &["李四", "0012"],
                ])
            );
            assert_eq!(rows[20_003], ["学生19999", "000000000000019999"]);
            let bytes = std::fs::read(&path).unwrap();
            assert!(!part(&bytes, "xl/worksheets/sheet1.xml").contains("<f>"));
            assert!(part(&bytes, "xl/workbook.xml").contains("name=\"名单\""));
        }
    }
}
