//! Human-readable tables and reports.

use vouch_api::{Container, ImageSummary, Info, TaskState};
use vouch_cli_common::text::field;
use vouch_tee::Verdict;

fn ago(rfc3339: &str) -> String {
    let Ok(t) = humantime::parse_rfc3339_weak(rfc3339.trim_end_matches('Z')) else {
        return rfc3339.to_string();
    };
    let secs = vouch_base::clock::since(t).as_secs();
    match secs {
        0..=1 => "1 second".into(),
        2..=59 => format!("{secs} seconds"),
        60..=3599 => format!("{} minutes", secs / 60),
        3600..=172_799 => format!("{} hours", secs / 3600),
        _ => format!("{} days", secs / 86_400),
    }
}

/// At most `n` characters of an untrusted value, its control characters escaped first.
fn truncate(s: &str, n: usize) -> String {
    let s = field(s);
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let cut: String = s.chars().take(n.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

pub(crate) fn status(c: &Container) -> String {
    match c.state {
        TaskState::Running => format!(
            "Up {}",
            c.started_at.as_deref().map(ago).unwrap_or_default()
        ),
        TaskState::Exited => match c.exit_code {
            Some(code) => format!(
                "Exited ({code}){} {} ago",
                if c.oom_killed { " OOMKilled" } else { "" },
                c.finished_at.as_deref().map(ago).unwrap_or_default()
            ),
            None => "Exited (unknown)".into(),
        },
        TaskState::Failed => format!("Failed: {}", truncate(c.error.as_deref().unwrap_or(""), 40)),
        other => other.as_str().to_string(),
    }
}

pub(crate) fn ps_table(list: &[Container]) -> String {
    let mut out = format!(
        "{:<14}{:<22}{:<24}{:<18}{:<28}{}\n",
        "CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"
    );
    for c in list {
        out.push_str(&format!(
            "{:<14}{:<22}{:<24}{:<18}{:<28}{}\n",
            field(short_id(&c.id)),
            truncate(&c.image, 20),
            truncate(&format!("\"{}\"", c.command.join(" ")), 22),
            format!("{} ago", ago(&c.created_at)),
            truncate(&status(c), 26),
            field(&c.name)
        ));
    }
    out
}

fn human_size(n: u64) -> String {
    match n {
        0..=1023 => format!("{n}B"),
        1024..=1_048_575 => format!("{:.1}kB", n as f64 / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1}MB", n as f64 / 1_048_576.0),
        _ => format!("{:.2}GB", n as f64 / 1_073_741_824.0),
    }
}

/// `vouch volume ls`: each volume and the containers that use it.
pub(crate) fn volume_table(list: &[vouch_api::Volume]) -> String {
    let mut out = format!("{:<32} USED BY\n", "VOLUME NAME");
    for v in list {
        out.push_str(&format!(
            "{:<32} {}\n",
            field(&v.name),
            field(&v.used_by.join(","))
        ));
    }
    out
}

pub(crate) fn image_table(list: &[ImageSummary]) -> String {
    let mut out = format!(
        "{:<40}{:<14}{:<10}{}\n",
        "NAME", "IMAGE ID", "SIZE", "DIGEST"
    );
    for i in list {
        let names = if i.names.is_empty() {
            vec!["<none>".to_string()]
        } else {
            i.names.clone()
        };
        for n in names {
            out.push_str(&format!(
                "{:<40}{:<14}{:<10}{}\n",
                truncate(&n, 38),
                field(&i.id),
                human_size(i.size),
                field(&i.manifest_digest)
            ));
        }
    }
    out
}

pub(crate) fn info(i: &Info) -> String {
    let mut out = format!(
        "vouchd {}\nTEE:         {}{}\nregister {}:  {}\nevent log:   {} records\ncontainers:  {} ({} running)\nimages:      {}\n",
        i.version,
        i.tee,
        if i.hardware { "" } else { " (NOT hardware-backed)" },
        i.register_index,
        i.register,
        i.records,
        i.containers,
        i.running,
        i.images
    );
    if let Some(w) = &i.warning {
        out.push_str(&format!("WARNING:     {w}\n"));
    }
    out
}

pub(crate) fn verdict(v: &Verdict, nonce_checked: bool) -> String {
    let mut out = String::from("Evidence VERIFIED\n");
    out.push_str(&format!(
        "  TEE:         {}{}\n",
        v.tee,
        if v.hardware {
            ""
        } else {
            "  (NOT hardware: development only)"
        }
    ));
    for w in &v.warnings {
        out.push_str(&format!("  WARNING:     {}\n", field(w)));
    }
    out.push_str(&format!("  signer:      {}\n", field(&v.signer)));
    for (name, value) in &v.platform {
        out.push_str(&format!("  boot {:<7}{}\n", field(name), field(value)));
    }
    let nonce = v
        .runtime_data
        .get("nonce")
        .and_then(|n| n.as_str())
        .unwrap_or("<none>");
    out.push_str(&format!(
        "  nonce:       {}{}\n",
        field(nonce),
        if nonce_checked {
            " (matches)"
        } else {
            " (not checked: pass --nonce)"
        }
    ));
    out.push_str(&format!(
        "  event log:   {} records, replays to the quoted register {}\n",
        v.records,
        v.registers
            .get(vouch_tee::VOUCH_REGISTER)
            .map(|r| r.to_hex())
            .unwrap_or_default()
    ));
    out.push_str(&format!("  containers launched: {}\n", v.containers.len()));
    // Full values, one per line: a verifier compares them with its own, character for character.
    for c in &v.containers {
        out.push_str(&format!(
            "    {} {} ({})\n",
            field(&c.id),
            field(c.name.as_deref().unwrap_or("-")),
            field(c.image.as_deref().unwrap_or("-"))
        ));
        out.push_str(&format!(
            "      image digest:  {}\n",
            field(&c.image_digest)
        ));
        out.push_str(&format!(
            "      config digest: {}\n",
            field(&c.config_digest)
        ));
        if let Some(pod) = &c.pod {
            let text = |k: &str| pod.get(k).and_then(|v| v.as_str()).unwrap_or("-");
            out.push_str(&format!(
                "      pod:           {}/{} container {} (sandbox {})\n",
                field(text("namespace")),
                field(text("name")),
                field(text("container")),
                field(text("sandbox_id"))
            ));
        }
        for x in &c.execs {
            let text = |k: &str| x.get(k).and_then(|v| v.as_str()).unwrap_or("-");
            out.push_str(&format!(
                "      exec:          {} (record {})\n",
                field(text("process_digest")),
                x.get("seq").and_then(|v| v.as_u64()).unwrap_or(0)
            ));
        }
        use vouch_tee::verify::LaunchState;
        let state = match (c.state, c.exit_code) {
            (LaunchState::Running, _) => "running (no exit recorded)".to_string(),
            (LaunchState::Exited, Some(code)) => format!("exited with code {code}"),
            (LaunchState::Exited, None) => "ended, exit status unknown".to_string(),
            (LaunchState::Failed, _) => format!(
                "FAILED to launch: {}",
                field(c.failure.as_deref().unwrap_or("no reason recorded"))
            ),
        };
        out.push_str(&format!("      state:         {state}\n"));
    }
    out
}

/// Pull progress on stderr: on a terminal, one line per layer redrawn in place with a bar;
/// otherwise one plain line when a layer starts and one when it is done.
pub(crate) struct PullProgress {
    tty: bool,
    layers: Vec<(String, u64, u64, bool)>,
    drawn: usize,
}

/// A container id as docker shows it: its first 12 characters (all of it if shorter).
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

impl PullProgress {
    pub(crate) fn new(tty: bool) -> Self {
        PullProgress {
            tty,
            layers: Vec::new(),
            drawn: 0,
        }
    }

    pub(crate) fn event(&mut self, v: &serde_json::Value) {
        let digest = v["digest"].as_str().unwrap_or_default().to_string();
        let size = v["size"].as_u64().unwrap_or(0);
        match v["status"].as_str() {
            Some("resolved") if !self.tty => eprintln!("Resolved {digest}"),
            Some("fetching") => {
                self.layers.push((digest.clone(), 0, size, false));
                if !self.tty {
                    eprintln!("Fetching {} ({})", short(&digest), mb(size));
                }
            }
            Some("progress") => {
                if let Some(l) = self.layers.iter_mut().find(|l| l.0 == digest) {
                    l.1 = v["bytes"].as_u64().unwrap_or(l.1);
                }
            }
            Some("fetched") => {
                if let Some(l) = self.layers.iter_mut().find(|l| l.0 == digest) {
                    l.1 = l.2;
                    l.3 = true;
                }
                if !self.tty {
                    eprintln!("Fetched {}", short(&digest));
                }
            }
            _ => {}
        }
        if self.tty {
            self.draw();
        }
    }

    fn draw(&mut self) {
        use std::io::Write as _;
        let mut err = std::io::stderr().lock();
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for (digest, bytes, size, done) in &self.layers {
            let width = 30usize;
            let filled = if *size == 0 {
                width
            } else {
                ((*bytes as f64 / *size as f64) * width as f64).round() as usize
            }
            .min(width);
            let _ = writeln!(
                err,
                "\x1b[2K{} [{}{}] {} / {}{}",
                short(digest),
                "=".repeat(filled),
                " ".repeat(width - filled),
                mb(*bytes),
                mb(*size),
                if *done { "  verified" } else { "" }
            );
        }
        self.drawn = self.layers.len();
    }
}

/// How the launched containers compare with a golden value (`vouch verify --golden`); its JSON
/// is the `golden` member of `vouch verify --json`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct GoldenCheck {
    pub image_digest: String,
    /// The runtime spec digest the document pins, if any.
    pub spec_digest: Option<String>,
    /// Whether that digest was recomputed from the spec in the document.
    pub spec_recomputed: bool,
    /// The containers of the document's image in the log.
    pub containers: Vec<GoldenContainer>,
    /// Some container of the image ran, and none with another spec than the pinned one.
    pub matches: bool,
}

#[derive(Debug, serde::Serialize)]
pub(crate) struct GoldenContainer {
    pub id: String,
    pub config_digest: String,
    /// None when the document pins no spec.
    pub spec_matches: Option<bool>,
}

pub(crate) fn golden(check: &GoldenCheck) -> String {
    let mut out = format!("  golden value for {}:\n", field(&check.image_digest));
    match &check.spec_digest {
        Some(d) => out.push_str(&format!(
            "    runtime spec:  {}{}\n",
            field(d),
            if check.spec_recomputed {
                " (recomputed from the document)"
            } else {
                " (as the document states it)"
            }
        )),
        None => out.push_str(
            "    runtime spec:  not pinned (only the image is; pin it with `vouch golden create --spec-from`)\n",
        ),
    }
    if check.containers.is_empty() {
        out.push_str("    NOT matched: no container of this image is in the log\n");
    }
    for c in &check.containers {
        let verdict = match c.spec_matches {
            Some(true) => "spec matches".to_string(),
            Some(false) => format!("spec DIFFERS: measured {}", field(&c.config_digest)),
            None => "image matches".to_string(),
        };
        out.push_str(&format!("    {}: {verdict}\n", field(&c.id)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_volume_table_has_one_escaped_row_per_volume() {
        let list = [
            vouch_api::Volume {
                name: "data".into(),
                used_by: vec!["aaaaaaaaaaaa".into(), "bbbbbbbbbbbb".into()],
            },
            vouch_api::Volume {
                name: "odd\nname".into(),
                used_by: vec![],
            },
        ];
        let table = volume_table(&list);
        let rows: Vec<&str> = table.lines().collect();
        assert_eq!(rows.len(), 3, "{table}");
        assert!(rows[0].starts_with("VOLUME NAME"));
        assert!(rows[1].starts_with("data ") && rows[1].ends_with("aaaaaaaaaaaa,bbbbbbbbbbbb"));
        assert!(rows[2].starts_with("odd\\u000aname"), "{}", rows[2]);
    }
}
