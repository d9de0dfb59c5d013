//! `vouch volume`: named volumes.

use crate::*;

#[derive(Subcommand)]
pub(crate) enum VolumeCmd {
    /// List volumes and the containers using them.
    #[command(alias = "list")]
    Ls {
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        json: bool,
    },
    /// Remove volumes and their content (refused while a container uses one).
    Rm {
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Print the digest a read-only copy of a host file or directory is measured with
    /// (`-v HOST_PATH:/PATH:ro`, a pod's configMap or secret): what a verifier expects in the
    /// container's `io.vouch.copies` annotation. Reads the path here; vouchd is not asked.
    Digest {
        path: std::path::PathBuf,
        /// Also list what the copy holds (path, type, mode, owner, content digest).
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn volume(client: &Client, cmd: VolumeCmd) -> Result<u8> {
    match cmd {
        VolumeCmd::Digest { path, json } => {
            let copied = vouch_runtime::copies::digest(&path)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "digest": copied.digest,
                        "bytes": copied.bytes,
                        "entries": copied.entries,
                    }))?
                );
            } else {
                println!("{}", copied.digest);
            }
            Ok(0)
        }
        VolumeCmd::Ls { quiet, json } => {
            let list: Vec<vouch_api::Volume> = client.call("GET", "/v1/volumes", None::<&()>)?;
            print_list(
                &list,
                Listing { json, quiet },
                |v| &v.name,
                format::volume_table,
            )
        }
        VolumeCmd::Rm { volumes } => {
            let mut failed = false;
            for v in volumes {
                match client.call::<vouch_api::Volume>(
                    "DELETE",
                    &format!("/v1/volumes/{}", seg(&v)),
                    None::<&()>,
                ) {
                    Ok(removed) => println!("{}", removed.name),
                    Err(e) => {
                        eprintln!("vouch: {e}");
                        failed = true;
                    }
                }
            }
            Ok(if failed { 1 } else { 0 })
        }
    }
}
