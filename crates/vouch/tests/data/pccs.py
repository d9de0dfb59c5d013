#!/usr/bin/env python3
"""Plays a PCCS (Intel's Provisioning Certificate Caching Service, API v4) for tests.

Serves the collateral of real captured quotes, given as JSON files in vouch's collateral layout,
the way a PCCS answers: issuer chains URL-encoded in headers, the PCK CRL in DER, TCB info and QE
identity as signed JSON documents, the root CA CRL in hex. Unknown FMSPCs get 404. Every request
path is appended to LOG, one per line.

usage: pccs.py PORT LOG COLLATERAL.json...
"""

import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, log = int(sys.argv[1]), sys.argv[2]
by_key = {}
for path in sys.argv[3:]:
    with open(path) as f:
        c = json.load(f)
    info = json.loads(c["tcb_info"])
    tee = "tdx" if info.get("id") == "TDX" else "sgx"
    by_key[(tee, info["fmspc"].upper())] = c


class Pccs(BaseHTTPRequestHandler):
    def answer(self, status, body, headers=()):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        with open(log, "a") as f:
            f.write(self.path + "\n")
        url = urllib.parse.urlparse(self.path)
        query = urllib.parse.parse_qs(url.query)
        parts = url.path.strip("/").split("/")
        if len(parts) < 4 or parts[1:3] != ["certification", "v4"]:
            return self.answer(404, b"no such endpoint")
        tee, what = parts[0], "/".join(parts[3:])
        any_c = next(iter(by_key.values()))
        enc = lambda chain: urllib.parse.quote(chain, safe="")
        if what == "pckcrl":
            return self.answer(200, bytes.fromhex(any_c["pck_crl"]),
                               [("SGX-PCK-CRL-Issuer-Chain", enc(any_c["pck_crl_issuer_chain"]))])
        if what == "rootcacrl":
            return self.answer(200, any_c["root_ca_crl"].encode())
        if what == "tcb":
            c = by_key.get((tee, query.get("fmspc", [""])[0].upper()))
            if c is None:
                return self.answer(404, b"no TCB info for this FMSPC")
            body = '{"tcbInfo":%s,"signature":"%s"}' % (c["tcb_info"], c["tcb_info_signature"])
            return self.answer(200, body.encode(),
                               [("TCB-Info-Issuer-Chain", enc(c["tcb_info_issuer_chain"]))])
        if what == "qe/identity":
            c = next((c for (t, _), c in by_key.items() if t == tee), None)
            if c is None:
                return self.answer(404, b"no QE identity")
            body = '{"enclaveIdentity":%s,"signature":"%s"}' % (
                c["qe_identity"], c["qe_identity_signature"])
            return self.answer(200, body.encode(),
                               [("SGX-Enclave-Identity-Issuer-Chain",
                                 enc(c["qe_identity_issuer_chain"]))])
        return self.answer(404, b"no such endpoint")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", port), Pccs).serve_forever()
