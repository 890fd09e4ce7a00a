//! Message tag bytes. Frontend and backend reuse letters with different meanings (`'D'` is
//! Describe from a client but DataRow from a server), so they live in separate modules.

/// Tags of messages a client sends to a server.
pub mod frontend {
    /// Simple query.
    pub const QUERY: u8 = b'Q';
    /// Extended protocol: prepare a statement.
    pub const PARSE: u8 = b'P';
    /// Extended protocol: bind parameters into a portal.
    pub const BIND: u8 = b'B';
    /// Extended protocol: describe a statement or portal.
    pub const DESCRIBE: u8 = b'D';
    /// Extended protocol: run a portal.
    pub const EXECUTE: u8 = b'E';
    /// Extended protocol: end of a pipeline step.
    pub const SYNC: u8 = b'S';
    /// Extended protocol: ask the server to flush its output.
    pub const FLUSH: u8 = b'H';
    /// Extended protocol: close a statement or portal.
    pub const CLOSE: u8 = b'C';
    /// End of the session.
    pub const TERMINATE: u8 = b'X';
    /// Password, SASL initial response, SASL response or GSS response.
    pub const PASSWORD: u8 = b'p';
    /// COPY FROM STDIN payload.
    pub const COPY_DATA: u8 = b'd';
    /// COPY FROM STDIN finished.
    pub const COPY_DONE: u8 = b'c';
    /// COPY FROM STDIN aborted by the client.
    pub const COPY_FAIL: u8 = b'f';
    /// Legacy fast-path function call.
    pub const FUNCTION_CALL: u8 = b'F';
}

/// Tags of messages a server sends to a client.
pub mod backend {
    /// Authentication request or outcome.
    pub const AUTH: u8 = b'R';
    /// Run-time parameter report.
    pub const PARAMETER_STATUS: u8 = b'S';
    /// Cancellation key.
    pub const BACKEND_KEY: u8 = b'K';
    /// Ready for a new query, with transaction status.
    pub const READY: u8 = b'Z';
    /// Error response.
    pub const ERROR: u8 = b'E';
    /// Notice response.
    pub const NOTICE: u8 = b'N';
    /// Result column descriptions.
    pub const ROW_DESCRIPTION: u8 = b'T';
    /// One result row.
    pub const DATA_ROW: u8 = b'D';
    /// Command finished, with its tag.
    pub const COMMAND_COMPLETE: u8 = b'C';
    /// The query string was empty.
    pub const EMPTY_QUERY: u8 = b'I';
    /// Parse finished.
    pub const PARSE_COMPLETE: u8 = b'1';
    /// Bind finished.
    pub const BIND_COMPLETE: u8 = b'2';
    /// Close finished.
    pub const CLOSE_COMPLETE: u8 = b'3';
    /// Describe: the statement or portal returns no rows.
    pub const NO_DATA: u8 = b'n';
    /// Describe: parameter types of a statement.
    pub const PARAMETER_DESCRIPTION: u8 = b't';
    /// Execute stopped at its row limit.
    pub const PORTAL_SUSPENDED: u8 = b's';
    /// COPY FROM STDIN started.
    pub const COPY_IN_RESPONSE: u8 = b'G';
    /// COPY TO STDOUT started.
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    /// Bidirectional COPY (replication) started.
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
    /// COPY TO STDOUT payload.
    pub const COPY_DATA: u8 = b'd';
    /// COPY TO STDOUT finished.
    pub const COPY_DONE: u8 = b'c';
    /// LISTEN/NOTIFY notification.
    pub const NOTIFICATION: u8 = b'A';
    /// Result of a fast-path function call.
    pub const FUNCTION_CALL_RESPONSE: u8 = b'V';
    /// The server speaks an older minor version or lacks some protocol options.
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
}
