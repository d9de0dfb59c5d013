//! vouch binaries
