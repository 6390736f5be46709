//! Journals and temporary files, kept in guest memory: they never reach
//! storage. A named file (a rollback journal) is shared by name for as long
//! as it exists, so SQLite can close, reopen and delete it as on a disk.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub type Shared = Rc<RefCell<Vec<u8>>>;

thread_local! {
    static FILES: RefCell<HashMap<String, Shared>> = RefCell::new(HashMap::new());
}

/// Opens (creating if missing) the named in-memory file, or a private one.
pub fn open(name: Option<&str>) -> Shared {
    match name {
        None => Rc::new(RefCell::new(Vec::new())),
        Some(name) => FILES.with(|files| {
            files
                .borrow_mut()
                .entry(name.to_string())
                .or_insert_with(|| Rc::new(RefCell::new(Vec::new())))
                .clone()
        }),
    }
}

pub fn delete(name: &str) -> bool {
    FILES.with(|files| files.borrow_mut().remove(name).is_some())
}

pub fn read(file: &Shared, buf: &mut [u8], offset: usize) -> bool {
    let data = file.borrow();
    let available = data.len().saturating_sub(offset).min(buf.len());
    if available > 0 {
        buf[..available].copy_from_slice(&data[offset..offset + available]);
    }
    buf[available..].fill(0);
    available == buf.len()
}

pub fn write(file: &Shared, buf: &[u8], offset: usize) {
    let mut data = file.borrow_mut();
    let end = offset + buf.len();
    if data.len() < end {
        data.resize(end, 0);
    }
    data[offset..end].copy_from_slice(buf);
}

pub fn truncate(file: &Shared, size: usize) {
    let mut data = file.borrow_mut();
    data.truncate(size);
    if data.capacity() > 2 * size.max(4096) {
        data.shrink_to_fit(); // journal_mode=TRUNCATE gives the memory back
    }
}

/// Empties the named file, if it exists, and gives its memory back. For a
/// journal once its write transaction is over: journals here are never
/// hot (nothing outlives the transaction storage saw), so what
/// `journal_mode=PERSIST` leaves behind is dead weight.
pub fn release(name: &str) {
    FILES.with(|files| {
        if let Some(file) = files.borrow().get(name) {
            let mut data = file.borrow_mut();
            data.clear();
            data.shrink_to_fit();
        }
    });
}
