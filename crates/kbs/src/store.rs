//! KBS storage: resources, policies and reference values. Embedded (redb) by default.

use std::path::Path;

use redb::{Database, ReadableDatabase, TableDefinition};
use zeroize::Zeroizing;

const RESOURCES: TableDefinition<&str, &[u8]> = TableDefinition::new("resources");
const POLICIES: TableDefinition<&str, &str> = TableDefinition::new("policies");
const REFERENCE: TableDefinition<&str, &str> = TableDefinition::new("reference");

/// Key of the policy that applies to resources without their own.
pub(crate) const DEFAULT_POLICY_KEY: &str = "default";

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
    /// Whether reads are local and quick (an embedded database), so a request can do them on
    /// the async worker instead of handing off to a blocking thread.
    fn is_local(&self) -> bool {
        false
    }
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
    fn is_local(&self) -> bool {
        true
    }

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

/// PostgreSQL storage, for several KBS replicas sharing one database.
///
/// The synchronous client must not run inside an async runtime, and the KBS calls storage from
/// async handlers and blocking tasks alike, so one connection lives on a thread of its own and
/// every call is sent to it. Connect over a unix socket or a trusted network: TLS to the database
/// is not supported yet.
pub struct PgStorage {
    jobs: std::sync::Mutex<std::sync::mpsc::Sender<PgJob>>,
}

type PgJob = Box<dyn FnOnce(&mut postgres::Client) + Send>;

const PG_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS vouch_kbs_resources (path TEXT PRIMARY KEY, value BYTEA NOT NULL);
    CREATE TABLE IF NOT EXISTS vouch_kbs_policies (key TEXT PRIMARY KEY, rego TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS vouch_kbs_reference (key TEXT PRIMARY KEY, doc TEXT NOT NULL);";

impl PgStorage {
    /// Connect (the URL is never logged: it may carry a password) and create the tables.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let url = Zeroizing::new(url.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StoreError>>();
        let (jobs_tx, jobs_rx) = std::sync::mpsc::channel::<PgJob>();
        std::thread::Builder::new()
            .name("kbs-postgres".into())
            .spawn(move || {
                let mut client = match postgres::Client::connect(&url, postgres::NoTls) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::Op(format!(
                            "cannot connect to PostgreSQL: {e}"
                        ))));
                        return;
                    }
                };
                drop(url);
                if let Err(e) = client.batch_execute(PG_SCHEMA) {
                    let _ = ready_tx.send(Err(op(e)));
                    return;
                }
                let _ = ready_tx.send(Ok(()));
                while let Ok(job) = jobs_rx.recv() {
                    job(&mut client);
                }
            })
            .map_err(op)?;
        ready_rx
            .recv()
            .map_err(|_| StoreError::Op("the PostgreSQL thread ended".into()))??;
        Ok(PgStorage {
            jobs: std::sync::Mutex::new(jobs_tx),
        })
    }

    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T, postgres::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        let job: PgJob = Box::new(move |c| {
            let _ = tx.send(f(c).map_err(op));
        });
        self.jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(job)
            .map_err(|_| StoreError::Op("the PostgreSQL connection is gone".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Op("the PostgreSQL connection is gone".into()))?
    }
}

impl Storage for PgStorage {
    fn put_resource(&self, path: &str, value: &[u8]) -> Result<(), StoreError> {
        let (path, value) = (path.to_string(), Zeroizing::new(value.to_vec()));
        self.call(move |c| {
            c.execute(
                "INSERT INTO vouch_kbs_resources (path, value) VALUES ($1, $2)
                 ON CONFLICT (path) DO UPDATE SET value = EXCLUDED.value",
                &[&path, &value.as_slice()],
            )
            .map(|_| ())
        })
    }

    fn get_resource(&self, path: &str) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        let path = path.to_string();
        self.call(move |c| {
            let row = c.query_opt(
                "SELECT value FROM vouch_kbs_resources WHERE path = $1",
                &[&path],
            )?;
            Ok(row.map(|r| Zeroizing::new(r.get::<_, Vec<u8>>(0))))
        })
    }

    fn delete_resource(&self, path: &str) -> Result<bool, StoreError> {
        let path = path.to_string();
        self.call(move |c| {
            Ok(c.execute("DELETE FROM vouch_kbs_resources WHERE path = $1", &[&path])? > 0)
        })
    }

    fn put_policy(&self, key: &str, rego: &str) -> Result<(), StoreError> {
        let (key, rego) = (key.to_string(), rego.to_string());
        self.call(move |c| {
            c.execute(
                "INSERT INTO vouch_kbs_policies (key, rego) VALUES ($1, $2)
                 ON CONFLICT (key) DO UPDATE SET rego = EXCLUDED.rego",
                &[&key, &rego],
            )
            .map(|_| ())
        })
    }

    fn get_policy(&self, key: &str) -> Result<Option<String>, StoreError> {
        let key = key.to_string();
        self.call(move |c| {
            Ok(c.query_opt(
                "SELECT rego FROM vouch_kbs_policies WHERE key = $1",
                &[&key],
            )?
            .map(|r| r.get(0)))
        })
    }

    fn put_reference(&self, json: &str) -> Result<(), StoreError> {
        let json = json.to_string();
        self.call(move |c| {
            c.execute(
                "INSERT INTO vouch_kbs_reference (key, doc) VALUES ('values', $1)
                 ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc",
                &[&json],
            )
            .map(|_| ())
        })
    }

    fn get_reference(&self) -> Result<Option<String>, StoreError> {
        self.call(|c| {
            Ok(c.query_opt(
                "SELECT doc FROM vouch_kbs_reference WHERE key = 'values'",
                &[],
            )?
            .map(|r| r.get(0)))
        })
    }
}
