//! Container logs are stored in the Docker multiplexed stream format: per chunk an 8-byte header
//! `[stream, 0, 0, 0, len (u32 big-endian)]` followed by `len` bytes. Stream 1 is stdout, 2 is
//! stderr. The daemon can serve a log file as is, and clients demultiplex it.

use std::io::{self, Write};

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// The largest frame a reader accepts.
pub const MAX_FRAME: usize = 1 << 20;
pub const CONTENT_TYPE: &str = "application/vnd.docker.multiplexed-stream";

pub fn write_frame<W: Write>(w: &mut W, stream: u8, data: &[u8]) -> io::Result<()> {
    for chunk in data.chunks(MAX_FRAME) {
        let mut header = [0u8; 8];
        header[0] = stream;
        header[4..].copy_from_slice(&(chunk.len() as u32).to_be_bytes());
        w.write_all(&header)?;
        w.write_all(chunk)?;
    }
    Ok(())
}

/// Incremental decoder: feed bytes as they arrive, get complete frames out.
#[derive(Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete frame, if any. A malformed header is an error.
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let stream = self.buf[0];
        if !(stream == STDOUT || stream == STDERR) || self.buf[1..4] != [0, 0, 0] {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "malformed log frame header",
            ));
        }
        let len = u32::from_be_bytes([self.buf[4], self.buf[5], self.buf[6], self.buf[7]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "log frame too large",
            ));
        }
        if self.buf.len() < 8 + len {
            return Ok(None);
        }
        let data = self.buf[8..8 + len].to_vec();
        self.buf.drain(..8 + len);
        Ok(Some((stream, data)))
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_across_split_reads() {
        let mut log = Vec::new();
        write_frame(&mut log, STDOUT, b"hello ").expect("w");
        write_frame(&mut log, STDERR, b"oops").expect("w");
        let mut dec = FrameDecoder::default();
        let mut frames = Vec::new();
        for b in &log {
            dec.push(std::slice::from_ref(b));
            while let Some(f) = dec.next_frame().expect("frame") {
                frames.push(f);
            }
        }
        assert_eq!(
            frames,
            vec![(STDOUT, b"hello ".to_vec()), (STDERR, b"oops".to_vec())]
        );
        let mut bad = FrameDecoder::default();
        bad.push(&[9, 0, 0, 0, 0, 0, 0, 1, b'x']);
        assert!(bad.next_frame().is_err());
    }
}
