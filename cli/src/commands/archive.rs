//! `podcap archive ls`: what an archive holds, per node and hour, read from its listings
//! alone with no cluster and no sensor (the reading is `crate::archive`'s).
use std::{
    io::{self, Write},
    process::ExitCode,
};

use anyhow::Result;
use clap::Subcommand;

use super::WindowArgs;

#[derive(Subcommand)]
pub(super) enum ArchiveAction {
    /// Per node and hour: segments, bytes stored and gaps; then the snapshots and recording
    /// jobs kept. Reads listings only.
    Ls {
        /// The archive: `s3://BUCKET/PREFIX`, `gs://`, `az://` or `file:///DIR`.
        url: String,
        #[command(flatten)]
        window: WindowArgs,
        /// The cluster's name in the archive.
        #[arg(long, default_value = "default", value_name = "NAME", env = "PODCAP_CLUSTER")]
        cluster: String,
        /// Only these nodes (repeatable).
        #[arg(long = "node", value_name = "NODE")]
        nodes: Vec<String>,
    },
}

pub(super) fn archive_command(action: ArchiveAction) -> Result<ExitCode> {
    let ArchiveAction::Ls {
        url,
        window,
        cluster,
        nodes,
    } = action;
    let (from, to) = window.resolve_or_all(None)?;
    let (archive, runtime) = crate::archive::open(&url, &cluster)?;
    let text = runtime.block_on(crate::archive::list(&archive, from, to, &nodes))?;
    io::stdout().lock().write_all(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
