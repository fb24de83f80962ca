#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz/nvme_tcp_pdu_fuzzer from the extracted capture streams.

Each seed is one configuration byte (bit 0 HDGST, bit 1 DDGST, bits 2-3 CPDA choice {0, 1, 3, 31},
bit 4 small data limit, bit 5 repair digests) followed by received bytes: prefixes of the real streams, with data PDUs shrunk
(digests recomputed) so that seeds stay small, plus a few synthetic PDUs (CPDA padding, TermReqs).

Usage: make_fuzz_corpus.py  (from anywhere; paths are relative to this file)
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "..", "fuzz", "nvme_tcp_pdu_fuzzer_corpus")
MAX_SEED = 4096


def _table():
    table = []
    for b in range(256):
        crc = b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


TABLE = _table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ TABLE[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def split(stream):
    """The complete PDUs of a stream (a cut final PDU is dropped)."""
    pdus, pos = [], 0
    while pos + 8 <= len(stream):
        plen = struct.unpack_from("<I", stream, pos + 4)[0]
        if pos + plen > len(stream):
            break
        pdus.append(stream[pos:pos + plen])
        pos += plen
    return pdus


def shrink(pdu, keep):
    """Cuts the data of a PDU to `keep` bytes, fixing plen, datal and the digests."""
    ptype, flags, hlen, pdo, plen = struct.unpack_from("<BBBBI", pdu)
    if pdo == 0:
        return pdu
    ddgst = 4 if flags & 0x02 else 0
    length = plen - pdo - ddgst
    if length <= keep:
        return pdu
    out = bytearray(pdu[:pdo + keep])
    struct.pack_into("<I", out, 4, len(out) + ddgst)
    if ptype in (6, 7):  # H2CData / C2HData: datal
        struct.pack_into("<I", out, 16, keep)
    if ptype == 4:  # CapsuleCmd: the SGL length
        struct.pack_into("<I", out, 8 + 32, keep)
    if flags & 0x01:
        out[hlen:hlen + 4] = struct.pack("<I", crc32c(out[:hlen]))
    if ddgst:
        out += struct.pack("<I", crc32c(out[pdo:pdo + keep]))
    return bytes(out)


def header_digest(pdu):
    pdu = bytearray(pdu)
    hlen = pdu[2]
    if pdu[1] & 0x01:
        pdu[hlen:hlen + 4] = struct.pack("<I", crc32c(pdu[:hlen]))
    return bytes(pdu)


def ic(ptype, pda, dgst, limit):
    pdu = bytearray(128)
    struct.pack_into("<BBBBI", pdu, 0, ptype, 0, 128, 0, 128)
    struct.pack_into("<HBBI", pdu, 8, 0, pda, dgst, limit)
    return bytes(pdu)


def data_pdu(ptype, flags, hlen, fields, data, hdgst, ddgst, align):
    """A capsule or data PDU; `fields` fills the header after the common header."""
    hd = 4 if hdgst else 0
    dd = 4 if ddgst and data else 0
    pdo = ((hlen + hd + align - 1) // align) * align if data else 0
    flags |= (0x01 if hdgst else 0) | (0x02 if dd else 0)
    header = bytearray(hlen)
    struct.pack_into("<BBBB", header, 0, ptype, flags, hlen, pdo)
    header[8:8 + len(fields)] = fields
    plen = (pdo + len(data) + dd) if data else hlen + hd
    struct.pack_into("<I", header, 4, plen)
    out = bytearray(header)
    if hd:
        out += struct.pack("<I", crc32c(header))
    if data:
        out += bytes(pdo - len(out)) + data
        if dd:
            out += struct.pack("<I", crc32c(data))
    return bytes(out)


SEEN = set()


def write(name, config, payload):
    """Writes one seed unless an identical one exists."""
    seed = bytes([config]) + payload[:MAX_SEED]
    if seed in SEEN:
        return
    SEEN.add(seed)
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(seed)


def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if not old.startswith("regression."):  # inputs kept from fuzzing runs stay
            os.remove(os.path.join(OUT, old))
    names = sorted(f for f in os.listdir(HERE) if f.endswith(".bin"))
    for name in names:
        with open(os.path.join(HERE, name), "rb") as f:
            stream = f.read()
        pdus = split(stream)
        config = 0x03 if "digests" in name else 0x00
        base = name[:-len(".bin")]
        small = [shrink(p, 200) for p in pdus]
        write(f"{base}.first2", config, b"".join(small[:2]))
        # Digest streams: the longer seeds set the "repair digests" bit so that mutations stay parseable.
        repair = config | (0x20 if config else 0)
        write(f"{base}.prefix", repair, b"".join(small[:24]))
        # Around the first data transfer: IC, then the PDUs from the first R2T or data PDU on.
        first_data = next((i for i, p in enumerate(pdus) if p[0] in (6, 7, 9)), None)
        if first_data is not None:
            write(f"{base}.data", repair, small[0] + b"".join(small[first_data:first_data + 8]))
        # A stream cut inside a PDU.
        write(f"{base}.cut", config, stream[:min(len(stream), 128 + 100)])

    # Synthetic: CPDA 3 (16-byte alignment) with digests, capsule with in-capsule data and H2CData.
    sqe = bytearray(64)
    sqe[0], sqe[1] = 0x01, 0x40
    struct.pack_into("<HI", sqe, 2, 5, 1)
    struct.pack_into("<I", sqe, 32, 100)
    sqe[39] = 0x01
    payload = bytes(range(100))
    for cpda_bits, align in ((1, 8), (2, 16), (3, 128)):
        config = 0x23 | (cpda_bits << 2)
        seed = ic(0, 0, 3, 0)
        seed += data_pdu(4, 0, 72, bytes(sqe), payload, True, True, align)
        seed += data_pdu(6, 0x04, 24, struct.pack("<HHII", 5, 1, 0, 100), payload, True, True, align)
        write(f"synthetic.cpda{align}", config, seed)
    # Controller to host with every PDU type, no digests.
    seed = ic(1, 0, 0, 131072)
    seed += data_pdu(9, 0, 24, struct.pack("<HHII", 1, 7, 0, 4096), b"", False, False, 4)
    seed += data_pdu(7, 0x0C, 24, struct.pack("<HHII", 2, 0, 0, 16), bytes(16), False, False, 4)
    seed += data_pdu(5, 0, 24, bytes(16), b"", False, False, 4)
    write("synthetic.c2h_all_types", 0x00, seed)
    # Reserved flag bits (LAST_PDU, SUCCESS and others) on an R2T and a CapsuleResp: ignored by the reader.
    seed = ic(1, 0, 0, 131072)
    seed += data_pdu(9, 0xFC, 24, struct.pack("<HHII", 1, 7, 0, 4096), b"", False, False, 4)
    seed += data_pdu(5, 0xF4, 24, bytes(16), b"", False, False, 4)
    write("synthetic.reserved_flags", 0x00, seed)
    # TermReqs: before the IC (a rejected ICReq) and after it; one with an oversized plen.
    term = struct.pack("<BBBBIHI", 3, 0, 24, 0, 24 + 8, 1, 2) + bytes(10) + bytes([0, 0, 127, 0, 128, 0, 0, 0])
    write("synthetic.c2h_termreq_first", 0x00, term)
    term = struct.pack("<BBBBIHI", 2, 0, 24, 0, 24 + 128, 3, 0) + bytes(10) + bytes(128)
    write("synthetic.h2c_termreq_after_ic", 0x00, ic(0, 0, 0, 0) + term)
    # Invalid headers: wrong hlen, data limit, bad header digest.
    write("synthetic.bad_hlen", 0x00, ic(0, 0, 0, 0) + bytes([4, 0, 70, 0, 70, 0, 0, 0]) + bytes(62))
    write("synthetic.data_limit", 0x10, ic(0, 0, 0, 0) + data_pdu(4, 0, 72, bytes(sqe), bytes(600), False, False, 4))
    bad = bytearray(data_pdu(4, 0, 72, bytes(sqe), b"", True, False, 4))
    bad[-1] ^= 0xFF
    write("synthetic.bad_hdgst", 0x01, ic(0, 0, 1, 0) + bytes(bad))


if __name__ == "__main__":
    main()
