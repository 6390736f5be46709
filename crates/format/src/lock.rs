//! The lock item: a lease per database, for writers that queue instead of
//! racing (docs/format.md, "Lock"). Its token only grows, so a commit can be
//! fenced by the lease it was made under.

use crate::FormatError;

const LOCK_MAGIC: [u8; 4] = *b"DLK1";
/// Most holders of one shared lease.
pub const LOCK_HOLDERS_MAX: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    Shared,
    Exclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHolder {
    /// Random id of the holder's lease.
    pub owner: u64,
    /// Wall-clock expiry, milliseconds since the Unix epoch.
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    /// Incremented by every grant; never decreases.
    pub token: u64,
    pub mode: LockMode,
    pub holders: Vec<LockHolder>,
}

impl LockState {
    pub fn unlocked(token: u64) -> LockState {
        LockState {
            token,
            mode: LockMode::Shared,
            holders: Vec::new(),
        }
    }

    /// Holders whose lease has not expired at `now_ms`.
    pub fn live_holders(&self, now_ms: u64) -> impl Iterator<Item = &LockHolder> {
        self.holders.iter().filter(move |h| h.expires_ms > now_ms)
    }

    pub fn encode(&self) -> Vec<u8> {
        assert!(self.holders.len() <= LOCK_HOLDERS_MAX);
        let mut out = Vec::with_capacity(16 + self.holders.len() * 16);
        out.extend_from_slice(&LOCK_MAGIC);
        out.extend_from_slice(&self.token.to_le_bytes());
        out.push(match self.mode {
            LockMode::Shared => 0,
            LockMode::Exclusive => 1,
        });
        out.push(self.holders.len() as u8);
        for h in &self.holders {
            out.extend_from_slice(&h.owner.to_le_bytes());
            out.extend_from_slice(&h.expires_ms.to_le_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<LockState, FormatError> {
        const WHAT: &str = "lock";
        if bytes.len() < 14 {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need: 14,
            });
        }
        if bytes[..4] != LOCK_MAGIC {
            return Err(FormatError::BadMagic { what: WHAT });
        }
        let token = u64::from_le_bytes(bytes[4..12].try_into().unwrap());
        let mode = match bytes[12] {
            0 => LockMode::Shared,
            1 => LockMode::Exclusive,
            m => {
                return Err(FormatError::Invalid {
                    what: WHAT,
                    detail: format!("mode {m}"),
                });
            }
        };
        let count = bytes[13] as usize;
        let need = 14 + count * 16;
        if bytes.len() != need || count > LOCK_HOLDERS_MAX {
            return Err(FormatError::Truncated {
                what: WHAT,
                len: bytes.len(),
                need,
            });
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        let holders = (0..count)
            .map(|i| LockHolder {
                owner: u64_at(14 + i * 16),
                expires_ms: u64_at(22 + i * 16),
            })
            .collect();
        Ok(LockState {
            token,
            mode,
            holders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_round_trips() {
        let state = LockState {
            token: 7,
            mode: LockMode::Exclusive,
            holders: vec![LockHolder {
                owner: 1,
                expires_ms: 99,
            }],
        };
        assert_eq!(LockState::decode(&state.encode()).unwrap(), state);
        assert!(LockState::decode(&state.encode()[..20]).is_err());
        assert_eq!(state.live_holders(98).count(), 1);
        assert_eq!(state.live_holders(99).count(), 0);
    }
}
