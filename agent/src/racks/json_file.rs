//! Reading a JSON file strictly, as the planner's `--from` file ([`super::input`]) and a
//! plan for `racks apply -f` ([`super::reassignment`]) are read: the documents deny unknown
//! keys, and every error names the JSON path of the bad field, because hand-written and
//! hand-edited files are where typos happen.

use std::path::Path;

use serde::de::DeserializeOwned;

/// A JSON file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JsonFileError {
    /// The file could not be read.
    #[error("{origin}: cannot read: {message}")]
    Read { origin: String, message: String },
    /// A field is malformed or inconsistent; `path` is its JSON path.
    #[error("{origin}: {path}: {message}")]
    Invalid {
        origin: String,
        path: String,
        message: String,
    },
}

impl JsonFileError {
    /// The field at JSON path `path` of `origin` is wrong: `message`.
    pub fn invalid(origin: &str, path: String, message: String) -> Self {
        Self::Invalid {
            origin: origin.to_owned(),
            path,
            message,
        }
    }
}

/// Reads the file at `path` and parses its text with `parse`, the path as the origin
/// errors name.
pub(crate) fn read<T>(
    path: &Path,
    parse: impl FnOnce(&str, &str) -> Result<T, JsonFileError>,
) -> Result<T, JsonFileError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| JsonFileError::Read {
        origin: origin.clone(),
        message: e.to_string(),
    })?;
    parse(&text, &origin)
}

/// Deserializes `text`, which must hold the one document and nothing after it; an error
/// names the JSON path where it is (`(end)` for what follows the document).
pub(crate) fn parse<D: DeserializeOwned>(text: &str, origin: &str) -> Result<D, JsonFileError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let doc = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        JsonFileError::invalid(origin, path, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| JsonFileError::invalid(origin, "(end)".to_owned(), e.to_string()))?;
    Ok(doc)
}
