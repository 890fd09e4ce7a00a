//! A file written through a shared memory map, for an append-only log whose appends must
//! reach the page cache (and so survive the process being killed) without a system call
//! each.
//!
//! [`MappedFile::create`] reserves the file's blocks up front (`fallocate`), so a store into
//! the map does not meet a full disk (which would raise `SIGBUS` rather than return an
//! error; copy-on-write file systems can still, see `create`), then maps it shared. [`MappedFile::write_at`] copies bytes into the map: once it
//! returns they are in the file's pages in the page cache, exactly as after a `write`, and
//! the kernel writes them back as it does any dirty page. [`MappedFile::finish`] unmaps the
//! file and cuts it to the bytes written. A file that was never finished (the process died)
//! keeps its reserved length, zero-filled after the last byte written: readers stop at the
//! first NUL.
//!
//! The map is only ever written, never read back or lent out, so what another process might
//! do to the file cannot change what this one relies on; the caller keeps other writers out
//! (the audit journal holds an exclusive lock on its directory).

use std::fs::File;
use std::io;
use std::sync::Arc;

use memmap2::MmapMut;

/// A file of fixed capacity, mapped shared and written through the map.
#[derive(Debug)]
pub struct MappedFile {
    map: MmapMut,
    file: Arc<File>,
}

impl MappedFile {
    /// Reserve `capacity` bytes of `file` on disk (extending it to that length) and map
    /// them. Fails, and maps nothing, when the blocks cannot be reserved (a full disk, a
    /// file system without preallocation).
    pub fn create(file: File, capacity: u64) -> io::Result<MappedFile> {
        if capacity == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mapped file needs a capacity",
            ));
        }
        let len = file.metadata()?.len();
        if len < capacity {
            rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, capacity)?;
        }
        // SAFETY: `map_mut` is unsafe because the mapped bytes can change underneath the
        // program if another process writes or truncates the file. This type never reads the
        // mapping and never hands out a reference to it: its only access is `write_at`, a
        // bounds-checked copy into the map, so no Rust value's validity depends on the mapped
        // bytes, and another writer can only change what the file holds. What remains is a
        // store that faults: a file truncated underneath the map, or a full disk on a
        // copy-on-write file system (where the reservation above does not cover a rewrite),
        // raises SIGBUS and the process ends; it is never undefined behaviour in this
        // program. Callers keep other writers out (see the module's documentation).
        #[allow(unsafe_code)]
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(MappedFile {
            map,
            file: Arc::new(file),
        })
    }

    /// Whether files in `dir` can have their blocks reserved (some network and FUSE file
    /// systems cannot): creates, reserves and removes a small probe file there.
    pub fn supported_in(dir: &std::path::Path) -> io::Result<bool> {
        let probe = dir.join(".mapped-file-probe");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&probe)?;
        let reserved = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, 4096);
        drop(file);
        std::fs::remove_file(&probe)?;
        match reserved {
            Ok(()) => Ok(true),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Bytes the file can hold.
    pub fn capacity(&self) -> usize {
        self.map.len()
    }

    /// Copy `data` into the file at `offset`. Fails, writing nothing, if it does not fit.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> io::Result<()> {
        let end = offset
            .checked_add(data.len())
            .filter(|end| *end <= self.map.len())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "write beyond the mapped file's capacity",
                )
            })?;
        self.map[offset..end].copy_from_slice(data);
        Ok(())
    }

    /// The open file (to sync it: `sync_data` writes back the pages written through the map).
    pub fn file(&self) -> &Arc<File> {
        &self.file
    }

    /// Unmap the file and cut it to its first `len` bytes.
    pub fn finish(self, len: u64) -> io::Result<()> {
        let MappedFile { map, file } = self;
        drop(map);
        file.set_len(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mapped-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("f")
    }

    fn open(path: &std::path::Path) -> File {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .unwrap()
    }

    #[test]
    fn writes_are_in_the_file_before_it_is_finished_and_finish_cuts_it() {
        let path = temp("write");
        let mut m = MappedFile::create(open(&path), 4096).unwrap();
        assert_eq!(m.capacity(), 4096);
        m.write_at(0, b"one\n").unwrap();
        m.write_at(4, b"two\n").unwrap();
        // Another reader sees the bytes at once, zeros after them.
        let mut seen = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut seen).unwrap();
        assert_eq!(seen.len(), 4096);
        assert_eq!(&seen[..8], b"one\ntwo\n");
        assert!(seen[8..].iter().all(|b| *b == 0));
        m.finish(8).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one\ntwo\n");
    }

    #[test]
    fn a_write_past_the_capacity_is_refused_whole() {
        let path = temp("bounds");
        let mut m = MappedFile::create(open(&path), 16).unwrap();
        assert!(m.write_at(10, b"0123456789").is_err());
        assert!(m.write_at(usize::MAX, b"x").is_err());
        m.write_at(6, b"0123456789").unwrap();
        m.finish(16).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[6..], b"0123456789");
    }

    #[test]
    fn a_local_directory_supports_reserved_files() {
        let path = temp("probe");
        let dir = path.parent().unwrap();
        assert!(MappedFile::supported_in(dir).unwrap());
        assert_eq!(
            std::fs::read_dir(dir).unwrap().count(),
            0,
            "the probe is removed"
        );
    }

    #[test]
    fn a_zero_capacity_is_refused() {
        let path = temp("zero");
        assert!(MappedFile::create(open(&path), 0).is_err());
    }
}
