//! The engine against a database whose writes fail: a refused write is the caller's error, and
//! nothing is measured, started or forgotten because of it.

use super::*;
use vouch_testkit::harness::{busybox_layer, require_root, write_layout};

struct Fixture {
    dir: tempfile::TempDir,
    engine: Arc<Engine>,
}

fn fixture(exe: PathBuf) -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("vouch-launch-")
        .tempdir()
        .expect("tempdir");
    let state = dir.path().join("state");
    let cfg = DaemonConfig {
        state_dir: state.clone(),
        socket: dir.path().join("vouchd.sock"),
        exe,
        cgroup_parent: format!("/vouch-launch-test-{}", std::process::id()),
        publish_address: "127.0.0.1".parse().expect("ip"),
        image_policy: None,
        registry_timeout: Duration::from_secs(5),
        golden_keys: Vec::new(),
        require_golden: false,
        registries_d: dir.path().join("registries.d"),
        insecure_registries: Vec::new(),
        kbs_cas: Vec::new(),
        kbs_timeout: Duration::from_secs(5),
        kbs_flavour: Default::default(),
        exec_denied: false,
    };
    let sim = vouch_tee::sim::SimAttester::open(&state.join("tee").join("sim")).expect("sim");
    let engine = Engine::open(cfg, Arc::new(sim)).expect("engine");
    let layout = dir.path().join("layout");
    write_layout(
        &layout,
        "bb",
        &[busybox_layer()],
        &["/bin/sh"],
        &["PATH=/bin"],
    );
    vouch_image::layout::load(&engine.images, &layout, None).expect("load busybox");
    Fixture { dir, engine }
}

fn request(cmd: &[&str]) -> CreateContainer {
    CreateContainer {
        image: "bb".into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn journal_ops(engine: &Engine) -> Vec<String> {
    lock(&engine.journal)
        .records()
        .iter()
        .map(|r| r.op.clone())
        .collect()
}

#[test]
fn a_task_that_cannot_be_written_is_not_created_and_nothing_is_measured() {
    let f = fixture(PathBuf::from("/nonexistent/vouchd"));
    let before = journal_ops(&f.engine);
    f.engine.db.fail_writes(true);
    let err = f
        .engine
        .create(request(&["true"]))
        .expect_err("a create whose task cannot be written");
    assert!(
        matches!(&err, EngineError::Db(DbError::Op(m)) if m == "injected write failure"),
        "{err:?}"
    );
    assert!(f.engine.list(true).is_empty(), "{:?}", f.engine.list(true));
    assert_eq!(journal_ops(&f.engine), before, "nothing measured");
    assert!(
        fs::read_dir(f.engine.cfg.containers_dir())
            .expect("containers dir")
            .next()
            .is_none(),
        "no container directory"
    );
    // The same request goes through once the database takes writes again (it then fails at
    // the monitor, which this fixture has none of: it gets that far).
    f.engine.db.fail_writes(false);
    let _ = f.engine.create(request(&["true"]));
    assert_eq!(f.engine.list(true).len(), 1);
    drop(f.dir);
}

#[test]
fn a_removal_the_database_refuses_keeps_the_container_listed_and_removable() {
    if !require_root("a_removal_the_database_refuses_keeps_the_container_listed_and_removable") {
        return;
    }
    let f = fixture(vouch_testkit::bins::vouchd().to_path_buf());
    let c = f.engine.create(request(&["true"])).expect("create");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let waited = rt.block_on(f.engine.wait(&c.id)).expect("wait");
    assert_eq!(waited.exit_code, Some(0));

    f.engine.db.fail_writes(true);
    let err = f
        .engine
        .remove(&c.id, false)
        .expect_err("a removal the database refuses");
    assert!(matches!(&err, EngineError::Db(_)), "{err:?}");
    assert_eq!(f.engine.get(&c.id).expect("still listed").id, c.id);

    f.engine.db.fail_writes(false);
    f.engine.remove(&c.id, false).expect("remove");
    assert!(matches!(
        f.engine.get(&c.id),
        Err(EngineError::NoSuchContainer(_))
    ));
    // And a restart does not bring it back: the database lost it too.
    assert!(f.engine.db.all::<TaskRecord>().expect("all").is_empty());
}
