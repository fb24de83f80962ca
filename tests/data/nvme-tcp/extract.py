#!/usr/bin/env python3
"""Extracts the TCP payload byte streams of NVMe/TCP captures into binary files for the replay tests.

For every TCP connection of a capture it writes <name>.<stream>.h2c.bin (bytes the host sent) and
<name>.<stream>.c2h.bin (bytes the controller sent). Each direction stops at the first sequence gap
(segments the capture missed) and at --limit bytes, so a file may end in the middle of a PDU.

Usage: extract.py --port 4421 --limit 204800 CAPTURE.pcap NAME OUTDIR
"""
import argparse
import os
import subprocess


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True, help="the controller's TCP port")
    parser.add_argument("--limit", type=int, default=0, help="keep at most this many bytes per direction")
    parser.add_argument("capture")
    parser.add_argument("name")
    parser.add_argument("outdir")
    args = parser.parse_args()

    fields = ["tcp.stream", "tcp.dstport", "tcp.seq", "tcp.len", "tcp.payload"]
    cmd = ["tshark", "-r", args.capture, "-Y", "tcp.len > 0", "-T", "fields"]
    for f in fields:
        cmd += ["-e", f]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout

    streams = {}  # (stream, direction) -> [next expected seq, bytearray, stopped]
    for line in out.splitlines():
        stream, dstport, seq, length, payload = line.split("\t")
        direction = "h2c" if int(dstport) == args.port else "c2h"
        key = (int(stream), direction)
        seq, length = int(seq), int(length)
        state = streams.setdefault(key, [seq, bytearray(), False])
        if state[2]:
            continue
        data = bytes.fromhex(payload)
        if seq + length <= state[0]:
            continue  # retransmission of bytes we already have
        if seq > state[0]:
            state[2] = True  # gap: the capture missed a segment; keep only the prefix
            continue
        data = data[state[0] - seq:]
        state[1] += data
        state[0] += len(data)
        if args.limit and len(state[1]) >= args.limit:
            del state[1][args.limit:]
            state[2] = True

    for (stream, direction), (_, data, stopped) in sorted(streams.items()):
        path = os.path.join(args.outdir, f"{args.name}.{stream}.{direction}.bin")
        with open(path, "wb") as f:
            f.write(data)
        print(f"{path}: {len(data)} bytes{' (truncated)' if stopped else ''}")


if __name__ == "__main__":
    main()
