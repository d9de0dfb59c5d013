//! Embedded task state in redb. Every write is a durable transaction.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

const TASKS: TableDefinition<&str, &[u8]> = TableDefinition::new("tasks");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(
        "cannot open the state database {path} (is another vouchd using this state directory?)"
    )]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("state database operation failed: {0}")]
    Op(String),
    #[error("state database holds a record that does not decode")]
    Decode(#[source] serde_json::Error),
}

fn op<E: std::fmt::Display>(e: E) -> DbError {
    DbError::Op(e.to_string())
}

pub(crate) struct Db {
    db: Database,
    /// Tests make every write fail from here on, as a full or failing disk would.
    #[cfg(test)]
    fail_writes: std::sync::atomic::AtomicBool,
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, DbError> {
        let db = Database::create(path).map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let tx = db.begin_write().map_err(op)?;
        tx.open_table(TASKS).map_err(op)?;
        tx.commit().map_err(op)?;
        Ok(Db {
            db,
            #[cfg(test)]
            fail_writes: Default::default(),
        })
    }

    /// From now on, every write fails (`on`) or goes through again.
    #[cfg(test)]
    pub(crate) fn fail_writes(&self, on: bool) {
        self.fail_writes
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_write(&self) -> Result<(), DbError> {
        #[cfg(test)]
        if self.fail_writes.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(DbError::Op("injected write failure".into()));
        }
        Ok(())
    }

    pub fn put<T: Serialize>(&self, id: &str, value: &T) -> Result<(), DbError> {
        let bytes = serde_json::to_vec(value).map_err(DbError::Decode)?;
        self.check_write()?;
        let tx = self.db.begin_write().map_err(op)?;
        {
            let mut t = tx.open_table(TASKS).map_err(op)?;
            t.insert(id, bytes.as_slice()).map_err(op)?;
        }
        tx.commit().map_err(op)
    }

    pub fn delete(&self, id: &str) -> Result<(), DbError> {
        self.check_write()?;
        let tx = self.db.begin_write().map_err(op)?;
        {
            let mut t = tx.open_table(TASKS).map_err(op)?;
            t.remove(id).map_err(op)?;
        }
        tx.commit().map_err(op)
    }

    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<T>, DbError> {
        let tx = self.db.begin_read().map_err(op)?;
        let t = tx.open_table(TASKS).map_err(op)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(op)? {
            let (_, v) = item.map_err(op)?;
            out.push(serde_json::from_slice(v.value()).map_err(DbError::Decode)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_all_delete_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("db");
        {
            let db = Db::open(&path).expect("open");
            db.put("a", &1u32).expect("put");
            db.put("b", &2u32).expect("put");
            db.delete("a").expect("delete");
        }
        let db = Db::open(&path).expect("reopen");
        assert_eq!(db.all::<u32>().expect("all"), vec![2]);
    }
}
