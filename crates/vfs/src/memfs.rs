//! Journals and temporary files, kept in guest memory: they never reach
//! storage. A named file (a rollback journal) is shared by name for as long
//! as it exists, so SQLite can close, reopen and delete it as on a disk.
//!
//! Files are chunked ([`CHUNK_BYTES`]), so a growing journal never copies
//! itself into a buffer twice its size, and every byte they hold counts
//! against one budget per VFS (`MemoryPlan::journal_bytes_max`: a write
//! transaction may change up to this much of what the database held before
//! it; new pages are not limited by it, they spill to storage;
//! `PRAGMA donut_journal_bytes_max`): past it a write fails with
//! `SQLITE_FULL` and a message, where growing further would stop the whole
//! instance at its memory limit (a trap, not an error SQLite can roll back).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Size of one chunk of an in-memory file.
pub const CHUNK_BYTES: usize = 64 << 10;

/// The bytes every in-memory file of a VFS holds, and the most they may.
#[derive(Debug)]
pub struct Budget {
    held_bytes: Cell<usize>,
    budget_bytes: Cell<usize>,
}

/// One in-memory file: chunks of [`CHUNK_BYTES`], `len` bytes long. Bytes
/// past `len` in the last chunk are zero.
pub struct MemFile {
    chunks: Vec<Box<[u8]>>,
    len: usize,
    budget: Rc<Budget>,
}

pub type Shared = Rc<RefCell<MemFile>>;

/// A write that would take the in-memory files past their budget.
#[derive(Debug)]
pub struct Full {
    pub held_bytes: usize,
    pub wanted_bytes: usize,
    pub budget_bytes: usize,
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the transaction's rollback journal would need {} more bytes of memory past the {} \
             held (budget {} bytes, PRAGMA donut_journal_bytes_max): commit in smaller \
             transactions or raise the budget",
            self.wanted_bytes, self.held_bytes, self.budget_bytes
        )
    }
}

/// A VFS's in-memory files: named ones shared by name, private ones, and
/// their one budget.
pub struct MemFs {
    files: RefCell<HashMap<String, Shared>>,
    budget: Rc<Budget>,
}

impl MemFs {
    pub fn new(budget_bytes: usize) -> MemFs {
        MemFs {
            files: RefCell::default(),
            budget: Rc::new(Budget {
                held_bytes: Cell::new(0),
                budget_bytes: Cell::new(budget_bytes),
            }),
        }
    }

    /// Bytes the in-memory files hold now.
    pub fn held_bytes(&self) -> usize {
        self.budget.held_bytes.get()
    }

    /// The budget for [`MemFs::held_bytes`].
    pub fn budget_bytes(&self) -> usize {
        self.budget.budget_bytes.get()
    }

    pub fn set_budget_bytes(&self, bytes: usize) {
        self.budget.budget_bytes.set(bytes);
    }

    /// Opens (creating if missing) the named in-memory file, or a private one.
    pub fn open(&self, name: Option<&str>) -> Shared {
        let new = || {
            Rc::new(RefCell::new(MemFile {
                chunks: Vec::new(),
                len: 0,
                budget: self.budget.clone(),
            }))
        };
        match name {
            None => new(),
            Some(name) => self
                .files
                .borrow_mut()
                .entry(name.to_string())
                .or_insert_with(new)
                .clone(),
        }
    }

    pub fn delete(&self, name: &str) -> bool {
        self.files.borrow_mut().remove(name).is_some()
    }

    /// Empties the named file, if it exists, and gives its memory back. For
    /// a journal once its write transaction is over: journals here are
    /// never hot (nothing outlives the transaction storage saw), so what
    /// `journal_mode=PERSIST` leaves behind is dead weight.
    pub fn release(&self, name: &str) {
        if let Some(file) = self.files.borrow().get(name) {
            file.borrow_mut().truncate(0);
        }
    }
}

impl MemFile {
    pub fn len(&self) -> usize {
        self.len
    }

    fn read(&self, buf: &mut [u8], offset: usize) -> bool {
        let available = self.len.saturating_sub(offset).min(buf.len());
        let mut done = 0;
        while done < available {
            let at = offset + done;
            let chunk = &self.chunks[at / CHUNK_BYTES];
            let from = at % CHUNK_BYTES;
            let n = (CHUNK_BYTES - from).min(available - done);
            buf[done..done + n].copy_from_slice(&chunk[from..from + n]);
            done += n;
        }
        buf[available..].fill(0);
        available == buf.len()
    }

    fn write(&mut self, buf: &[u8], offset: usize) -> Result<(), Full> {
        let end = offset + buf.len();
        let chunks_needed = end.div_ceil(CHUNK_BYTES);
        if chunks_needed > self.chunks.len() {
            let wanted_bytes = (chunks_needed - self.chunks.len()) * CHUNK_BYTES;
            let held_bytes = self.budget.held_bytes.get();
            let budget_bytes = self.budget.budget_bytes.get();
            if held_bytes + wanted_bytes > budget_bytes {
                return Err(Full {
                    held_bytes,
                    wanted_bytes,
                    budget_bytes,
                });
            }
            self.chunks
                .resize_with(chunks_needed, || vec![0u8; CHUNK_BYTES].into_boxed_slice());
            self.budget.held_bytes.set(held_bytes + wanted_bytes);
        }
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done;
            let chunk = &mut self.chunks[at / CHUNK_BYTES];
            let from = at % CHUNK_BYTES;
            let n = (CHUNK_BYTES - from).min(buf.len() - done);
            chunk[from..from + n].copy_from_slice(&buf[done..done + n]);
            done += n;
        }
        self.len = self.len.max(end);
        Ok(())
    }

    /// Shortens the file to `size` bytes (longer sizes change nothing, as
    /// reads past the end see zeros) and gives whole chunks back.
    fn truncate(&mut self, size: usize) {
        if size >= self.len {
            return;
        }
        let keep = size.div_ceil(CHUNK_BYTES);
        let freed_bytes = (self.chunks.len() - keep) * CHUNK_BYTES;
        self.chunks.truncate(keep);
        self.chunks.shrink_to_fit();
        let held = &self.budget.held_bytes;
        assert!(
            held.get() >= freed_bytes,
            "in-memory file bytes undercounted"
        );
        held.set(held.get() - freed_bytes);
        // Reads, and a later write past a gap, must see zeros here.
        if let Some(last) = self.chunks.last_mut()
            && !size.is_multiple_of(CHUNK_BYTES)
        {
            last[size % CHUNK_BYTES..].fill(0);
        }
        self.len = size;
    }
}

impl Drop for MemFile {
    fn drop(&mut self) {
        self.truncate(0);
    }
}

pub fn read(file: &Shared, buf: &mut [u8], offset: usize) -> bool {
    file.borrow().read(buf, offset)
}

pub fn write(file: &Shared, buf: &[u8], offset: usize) -> Result<(), Full> {
    file.borrow_mut().write(buf, offset)
}

/// `journal_mode=TRUNCATE` gives the memory back through this.
pub fn truncate(file: &Shared, size: usize) {
    file.borrow_mut().truncate(size);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The budget an instance without a memory limit gets.
    const JOURNAL_BYTES_MAX: usize = crate::memory::JOURNAL_BYTES_MAX_DEFAULT;

    fn file(fs: &MemFs) -> Shared {
        fs.open(None)
    }

    #[test]
    fn reads_what_was_written_across_chunks_and_zeros_past_the_end() {
        let fs = MemFs::new(JOURNAL_BYTES_MAX);
        let f = file(&fs);
        let data: Vec<u8> = (0..3 * CHUNK_BYTES + 17).map(|i| i as u8).collect();
        write(&f, &data, 5).unwrap();
        let mut back = vec![1u8; data.len() + 10];
        assert!(!read(&f, &mut back, 5), "a read past the end is short");
        assert_eq!(&back[..data.len()], &data[..]);
        assert!(back[data.len()..].iter().all(|&b| b == 0));
        assert_eq!(f.borrow().len(), data.len() + 5);
    }

    #[test]
    fn truncation_zeroes_the_tail_and_gives_chunks_back() {
        let fs = MemFs::new(JOURNAL_BYTES_MAX);
        let f = file(&fs);
        let before = fs.held_bytes();
        write(&f, &vec![7u8; 2 * CHUNK_BYTES], 0).unwrap();
        assert_eq!(fs.held_bytes(), before + 2 * CHUNK_BYTES);
        truncate(&f, 10);
        assert_eq!(fs.held_bytes(), before + CHUNK_BYTES);
        write(&f, &[9], 100).unwrap();
        let mut back = vec![1u8; 101];
        assert!(read(&f, &mut back, 0));
        assert!(back[..10].iter().all(|&b| b == 7));
        assert!(
            back[10..100].iter().all(|&b| b == 0),
            "stale bytes after truncate"
        );
        assert_eq!(back[100], 9);
        drop(f);
        assert_eq!(fs.held_bytes(), before);
    }

    #[test]
    fn a_write_past_the_budget_fails_and_changes_nothing() {
        let fs = MemFs::new(JOURNAL_BYTES_MAX);
        let f = file(&fs);
        fs.set_budget_bytes(fs.held_bytes() + 2 * CHUNK_BYTES);
        write(&f, &[1u8; 10], 0).unwrap();
        let full = write(&f, &[2u8; 10], 2 * CHUNK_BYTES).unwrap_err();
        assert!(full.to_string().contains("donut_journal_bytes_max"));
        assert_eq!(f.borrow().len(), 10);
        fs.set_budget_bytes(JOURNAL_BYTES_MAX);
        write(&f, &[2u8; 10], 2 * CHUNK_BYTES).unwrap();
    }
}
