//! Appends every audit event as one JSON line to a file.
