//! `index.json` at the root of a store: every image and its versions.
//! Derived data (rebuilt from a listing), so readers never rely on it to
//! find versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Index {
    pub schema_version: u32,
    pub images: BTreeMap<String, IndexEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IndexEntry {
    pub versions: Vec<String>,
    pub updated_at: String,
}
