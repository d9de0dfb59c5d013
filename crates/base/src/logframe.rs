//! Container logs are stored in the Docker multiplexed stream format: per chunk an 8-byte header
//! `[stream, 0, 0, 0, len (u32 big-endian)]` followed by `len` bytes. Stream 1 is stdout, 2 is
//! stderr. The daemon can serve a log file as is, and clients demultiplex it.

use std::io::{self, Write};

pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
/// Input to an exec'd process (vouchd to its monitor): data for its stdin.
pub const STDIN: u8 = 0;
/// Input: the terminal's new size, columns then rows, each a big-endian u16.
pub const RESIZE: u8 = 10;
/// Input: the end of stdin.
pub const CLOSE_STDIN: u8 = 11;
/// The largest frame a reader accepts.
pub const MAX_FRAME: usize = 1 << 20;
pub const CONTENT_TYPE: &str = "application/vnd.docker.multiplexed-stream";

pub fn write_frame<W: Write>(w: &mut W, stream: u8, data: &[u8]) -> io::Result<()> {
    // An empty frame is one header (a frame of no data, such as the end of stdin, is sent).
    let empty: &[&[u8]] = &[&[]];
    let chunks: Vec<&[u8]> = if data.is_empty() {
        empty.to_vec()
    } else {
        data.chunks(MAX_FRAME).collect()
    };
    for chunk in chunks {
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
    /// Decoding an exec's input (STDIN, RESIZE, CLOSE_STDIN) instead of output.
    input: bool,
}

impl FrameDecoder {
    /// A decoder of an exec's input frames: only [`STDIN`], [`RESIZE`] and [`CLOSE_STDIN`].
    pub fn for_input() -> Self {
        FrameDecoder {
            buf: Vec::new(),
            input: true,
        }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Next complete frame, if any. A malformed header is an error.
    pub fn next_frame(&mut self) -> io::Result<Option<(u8, Vec<u8>)>> {
        if self.buf.len() < 8 {
            return Ok(None);
        }
        let stream = self.buf[0];
        let known = if self.input {
            matches!(stream, STDIN | RESIZE | CLOSE_STDIN)
        } else {
            stream == STDOUT || stream == STDERR
        };
        if !known || self.buf[1..4] != [0, 0, 0] {
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
    fn input_and_output_frames_are_told_apart() {
        let mut frames = Vec::new();
        write_frame(&mut frames, STDIN, b"ls\n").expect("write");
        write_frame(&mut frames, RESIZE, &[0, 80, 0, 24]).expect("write");
        write_frame(&mut frames, CLOSE_STDIN, b"").expect("write");
        let mut input = FrameDecoder::for_input();
        input.push(&frames);
        assert_eq!(
            input.next_frame().expect("ok"),
            Some((STDIN, b"ls\n".to_vec()))
        );
        assert_eq!(
            input.next_frame().expect("ok"),
            Some((RESIZE, vec![0, 80, 0, 24]))
        );
        assert_eq!(
            input.next_frame().expect("ok"),
            Some((CLOSE_STDIN, Vec::new()))
        );
        // An output decoder refuses input frames, and the other way round.
        let mut output = FrameDecoder::default();
        output.push(&frames);
        assert!(output.next_frame().is_err());
        let mut out = Vec::new();
        write_frame(&mut out, STDOUT, b"x").expect("write");
        let mut input = FrameDecoder::for_input();
        input.push(&out);
        assert!(input.next_frame().is_err());
    }

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
