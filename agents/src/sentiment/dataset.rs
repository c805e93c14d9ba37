//! Labelled text files: `text,label` CSV with 0 = bearish, 1 = bullish, 2 = neutral (the format of
//! `data/financial_tweets_sentiment_train.csv`). Texts may hold commas, quotes and newlines inside quotes, so
//! the file is read with a real CSV parser; a row that still fails is reported with its file and line and
//! left out, never guessed at.

use std::fmt;
use std::path::{Path, PathBuf};

use jarvis_domain::sentiment::SentimentLabel;

/// One labelled text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledText {
    /// The line of the file where the row starts (1 is the header).
    pub line: u64,
    /// The text.
    pub text: String,
    /// Its label.
    pub label: SentimentLabel,
}

/// A row that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The line of the file where the row starts.
    pub line: u64,
    /// What is wrong with it.
    pub reason: String,
}

/// The rows of a labelled file.
#[derive(Debug, Clone)]
pub struct LabelledFile {
    /// The file read.
    pub path: PathBuf,
    /// The good rows, in file order.
    pub rows: Vec<LabelledText>,
    /// The rows left out, in file order.
    pub bad_rows: Vec<BadRow>,
}

impl LabelledFile {
    /// `file:line: reason`.
    pub fn bad_row_message(&self, bad: &BadRow) -> String {
        format!("{}:{}: {}", self.path.display(), bad.line, bad.reason)
    }
}

/// Why a file cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// The file does not exist or cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The first line is not `text,label`.
    #[error("{path}:1: header is {found:?}, expected \"text,label\" (label 0 = bearish, 1 = bullish, 2 = neutral)")]
    Header {
        /// The file.
        path: PathBuf,
        /// The header found.
        found: String,
    },
    /// The file breaks off in a way the CSV reader cannot step over.
    #[error("{path}:{line}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Where.
        line: u64,
        /// The reader's message.
        reason: String,
    },
}

/// A label code of the file format: `0`, `1` or `2`.
///
/// # Errors
/// A message naming the value.
pub fn parse_label(code: &str) -> Result<SentimentLabel, String> {
    match code.trim() {
        "0" => Ok(SentimentLabel::Bearish),
        "1" => Ok(SentimentLabel::Bullish),
        "2" => Ok(SentimentLabel::Neutral),
        other => Err(format!(
            "label {other:?} is not 0 (bearish), 1 (bullish) or 2 (neutral)"
        )),
    }
}

/// Reads a labelled file.
///
/// # Errors
/// [`DatasetError`] for a missing file, a wrong header, or an I/O failure mid-file. Bad rows are not errors:
/// they are listed in [`LabelledFile::bad_rows`].
pub fn read_labelled(path: &Path) -> Result<LabelledFile, DatasetError> {
    let file = std::fs::File::open(path).map_err(|source| DatasetError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_labelled_from(path, file)
}

/// Reads labelled rows from `input`, naming `path` in messages.
///
/// # Errors
/// As [`read_labelled`].
pub fn read_labelled_from(
    path: &Path,
    input: impl std::io::Read,
) -> Result<LabelledFile, DatasetError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header = reader
        .byte_headers()
        .map_err(|e| DatasetError::Unreadable {
            path: path.to_path_buf(),
            line: 1,
            reason: e.to_string(),
        })?
        .clone();
    let names: Vec<String> = header
        .iter()
        .map(|f| {
            String::from_utf8_lossy(f)
                .trim_start_matches('\u{feff}')
                .trim()
                .to_ascii_lowercase()
        })
        .collect();
    if names != ["text", "label"] {
        return Err(DatasetError::Header {
            path: path.to_path_buf(),
            found: names.join(","),
        });
    }
    let mut out = LabelledFile {
        path: path.to_path_buf(),
        rows: Vec::new(),
        bad_rows: Vec::new(),
    };
    let mut record = csv::ByteRecord::new();
    loop {
        let line = reader.position().line();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line());
                match row(&record) {
                    Ok((text, label)) => out.rows.push(LabelledText { line, text, label }),
                    Err(reason) => out.bad_rows.push(BadRow { line, reason }),
                }
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => {
                    return Err(DatasetError::Unreadable {
                        path: path.to_path_buf(),
                        line,
                        reason: e.to_string(),
                    })
                }
                _ => out.bad_rows.push(BadRow {
                    line: e.position().map_or(line, |p| p.line()),
                    reason: e.to_string(),
                }),
            },
        }
    }
    Ok(out)
}

fn row(record: &csv::ByteRecord) -> Result<(String, SentimentLabel), String> {
    if record.len() != 2 {
        return Err(format!("{} fields, expected 2 (text,label)", record.len()));
    }
    let text = std::str::from_utf8(&record[0])
        .map_err(|e| format!("text is not UTF-8: {e}"))?
        .to_string();
    if text.trim().is_empty() {
        return Err("text is empty".into());
    }
    let label = std::str::from_utf8(&record[1]).map_err(|e| format!("label is not UTF-8: {e}"))?;
    Ok((text, parse_label(label)?))
}

impl fmt::Display for LabelledText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {} ({}): {}", self.line, self.label, self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &[u8]) -> Result<LabelledFile, DatasetError> {
        read_labelled_from(Path::new("t.csv"), text)
    }

    #[test]
    fn quoted_newlines_commas_and_quotes_survive() {
        let f = read(b"text,label\n\"a, \"\"b\"\"\nc\",1\nplain,0\n").unwrap();
        assert_eq!(f.rows.len(), 2, "{:?}", f.bad_rows);
        assert_eq!(f.rows[0].text, "a, \"b\"\nc");
        assert_eq!(f.rows[0].label, SentimentLabel::Bullish);
        assert_eq!(f.rows[1].line, 4);
    }

    #[test]
    fn bad_rows_are_reported_with_file_and_line() {
        let f = read(b"text,label\nok,2\nno label\nx,7\n,1\n\xff\xfe,0\n").unwrap();
        assert_eq!(f.rows.len(), 1);
        let msgs: Vec<String> = f.bad_rows.iter().map(|b| f.bad_row_message(b)).collect();
        assert_eq!(msgs[0], "t.csv:3: 1 fields, expected 2 (text,label)");
        assert!(msgs[1].starts_with("t.csv:4: label \"7\""), "{msgs:?}");
        assert_eq!(msgs[2], "t.csv:5: text is empty");
        assert!(
            msgs[3].starts_with("t.csv:6: text is not UTF-8"),
            "{msgs:?}"
        );
    }

    #[test]
    fn a_wrong_header_or_missing_file_is_a_clear_error() {
        let err = read(b"tweet,sentiment\nx,1\n").unwrap_err().to_string();
        assert!(
            err.contains("t.csv:1: header is \"tweet,sentiment\""),
            "{err}"
        );
        let err = read_labelled(Path::new("/nonexistent/x.csv"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot open /nonexistent/x.csv"), "{err}");
    }
}
