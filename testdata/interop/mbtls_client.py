#!/usr/bin/python3
"""A Modbus/TCP Security client on OpenSSL (Python's ssl module), independent
of the gateway's Go code: it sends MBAP frames inside TLS, as the
specification says, and prints one line per request.

usage: mbtls_client.py HOST PORT CA CERT KEY REQUEST...
REQUEST: read:UNIT:ADDR:COUNT (FC 3) or write:UNIT:ADDR:VALUE (FC 6)
prints: "ok HEX" (the answer PDU), "exception CODE", or "error WHAT" (the
connection failed; nothing more is tried)."""
import socket
import ssl
import struct
import sys


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        chunk = s.recv(n - len(b))
        if not chunk:
            raise ConnectionError("connection closed")
        b += chunk
    return b


def main():
    host, port, ca, cert, key = sys.argv[1:6]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(ca)
    if cert != "-":
        ctx.load_cert_chain(cert, key)
    try:
        raw = socket.create_connection((host, int(port)), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname=host)
    except (OSError, ssl.SSLError) as e:
        print("error", type(e).__name__, e)
        return
    tid = 0
    for req in sys.argv[6:]:
        kind, unit, addr, val = req.split(":")
        unit, addr, val = int(unit), int(addr), int(val)
        fc = 3 if kind == "read" else 6
        pdu = struct.pack(">BHH", fc, addr, val)
        tid += 1
        try:
            s.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
            hdr = recv_exact(s, 7)
            rtid, proto, length, runit = struct.unpack(">HHHB", hdr)
            body = recv_exact(s, length - 1)
        except (OSError, ssl.SSLError, ConnectionError) as e:
            print("error", type(e).__name__, e)
            return
        if rtid != tid or runit != unit:
            print("error", "mismatched answer", rtid, runit)
            return
        if body[0] & 0x80:
            print("exception", body[1])
        else:
            print("ok", body.hex())
        sys.stdout.flush()
    s.close()


main()
