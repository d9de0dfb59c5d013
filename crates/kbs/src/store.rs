//! KBS storage: resources, policies and reference values. Embedded (redb) by default.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use zeroize::Zeroizing;

const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
const REFERENCE: TableDefinition<&str, &str> = TableDefinition::new("reference");

/// Key of the policy that applies to resources without their own.
pub const DEFAULT_POLICY_KEY: &str = "default";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the KBS database {path} (is another vouch-kbs using it?)")]
    Open {
        path: String,
        #[source]
        source: redb::DatabaseError,
    },
    #[error("KBS database operation failed: {0}")]
    Op(String),
}

fn op<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Op(e.to_string())
}

/// What a KBS needs to keep.
pub trait Storage: Send + Sync {
    fn put_resource(&self, path: &str, value: &[u8]) -> Result<(), StoreError>;
    /// The resource bytes; zeroized when dropped.
    fn get_resource(&self, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError>;
    fn delete_resource(&self, path: &str) -> Result<bool, StoreError>;
    fn put_policy(&self, key: &str, rego: &str) -> Result<(), StoreError>;
    fn get_policy(&self, key: &str) -> Result<Option<String>, StoreError>;
    fn put_reference(&self, json: &str) -> Result<(), StoreError>;
    fn get_reference(&self) -> Result<Option<String>, StoreError>;
}

pub struct RedbStorage {
    db: Database,
}

impl RedbStorage {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        let tx = db.begin_write().map_err(op)?;
        tx.open_table(RESOURCES).map_err(op)?;
        tx.open_table(POLICIES).map_err(op)?;
        tx.open_table(REFERENCE).map_err(op)?;
        tx.commit().map_err(op)?;
        Ok(RedbStorage { db })
    }
}

impl Storage for RedbStorage {
    fn put_resource(&self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(op)?;
        tx.open_table(RESOURCES)
            .map_err(op)?
            .insert(path, value)
            .map_err(op)?;
        tx.commit().map_err(op)
    }

    fn get_resource(&self, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let tx = self.db.begin_read().map_err(op)?;
        let t = tx.open_table(RESOURCES).map_err(op)?;
        Ok(t.get(path)
            .map_err(op)?
            .map(|v| Zeroizing::new(v.value().to_vec())))
    }

    fn delete_resource(&self, path: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_write().map_err(op)?;
        let existed = tx
            .open_table(RESOURCES)
            .map_err(op)?
            .remove(path)
            .map_err(op)?
            .is_some();
        tx.commit().map_err(op)?;
        Ok(existed)
    }

    fn put_policy(&self, key: &str, rego: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(op)?;
        tx.open_table(POLICIES)
            .map_err(op)?
            .insert(key, rego)
            .map_err(op)?;
        tx.commit().map_err(op)
    }

    fn get_policy(&self, key: &str) -> Result<Option<String>, StoreError> {
        let tx = self.db.begin_read().map_err(op)?;
        let t = tx.open_table(POLICIES).map_err(op)?;
        Ok(t.get(key).map_err(op)?.map(|v| v.value().to_string()))
    }

    fn put_reference(&self, json: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(op)?;
        tx.open_table(REFERENCE)
            .map_err(op)?
            .insert("values", json)
            .map_err(op)?;
        tx.commit().map_err(op)
    }

    fn get_reference(&self) -> Result<Option<String>, StoreError> {
        let tx = self.db.begin_read().map_err(op)?;
        let t = tx.open_table(REFERENCE).map_err(op)?;
        Ok(t.get("values").map_err(op)?.map(|v| v.value().to_string()))
    }
}
