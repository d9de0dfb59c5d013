//! `vouch install containerd` / `vouch uninstall containerd`: vouch's runtime in containerd's
//! configuration, added as one marked block at the end of the file (the rest kept byte for
//! byte) and removed exactly.

use std::path::Path;

use crate::*;

/// containerd's configuration, where its packages put it.
const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
/// The runtime type containerd maps to the binary `containerd-shim-vouch-v2`.
pub(crate) const RUNTIME_TYPE: &str = "io.containerd.vouch.v2";
/// The runtime handler name pods ask for (`runtimeClassName: vouch`).
const HANDLER: &str = "vouch";
const BEGIN: &str =
    "# vouch: the runtime `vouch install containerd` added; `vouch uninstall containerd` removes this block";
const BEGIN_CREATED: &str =
    "# vouch: `vouch install containerd` created this file; `vouch uninstall containerd` removes it";
const END: &str = "# vouch: end";
/// The binary containerd starts for runtime type io.containerd.vouch.v2.
const SHIM: &str = "containerd-shim-vouch-v2";

fn shim_on_path() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(SHIM).is_file()))
}

#[derive(Subcommand)]
pub(crate) enum InstallCmd {
    /// Add vouch's runtime (`runtime_type = "io.containerd.vouch.v2"`, handler `vouch`) to
    /// containerd's configuration; running it again changes nothing. Restart containerd after.
    Containerd(ContainerdArgs),
}

#[derive(Subcommand)]
pub(crate) enum UninstallCmd {
    /// Remove what `vouch install containerd` added, leaving the file as it was before.
    Containerd(ContainerdArgs),
}

#[derive(ClapArgs)]
pub(crate) struct ContainerdArgs {
    /// containerd's configuration file.
    #[arg(long, default_value = CONTAINERD_CONFIG)]
    config: PathBuf,
    /// Print the file as it would be, and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[arg(long)]
    json: bool,
}

/// What an install or uninstall makes of the file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Write this text.
    Write(String),
    /// Remove the file (it was created by the install).
    Remove,
    /// Nothing to do, and why.
    Unchanged(&'static str),
}

/// The table containerd reads runtimes from, for the config's `version`.
fn runtimes_table(doc: &toml_edit::Document<&str>) -> Result<&'static str> {
    let version = match doc.get("version") {
        None => 1,
        Some(v) => v
            .as_integer()
            .ok_or_else(|| anyhow::anyhow!("its `version` is not a number"))?,
    };
    match version {
        2 => Ok(r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes"#),
        3 => Ok(r#"plugins."io.containerd.cri.v1.runtime".containerd.runtimes"#),
        v => bail!(
            "its configuration version is {v}; vouch installs into versions 2 (containerd 1.x) and 3 (2.x): migrate it with `containerd config migrate`"
        ),
    }
}

fn parse(text: &str) -> Result<toml_edit::Document<&str>> {
    toml_edit::Document::parse(text).map_err(|e| {
        anyhow::anyhow!(
            "it is not valid TOML: {}",
            e.message().lines().next().unwrap_or_default()
        )
    })
}

/// The `runtime_type` of handler `vouch` in the parsed config, if it defines one.
fn vouch_runtime(doc: &toml_edit::Document<&str>, table: &str) -> Option<String> {
    let mut item = doc.as_item();
    for key in [
        "plugins",
        table.split('"').nth(1).unwrap_or_default(),
        "containerd",
        "runtimes",
        HANDLER,
    ] {
        item = item.get(key)?;
    }
    Some(
        item.get("runtime_type")
            .and_then(|t| t.as_str())
            .unwrap_or("")
            .to_string(),
    )
}

/// Where the block starts and ends (line starts), if the file has one.
fn find_block(text: &str) -> Result<Option<(usize, usize, bool)>> {
    let mut start = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches(['\n', '\r']);
        if l == BEGIN || l == BEGIN_CREATED {
            if start.is_some() {
                bail!("it holds two vouch blocks; remove one by hand");
            }
            start = Some((offset, l == BEGIN_CREATED));
        } else if l == END {
            let Some((s, created)) = start else {
                bail!("it has the end of a vouch block without its start; remove it by hand");
            };
            return Ok(Some((s, offset + line.len(), created)));
        }
        offset += line.len();
    }
    if start.is_some() {
        bail!("its vouch block has no end line ({END}); remove the block by hand");
    }
    Ok(None)
}

/// The file after an install: `current` with the block appended (or a new file when there is
/// none). Refuses a config that defines handler `vouch` otherwise, or where the block would
/// not be read as the runtime.
pub(crate) fn install(current: Option<&str>) -> Result<Outcome> {
    let Some(text) = current else {
        let table = r#"plugins."io.containerd.grpc.v1.cri".containerd.runtimes"#;
        return Ok(Outcome::Write(format!(
            "{BEGIN_CREATED}\nversion = 2\n\n[{table}.{HANDLER}]\n  runtime_type = \"{RUNTIME_TYPE}\"\n{END}\n"
        )));
    };
    if find_block(text)?.is_some() {
        return Ok(Outcome::Unchanged("vouch's runtime is already installed"));
    }
    let doc = parse(text)?;
    let table = runtimes_table(&doc)?;
    match vouch_runtime(&doc, table) {
        Some(t) if t == RUNTIME_TYPE => {
            return Ok(Outcome::Unchanged(
                "the configuration already defines runtime vouch as io.containerd.vouch.v2",
            ))
        }
        Some(t) => bail!(
            "it already defines a runtime named vouch (runtime_type {t:?}); remove or rename it first"
        ),
        None => {}
    }
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!(
        "{BEGIN}\n[{table}.{HANDLER}]\n  runtime_type = \"{RUNTIME_TYPE}\"\n{END}\n"
    ));
    // The result must read as the runtime, and as nothing else changed: a file that defines
    // the runtimes table inline, for one, cannot take a table after it.
    let new = parse(&out).context("vouch's block does not fit in it (edit it by hand)")?;
    if vouch_runtime(&new, table).as_deref() != Some(RUNTIME_TYPE) {
        bail!("containerd would not read vouch's block as its runtime; add it by hand");
    }
    Ok(Outcome::Write(out))
}

/// The file after an uninstall: exactly what it was before the install.
pub(crate) fn uninstall(current: Option<&str>) -> Result<Outcome> {
    let Some(text) = current else {
        return Ok(Outcome::Unchanged("there is no configuration file"));
    };
    let Some((start, end, created)) = find_block(text)? else {
        return Ok(Outcome::Unchanged(
            "vouch's runtime is not installed (no vouch block)",
        ));
    };
    if created {
        let rest = format!("{}{}", &text[..start], &text[end..]);
        if !rest.trim().is_empty() {
            // Edited since: keep what was added, drop only the block.
            return Ok(Outcome::Write(rest));
        }
        return Ok(Outcome::Remove);
    }
    let mut out = text[..start].to_string();
    out.push_str(&text[end..]);
    Ok(Outcome::Write(out))
}

fn read_config(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replace the file in one step (a temporary file beside it, renamed), keeping its mode.
fn write_config(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mode = std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    let mut tmp = tempfile::Builder::new()
        .prefix(".vouch-config-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(())
}

pub(crate) fn install_cmd(cmd: InstallCmd) -> Result<u8> {
    let InstallCmd::Containerd(a) = cmd;
    apply(&a, install, "installed", "restart containerd to use it")
}

pub(crate) fn uninstall_cmd(cmd: UninstallCmd) -> Result<u8> {
    let UninstallCmd::Containerd(a) = cmd;
    apply(&a, uninstall, "uninstalled", "restart containerd")
}

fn apply(
    a: &ContainerdArgs,
    change: fn(Option<&str>) -> Result<Outcome>,
    done: &str,
    next: &str,
) -> Result<u8> {
    let path = a.config.as_path();
    let current = read_config(path)?;
    let outcome = change(current.as_deref())
        .with_context(|| format!("containerd config {}", path.display()))?;
    let (changed, reason) = match &outcome {
        Outcome::Unchanged(why) => (false, Some(*why)),
        _ => (true, None),
    };
    if a.dry_run {
        match &outcome {
            Outcome::Write(text) if !a.json => print!("{text}"),
            Outcome::Remove if !a.json => eprintln!("would remove {}", path.display()),
            _ => {}
        }
    } else {
        match &outcome {
            Outcome::Write(text) => write_config(path, text)?,
            Outcome::Remove => std::fs::remove_file(path)
                .with_context(|| format!("cannot remove {}", path.display()))?,
            Outcome::Unchanged(_) => {}
        }
    }
    if a.json {
        let mut v = serde_json::json!({
            "config": path.display().to_string(),
            "changed": changed,
            "dry_run": a.dry_run,
            "runtime_type": RUNTIME_TYPE,
        });
        if let Some(r) = reason {
            v["reason"] = r.into();
        }
        if a.dry_run {
            if let Outcome::Write(text) = &outcome {
                v["text"] = text.as_str().into();
            }
        }
        println!("{v}");
    } else if !a.dry_run {
        match reason {
            Some(r) => eprintln!("{}: {r}; nothing changed", path.display()),
            None => eprintln!("{}: vouch's runtime {done}; {next}", path.display()),
        }
    }
    if done == "installed" && !a.json && !shim_on_path() {
        eprintln!("note: {SHIM} is not on PATH; containerd cannot start tasks for handler vouch until it is");
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Debian 12's containerd package ships in /etc/containerd/config.toml.
    const DEBIAN: &str = "version = 2\n\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".cni]\n      bin_dir = \"/usr/lib/cni\"\n      conf_dir = \"/etc/cni/net.d\"\n  [plugins.\"io.containerd.internal.v1.opt\"]\n    path = \"/var/lib/containerd/opt\"\n";

    /// A hand-written one: comments, CRLF-free odd spacing, runc configured, no final newline.
    const HAND: &str = "# my node\nversion = 2\nroot = \"/var/lib/containerd\"   # data\n\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  default_runtime_name = \"runc\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  runtime_type = \"io.containerd.runc.v2\"\n  [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n    SystemdCgroup = true";

    fn written(o: Outcome) -> String {
        match o {
            Outcome::Write(t) => t,
            other => panic!("not a write: {other:?}"),
        }
    }

    #[test]
    fn install_appends_one_block_and_uninstall_restores_the_file_exactly() {
        for original in [DEBIAN, HAND] {
            let installed = written(install(Some(original)).expect("install"));
            assert!(
                installed.starts_with(original),
                "the rest is kept byte for byte"
            );
            let doc = parse(&installed).expect("toml");
            assert_eq!(
                vouch_runtime(&doc, runtimes_table(&doc).expect("table")).as_deref(),
                Some(RUNTIME_TYPE)
            );
            // Again: nothing changes.
            assert_eq!(
                install(Some(&installed)).expect("again"),
                Outcome::Unchanged("vouch's runtime is already installed")
            );
            let restored = written(uninstall(Some(&installed)).expect("uninstall"));
            assert_eq!(
                restored,
                if original == HAND {
                    format!("{HAND}\n")
                } else {
                    original.to_string()
                }
            );
            assert_eq!(
                uninstall(Some(original)).expect("not installed"),
                Outcome::Unchanged("vouch's runtime is not installed (no vouch block)")
            );
        }
    }

    #[test]
    fn version_3_gets_containerd_2s_table_and_a_missing_file_is_created_and_removed() {
        let v3 = "version = 3\n";
        let installed = written(install(Some(v3)).expect("install"));
        assert!(installed
            .contains(r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.vouch]"#));
        let created = written(install(None).expect("install"));
        assert!(created.contains("version = 2"));
        assert_eq!(
            uninstall(Some(&created)).expect("uninstall"),
            Outcome::Remove
        );
        // Edited after it was created: only the block goes.
        let edited =
            format!("{created}[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"/opt\"\n");
        assert_eq!(
            written(uninstall(Some(&edited)).expect("uninstall")),
            "[plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"/opt\"\n"
        );
    }

    #[test]
    fn configs_it_cannot_change_safely_are_refused_with_what_to_do() {
        let err =
            |text: &str| vouch_cli_common::error_line(&install(Some(text)).expect_err("refused"));
        assert!(err("version = 1\n").contains("migrate it with `containerd config migrate`"));
        assert!(err("[plugins\n").contains("not valid TOML"));
        let other = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vouch]\n  runtime_type = \"io.containerd.runc.v2\"\n";
        assert!(
            err(other).contains("already defines a runtime named vouch"),
            "{}",
            err(other)
        );
        // Runtimes given inline: a table after it would redefine them.
        let inline = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd]\n  runtimes = { runc = { runtime_type = \"io.containerd.runc.v2\" } }\n";
        assert!(err(inline).contains("does not fit"), "{}", err(inline));
        // Defined already, by hand, the same way: nothing to do.
        let same = "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.vouch]\n  runtime_type = \"io.containerd.vouch.v2\"\n";
        assert!(matches!(install(Some(same)), Ok(Outcome::Unchanged(_))));
        // A damaged block is not guessed at.
        let half = format!("{DEBIAN}{BEGIN}\n[x]\n");
        assert!(err(&half).contains("no end line"));
        assert!(
            vouch_cli_common::error_line(&uninstall(Some(&half)).expect_err("refused"))
                .contains("no end line")
        );
    }
}
