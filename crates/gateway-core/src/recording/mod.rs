//! Session recordings: what a proxy writes while an interactive session runs (a shell, later
//! a Kubernetes exec), behind one trait, and how `portcullis replay` reads them back. The one
//! format today is asciicast v2.

mod asciicast;

pub use asciicast::{Asciicast, CastEvent, Header, RECORDINGS_DIR, parse, path_in};

/// A recording being written. Writes never fail the session: a recorder that cannot write
/// says so at [`finish`](Recorder::finish), and the session's end event records it.
pub trait Recorder: Send {
    /// Its path relative to the state directory, as the audit event links it.
    fn relative(&self) -> &str;
    /// Output from the target.
    fn output(&mut self, data: &[u8]);
    /// Input from the client.
    fn input(&mut self, data: &[u8]);
    /// The client's terminal changed size.
    fn resize(&mut self, cols: u32, rows: u32);
    /// A note in the timeline (the decision that allowed the session).
    fn marker(&mut self, text: &str);
    /// Flush and close; whether everything was written.
    fn finish(self: Box<Self>) -> bool;
}
