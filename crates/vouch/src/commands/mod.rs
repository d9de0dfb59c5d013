//! One module per group of subcommands; `main.rs` holds the command line and the dispatch.

pub(crate) mod golden;
pub(crate) mod image;
pub(crate) mod install;
pub(crate) mod key;
pub(crate) mod run;
pub(crate) mod verify;
pub(crate) mod volume;
