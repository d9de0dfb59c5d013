//! The HTTP/1.1 client's response parser (vouch's API client, the KBS client, collateral
//! fetches): status lines, headers, content-length and chunked bodies, pipelined answers.
#![no_main]
use std::io::{Cursor, Read, Write};

use libfuzzer_sys::fuzz_target;
use vouch_api::client::Connection;

/// A peer that answers with the fuzzer's bytes and swallows what is sent to it.
struct Peer(Cursor<Vec<u8>>);

impl Read for Peer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Peer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let mut conn = Connection::new(Peer(Cursor::new(rest.to_vec())), "peer");
    // Up to four pipelined answers, to GETs and HEADs as the first byte says.
    for i in 0..4 {
        let method = if first >> i & 1 == 1 { "HEAD" } else { "GET" };
        if conn.send(method, "/x", &[], None).is_err() {
            return;
        }
        match conn.receive(method, 1 << 16) {
            Ok(resp) => assert!(resp.body.len() <= 1 << 16, "a body beyond its limit"),
            Err(_) => return,
        }
        if !conn.is_open() {
            return;
        }
    }
});
