#!/usr/bin/env python3
"""Writes the committed seed corpus Fuzz/corpus/<target>/ (run from the package root; rerun it
after a wire format changes). Each seed is one small, valid input of its target, built here field
by field after the format's Swift encoder, so the fuzzer starts from inputs that get past the
magic numbers and version checks. The config seeds are the examples/ (copied as they are)."""
import os
import shutil
import struct

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
corpus = os.path.join(root, "Fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def put(b, off, fmt, v):
    struct.pack_into("<" + fmt, b, off, v)


# --- firmware and elf: the images the tests build (Tests/FirmwareTests, ELFImage.build)
def elf64(load, vaddr, code, bss=0, entry=None, notes=b""):
    phnum = 2 if notes else 1
    b = bytearray(64 + 56 * phnum)
    b[0:7] = b"\x7fELF\x02\x01\x01"
    put(b, 16, "H", 2); put(b, 18, "H", 62); put(b, 20, "I", 1)
    put(b, 24, "Q", entry if entry is not None else load); put(b, 32, "Q", 64)
    put(b, 52, "H", 64); put(b, 54, "H", 56); put(b, 56, "H", phnum); put(b, 58, "H", 64)
    data_at = len(b)
    put(b, 64, "I", 1); put(b, 68, "I", 7); put(b, 72, "Q", data_at); put(b, 80, "Q", vaddr)
    put(b, 88, "Q", load); put(b, 96, "Q", len(code)); put(b, 104, "Q", len(code) + bss); put(b, 112, "Q", 0x1000)
    if notes:
        put(b, 120, "I", 4); put(b, 128, "Q", data_at + len(code)); put(b, 152, "Q", len(notes))
    return bytes(b) + code + notes


def aout_kludge():
    magic, flags = 0x1BADB002, 0x00010003
    b = b"\x90" * 32 + struct.pack("<III", magic, flags, (-(magic + flags)) & 0xFFFFFFFF)
    b += struct.pack("<IIIII", 0x100020, 0x100000, 0, 0x102000, 0x100040)
    return b.ljust(0x40, b"\0") + b"\xf4\xeb\xfd"


def elf32_multiboot():
    b = bytearray(0x54)
    b[0:7] = b"\x7fELF\x01\x01\x01"
    put(b, 16, "H", 2); put(b, 18, "H", 3); put(b, 20, "I", 1); put(b, 24, "I", 0x200010); put(b, 28, "I", 52)
    put(b, 40, "H", 52); put(b, 42, "H", 32); put(b, 44, "H", 1)
    put(b, 52, "I", 1); put(b, 56, "I", 0x60); put(b, 60, "I", 0x200000); put(b, 64, "I", 0x200000)
    put(b, 68, "I", 0x20); put(b, 72, "I", 0x1000); put(b, 76, "I", 7)
    b = bytes(b).ljust(0x60, b"\0")
    flags = 2
    seg = struct.pack("<III", 0x1BADB002, flags, (-(0x1BADB002 + flags)) & 0xFFFFFFFF) + b"\xf4\xeb\xfd"
    return b + seg.ljust(0x20, b"\xcc")


def bzimage(version=0x020F):
    b = bytearray(1024)
    b[0x1F1] = 1
    put(b, 0x1FE, "H", 0xAA55); b[0x200] = 0xEB; b[0x201] = 0x66
    b[0x202:0x206] = b"HdrS"; put(b, 0x206, "H", version); b[0x211] = 1
    put(b, 0x214, "I", 0x100000); put(b, 0x22C, "I", 0x7FFFFFFF); put(b, 0x230, "I", 0x200000)
    b[0x234] = 1; put(b, 0x236, "H", 1); put(b, 0x238, "I", 2048)
    put(b, 0x258, "Q", 0x1000000); put(b, 0x260, "I", 0x200000)
    return bytes(b) + b"\xab" * 0x100


linux_note = struct.pack("<III", 6, 0, 1) + b"Linux\0\0\0"
write("firmware", "multiboot-aout", aout_kludge())
write("firmware", "multiboot-elf32", elf32_multiboot())
write("firmware", "bzimage-2.15", bzimage())
write("firmware", "bzimage-2.06", bzimage(0x0206))
write("firmware", "vmlinux", elf64(0x1000000, 0xFFFFFFFF81000000, b"\x90" * 16, bss=0x2000))
write("firmware", "vmlinux-note", elf64(0x1000000, 0x1000000, b"\x90" * 16, notes=linux_note))
write("elf", "giantvm-elf", elf64(0x200000, 0x200000, b"\xf4", bss=100))
write("elf", "giantvm-elf-entry", elf64(0x200000, 0x200000, b"\x90\x90\xf4", entry=0x200002))

# --- config: the examples
os.makedirs(os.path.join(corpus, "config"), exist_ok=True)
for name in sorted(os.listdir(os.path.join(root, "examples"))):
    if name.endswith(".yaml"):
        shutil.copy(os.path.join(root, "examples", name), os.path.join(corpus, "config", name))


# --- distributed-wire (Sources/Distributed/Wire.swift: type u8, then little-endian fields)
def text(s):
    return struct.pack("<I", len(s)) + s


write("distributed-wire", "ipi", b"\x01" + struct.pack("<IiBBB", 1, 0, 0, 0x30, 1))
write("distributed-wire", "apic", b"\x02" + struct.pack("<IBII", 1, 1, 0x1000000, 0xFFFFFFFF))
write("distributed-wire", "irq", b"\x03" + struct.pack("<IB", 4, 1) + text(b"serial"))
write("distributed-wire", "eoi", b"\x04\x30")
write("distributed-wire", "time-request", b"\x10" + struct.pack("<I", 7))
write("distributed-wire", "time-reply", b"\x11" + struct.pack("<IQqq", 7, 123456789, -5, 3))
write("distributed-wire", "io-map", b"\x01" + struct.pack("<I", 1) + struct.pack("<BQQ", 0, 0x3F8, 8) + text(b"serial"))
write("distributed-wire", "io-request", b"\x02" + struct.pack("<QBQBIB", 9, 0, 0x3F8, 1, 1, 1) + b"A")
write("distributed-wire", "io-reply", b"\x03" + struct.pack("<QB", 9, 0) + b"\x00")
write("distributed-wire", "io-ready", b"\x04")


# --- ivy-wire: 4 context bytes (nodes-1, src, self, pages/16), then the 24-byte header
def ivy(ctx, mtype, flags, node, gfn, txn, payload=b""):
    return bytes(ctx) + struct.pack("<BBBBIQQ", mtype, 1, flags, 0, node, gfn, txn) + payload


# 2 nodes, from node 1 to node 0, 16 pages (gfn 0 managed by node 0)
write("ivy-wire", "gets", ivy([1, 1, 0, 1], 1, 0, 1, 0, 1))
write("ivy-wire", "getx-copy", ivy([1, 1, 0, 1], 2, 1, 1, 2, 2))
write("ivy-wire", "fwdgets", ivy([2, 1, 0, 1], 3, 0, 2, 1, 3))
write("ivy-wire", "inv", ivy([1, 1, 0, 1], 5, 0, 1, 3, 4))
write("ivy-wire", "data-zero", ivy([1, 1, 0, 1], 7, 2 | 4, 1, 3, 5))
write("ivy-wire", "data-page", ivy([1, 1, 0, 1], 7, 0, 1, 3, 6, bytes(range(256)) * 16))
write("ivy-wire", "confirm", ivy([1, 1, 0, 1], 9, 4, 1, 0, 7))
# read-ahead: GetSBatch (txn = count), then the gfns; 2 nodes, 32 pages (node 0 manages 0-15)
write("ivy-wire", "getsbatch", ivy([1, 1, 0, 2], 13, 0, 1, 3, 4, struct.pack("<4Q", 3, 4, 5, 7)))
# FwdGetSBatch from the manager (node 1 manages odd gfns with managerOf = gfn % nodes), requester 1
write("ivy-wire", "fwdgetsbatch", ivy([1, 1, 0, 2], 14, 0, 1, 3, 2, struct.pack("<4Q", 3, 11, 5, 12)))
# DataBatch from node 1: a page with bytes, then a zero page
write("ivy-wire", "databatch", ivy([1, 1, 0, 2], 15, 0, 1, 4, 2, struct.pack("<6Q", 4, 9, 0, 6, 10, 2)) + bytes(range(256)) * 16)


# --- tcp-wire: frames (length u32, "GV", kind, flags 0) as a stream
def frame(kind, payload):
    return struct.pack("<I", len(payload)) + b"GV" + bytes([kind, 0]) + payload


hello = b"GVMT" + struct.pack("<HBBII", 1, 0, 0, 1, 2) + bytes(range(32)) + struct.pack("<H", 4) + b"demo"
write("tcp-wire", "hello", frame(1, hello))
write("tcp-wire", "handshake", frame(1, hello) + frame(2, struct.pack("<H", 32) + bytes(32)) + frame(3, b"\x01\x02\x00ok"))
write("tcp-wire", "data", frame(0, b"\x01\x01\x00\x00payload") + frame(0, b""))
write("tcp-wire", "duration", b"250ms")

# --- cluster-frame: channel header [channel, version 1, 0, 0] + runtime message
stop = b"\x01" + struct.pack("<iII", 1, 0, 0xFFFFFFFF) + text(b"stopped by test")
write("cluster-frame", "stop", bytes([0, 1, 0, 0]) + stop)
write("cluster-frame", "stop-ack", bytes([0, 1, 0, 0, 2]))
write("cluster-frame", "heartbeat", bytes([4, 1, 0, 0, 1]) + struct.pack("<QQ", 1, 12345))
write("cluster-frame", "faults", b"# faults\nseed: 7\nrules:\n  - {action: drop, channel: coherence, probability: 0.1}\n"
      b"  - {action: delay, from: 0, to: 1, delay: 1ms, lane: 1}\n")
print("seeds written to", corpus)
