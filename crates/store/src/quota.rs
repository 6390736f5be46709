//! What one call may ask of storage, and what it has asked.

/// Per-call limits on storage work; `None` is no limit. A call that
/// reaches one is stopped (`QuotaExceeded` says which).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallQuota {
    /// Storage calls: root reads, sector reads and writes, commits, lock
    /// calls, creations.
    pub storage_calls_max: Option<u64>,
    /// Sectors read (cache hits included) and written.
    pub sectors_max: Option<u64>,
    /// Bytes of sectors and roots read and written.
    pub bytes_max: Option<u64>,
}

/// What a call has used of its quota.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuotaUse {
    pub storage_calls: u64,
    pub sectors: u64,
    pub bytes: u64,
}

/// The per-call limit a call reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("its limit of {max} storage calls")]
    StorageCalls { max: u64 },
    #[error("its limit of {max} sectors")]
    Sectors { max: u64 },
    #[error("its limit of {max} storage bytes")]
    Bytes { max: u64 },
    /// What was left of its tenant's budget of read capacity units
    /// ([`crate::client::Client::limit_units_from_now`]).
    #[error("what was left of its budget: {max} read capacity units")]
    ReadUnits { max: u64 },
    /// What was left of its tenant's budget of write capacity units.
    #[error("what was left of its budget: {max} write capacity units")]
    WriteUnits { max: u64 },
}

impl QuotaExceeded {
    /// A stable name for the limit (metrics, JSON errors).
    pub fn limit_name(&self) -> &'static str {
        match self {
            QuotaExceeded::StorageCalls { .. } => "storage_calls",
            QuotaExceeded::Sectors { .. } => "sectors",
            QuotaExceeded::Bytes { .. } => "bytes",
            QuotaExceeded::ReadUnits { .. } => "read_units",
            QuotaExceeded::WriteUnits { .. } => "write_units",
        }
    }
}

impl CallQuota {
    /// No limits.
    pub fn unlimited() -> CallQuota {
        CallQuota::default()
    }

    /// Adds work to `used`, or says which limit it would pass (and adds
    /// nothing).
    pub fn charge(
        &self,
        used: &mut QuotaUse,
        storage_calls: u64,
        sectors: u64,
        bytes: u64,
    ) -> Result<(), QuotaExceeded> {
        let next = QuotaUse {
            storage_calls: used.storage_calls.saturating_add(storage_calls),
            sectors: used.sectors.saturating_add(sectors),
            bytes: used.bytes.saturating_add(bytes),
        };
        let over = |max: Option<u64>, value: u64| max.filter(|&max| value > max);
        if let Some(max) = over(self.storage_calls_max, next.storage_calls) {
            return Err(QuotaExceeded::StorageCalls { max });
        }
        if let Some(max) = over(self.sectors_max, next.sectors) {
            return Err(QuotaExceeded::Sectors { max });
        }
        if let Some(max) = over(self.bytes_max, next.bytes) {
            return Err(QuotaExceeded::Bytes { max });
        }
        *used = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_past_a_limit_is_refused_and_not_counted() {
        let quota = CallQuota {
            storage_calls_max: Some(2),
            sectors_max: Some(10),
            bytes_max: None,
        };
        let mut used = QuotaUse::default();
        quota.charge(&mut used, 1, 4, 1 << 40).unwrap();
        assert_eq!(
            quota.charge(&mut used, 1, 7, 0),
            Err(QuotaExceeded::Sectors { max: 10 })
        );
        assert_eq!(used.sectors, 4, "a refused charge adds nothing");
        quota.charge(&mut used, 1, 6, 0).unwrap();
        assert_eq!(
            quota.charge(&mut used, 1, 0, 0),
            Err(QuotaExceeded::StorageCalls { max: 2 })
        );
    }
}
