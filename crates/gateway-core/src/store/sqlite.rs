//! The embedded SQLite store.
pub struct SqliteStore;
