#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the fuzz targets into tests/fuzz/corpus/<target>/seed-*.

Run from anywhere: python3 tests/fuzz/make_seeds.py. Seeds are committed; rerun after changing an
input format (see each target's header comment). The agent seeds are protobuf text encoded with
`protoc --encode` (protobuf-compiler). Inputs found by fuzzing (crash-*, min-*, merged hashes) sit
beside the seeds and are never rewritten here.
"""
import os
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(bytes(data))


# --- virtqueue helpers -------------------------------------------------------------------------
NEXT, WRITE, INDIRECT = 1, 2, 4


def put(ram, off, fmt, *vals):
    b = struct.pack(fmt, *vals)
    if len(ram) < off + len(b):
        ram.extend(b"\0" * (off + len(b) - len(ram)))
    ram[off:off + len(b)] = b


def desc(ram, table, i, addr, length, flags=0, nxt=0):
    put(ram, table + 16 * i, "<QIHH", addr, length, flags, nxt)


def avail(ram, base, heads, idx=None, flags=0, used_event=None, size=None):
    put(ram, base, "<HH", flags, len(heads) if idx is None else idx)
    for i, h in enumerate(heads):
        put(ram, base + 4 + 2 * i, "<H", h)
    if used_event is not None:
        put(ram, base + 4 + 2 * size, "<H", used_event)


SIZE_INDEX = {1: 0, 2: 1, 4: 2, 8: 3, 16: 4}


def descriptor_chain():
    def seed(name, size, ram, event_idx=False, scale=0):
        write("descriptor_chain", name,
              bytes([SIZE_INDEX[size] | (8 if event_idx else 0) | (scale << 4)]) + bytes(ram))

    ram = bytearray(0x600)
    desc(ram, 0, 0, 0x400, 16, NEXT, 1)
    desc(ram, 0, 1, 0x500, 32, WRITE)
    avail(ram, 0x100, [0])
    seed("direct", 4, ram)

    ram = bytearray(0x800)
    desc(ram, 0, 0, 0x600, 48, INDIRECT)
    desc(ram, 0x600, 0, 0x400, 8, NEXT, 1)
    desc(ram, 0x600, 1, 0x410, 8, NEXT, 2)
    desc(ram, 0x600, 2, 0x500, 64, WRITE)
    desc(ram, 0, 1, 0x700, 4)
    avail(ram, 0x100, [0, 1], used_event=1, size=4)
    seed("indirect", 4, ram, event_idx=True, scale=2)

    ram = bytearray(0x300)
    desc(ram, 0, 0, 0x280, 4, NEXT, 1)
    desc(ram, 0, 1, 0x284, 4, NEXT, 0)
    avail(ram, 0x100, [0])
    seed("loop", 2, ram)

    ram = bytearray(0x300)
    desc(ram, 0, 0, 0x8000, 0x100, WRITE)
    desc(ram, 0, 1, 0x3ff0, 0x20)  # runs into the hole after the first region
    desc(ram, 0, 2, 0xFFFFFFFFFFFFFFF0, 0x20)  # wraps around
    desc(ram, 0, 3, 0x280, 8, WRITE | NEXT, 4)
    desc(ram, 0, 4, 0x288, 8)  # readable after writable
    desc(ram, 0, 5, 0x8000, 32, INDIRECT | NEXT, 6)
    desc(ram, 0, 6, 0x8000, 24, INDIRECT)  # not a multiple of 16
    desc(ram, 0, 7, 0x0, 16, INDIRECT)  # an indirect table that is the main table: nested
    avail(ram, 0x100, [0, 1, 2, 3, 5, 6, 7, 4])
    seed("bad-descriptors", 8, ram)

    ram = bytearray(0x300)
    desc(ram, 0, 0, 0x280, 8)
    avail(ram, 0x100, [0], idx=100)  # avail idx far ahead
    seed("bad-avail-idx", 4, ram)

    ram = bytearray(0x300)
    desc(ram, 0, 0, 0x280, 8)
    avail(ram, 0x100, [9])  # head out of range
    seed("bad-head", 4, ram)

    ram = bytearray(0x1000)
    for i in range(16):
        desc(ram, 0, i, 0x400 + 0x40 * i, 0x40, (WRITE if i >= 8 else 0) | (NEXT if i < 15 else 0), i + 1)
    avail(ram, 0x100, [0], used_event=0, size=16)
    seed("long-chain", 16, ram, event_idx=True, scale=3)


# --- virtio-mmio -------------------------------------------------------------------------------
def mmio():
    def reg(off, value=0, write=True, width=0):
        return bytes([width | (4 if write else 0), off // 4]) + struct.pack("<I", value)

    def rd(off, width=0):
        return reg(off, 0, False, width)

    def mem32(gpa, value):
        assert gpa % 2 == 0 and gpa < 0x1000
        return bytes([0x18 | (((gpa % 16) // 2) << 5), gpa // 16]) + struct.pack("<I", value)

    def cfg(off, value=0, write=False, width=0):
        return bytes([width | (4 if write else 0) | 0x08, off]) + struct.pack("<I", value)

    def ring_memory():
        ops = b""
        # desc0: 0x400/16 bytes NEXT->1; desc1: 0x500/32 bytes WRITE
        ops += mem32(0x0, 0x400) + mem32(0x8, 16) + mem32(0xC, 0x00010001)
        ops += mem32(0x10, 0x500) + mem32(0x18, 32) + mem32(0x1C, WRITE)
        ops += mem32(0x100, 0x00010000) + mem32(0x104, 0)  # avail: idx 1, ring[0] = 0
        return ops

    init = b""
    init += rd(0x00) + rd(0x04) + rd(0x08) + rd(0x0C)
    init += reg(0x70, 1) + reg(0x70, 3)
    init += reg(0x14, 1) + rd(0x10) + reg(0x14, 0) + rd(0x10)
    init += reg(0x24, 1) + reg(0x20, 1)  # VERSION_1
    init += reg(0x24, 0) + reg(0x20, (1 << 28) | (1 << 29))  # INDIRECT_DESC, EVENT_IDX
    init += reg(0x70, 0xB) + rd(0x70)
    init += reg(0x30, 0) + rd(0x34) + reg(0x38, 4)
    init += reg(0x80, 0x0) + reg(0x84, 0) + reg(0x90, 0x100) + reg(0x94, 0)
    init += reg(0xA0, 0x200) + reg(0xA4, 0) + reg(0x44, 1) + rd(0x44)
    init += reg(0x30, 1) + reg(0x38, 2) + reg(0x80, 0x800) + reg(0x90, 0x900) + reg(0xA0, 0xA00)
    init += ring_memory()
    init += reg(0x70, 0xF)
    use = reg(0x50, 0) + rd(0x60) + reg(0x64, 3) + reg(0x50, 1) + reg(0x50, 7) + rd(0xFC)
    use += cfg(0) + cfg(1, width=1) + cfg(2, width=2) + cfg(4, width=3) + cfg(8, 0xAABBCCDD, True)
    use += cfg(8) + cfg(0xF0, width=3) + rd(0x70)
    write("mmio", "init-notify-reset", init + use + reg(0x70, 0) + rd(0x70) + init + use)
    # Misbehaviour: wrong widths, odd offsets, queue writes after DRIVER_OK, status going back,
    # features after FEATURES_OK, unknown registers, huge queue select.
    bad = init
    bad += reg(0x38, 8) + reg(0x80, 0x1234) + reg(0x70, 0x1) + reg(0x20, 0xFFFFFFFF)
    bad += bytes([0x11 | 4, 0x71]) + struct.pack("<I", 0)  # raw offset 0x71, width 1
    bad += bytes([0x12, 0x70]) + struct.pack("<I", 0)  # raw offset 0x70 width 2 read
    bad += bytes([0x07, 0x1C]) + struct.pack("<I", 0)  # 8-byte status write
    bad += reg(0x30, 0xFFFFFFFF) + rd(0x34) + reg(0x38, 16) + reg(0x50, 0xFFFFFFFF)
    bad += reg(0xFC, 1) + rd(0x100 - 4) + reg(0x70, 0x80) + rd(0x70)
    write("mmio", "misbehaving-driver", bad)
    # Features refused (no VERSION_1), then DRIVER_OK without FEATURES_OK; a queue outside RAM.
    refused = reg(0x70, 1) + reg(0x70, 3) + reg(0x20, 1) + reg(0x70, 0xB) + rd(0x70) + reg(0x70, 0xF)
    refused += reg(0x70, 0) + reg(0x70, 3) + reg(0x24, 1) + reg(0x20, 1) + reg(0x70, 0xB)
    refused += reg(0x38, 16) + reg(0x80, 0xFFFFF000) + reg(0x84, 0xFFFFFFFF) + reg(0x44, 1)
    refused += reg(0x70, 0xF) + rd(0x70) + reg(0x50, 0)
    write("mmio", "refused", refused)


# --- vsock -------------------------------------------------------------------------------------
REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST = 1, 2, 3, 4, 5, 6, 7
GUEST, HOST = 3, 2
LOCAL0 = 1 << 30


def hdr(op, src_port, dst_port, length=0, src_cid=GUEST, dst_cid=HOST, typ=1, flags=0,
        buf_alloc=65536, fwd_cnt=0):
    return struct.pack("<QQIIIHHIII", src_cid, dst_cid, src_port, dst_port, length, typ, op, flags,
                       buf_alloc, fwd_cnt)


def vsock():
    def seed(name, packets, line=b"", flags=0, split=False):
        ram = bytearray(0x300)
        buf = 0x400
        heads = []
        slot = 0
        for p in packets:
            heads.append(slot)
            if split and len(p) > 20:
                desc(ram, 0, slot, buf, 20, NEXT, slot + 1)
                put(ram, buf, "%ds" % len(p[:20]), p[:20])
                desc(ram, 0, slot + 1, buf + 0x40, len(p) - 20)
                put(ram, buf + 0x40, "%ds" % len(p[20:]), p[20:])
                slot += 2
                buf += 0x100
            else:
                desc(ram, 0, slot, buf, len(p))
                put(ram, buf, "%ds" % len(p), p)
                slot += 1
                buf += 0x100
        assert slot <= 16
        avail(ram, 0x100, heads)
        write("vsock", name, bytes([flags, len(line)]) + line + bytes(ram))

    conversation = [
        hdr(RESPONSE, 1234, LOCAL0),
        hdr(RW, 1234, LOCAL0, 4) + b"ping",
        hdr(CREDIT_REQUEST, 1234, LOCAL0),
        hdr(RESPONSE, 52, LOCAL0 + 1),
        hdr(RW, 52, LOCAL0 + 1, 4) + b"data",
        hdr(REQUEST, 777, 5000),
        hdr(RW, 777, 5000, 3) + b"abc",
        hdr(REQUEST, 778, 6000),
        hdr(CREDIT_UPDATE, 777, 5000, buf_alloc=4096, fwd_cnt=3),
        hdr(SHUTDOWN, 1234, LOCAL0, flags=3),
        hdr(RST, 777, 5000),
    ]
    seed("conversation", conversation, b"CONNECT 52\n", flags=2)
    seed("conversation-split-timeouts", conversation[:7], b"connect 52\n", flags=2 | 4 | 1, split=True)
    bad = [
        hdr(RW, 1234, LOCAL0, 10) + b"short",  # len beyond the chain
        hdr(RW, 1234, LOCAL0, 70000),  # len over the maximum
        hdr(RW, 1234, LOCAL0, src_cid=9),  # spoofed source
        hdr(RW, 1234, LOCAL0, dst_cid=7),  # not the host
        hdr(RW, 1234, LOCAL0, typ=2),  # seqpacket
        hdr(99, 1234, LOCAL0),  # unknown op
        hdr(RW, 4321, 4321, 1) + b"x",  # unknown connection
        hdr(RST, 4321, 4321),
        hdr(RESPONSE, 1234, LOCAL0)[:30],  # truncated header
        hdr(REQUEST, 800, 0xFFFFFFFF),
    ]
    seed("malformed", bad, b"CONNECT 4294967295\n", flags=2)
    for i, line in enumerate([b"CONNECT abc\n", b"  CoNnEcT\t 7 \r\n", b"CONNECT 1 2\n",
                              b"CONNECT 99999999999\n", b"CONNECT 5", b"x" * 40, b"\n"]):
        seed("line-%d" % i, [hdr(RESPONSE, 7, LOCAL0 + 1)], line, flags=2 | 4)


# --- ttrpc -------------------------------------------------------------------------------------
def varint(v):
    out = b""
    v &= (1 << 64) - 1
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, wire, payload):
    key = varint((num << 3) | wire)
    if wire == 0:
        return key + varint(payload)
    return key + varint(len(payload)) + payload


def request(service, method, payload=b"", timeout=0, metadata=()):
    m = field(1, 2, service) + field(2, 2, method) + field(3, 2, payload)
    if timeout:
        m += field(4, 0, timeout)
    for k, v in metadata:
        m += field(5, 2, field(1, 2, k) + field(2, 2, v))
    return m


def frame(stream, payload, typ=1, flags=0, length=None):
    return struct.pack(">IIBB", len(payload) if length is None else length, stream, typ, flags) + payload


def ttrpc():
    svc = b"fuzz.v1.Svc"
    ok = (frame(1, request(svc, b"Echo", b"hi", metadata=[(b"k", b"v")]))
          + frame(3, request(svc, b"Fail")) + frame(5, request(svc, b"Drop"))
          + frame(7, request(svc, b"Later", timeout=1000000000, metadata=[(b"k", b"1"), (b"k", b"2")]))
          + frame(9, request(svc, b"Later", timeout=1)) + frame(11, request(svc, b"Nope"))
          + frame(13, request(b"no.Such", b"Echo")))
    write("ttrpc", "calls", ok)
    write("ttrpc", "refused", frame(2, request(svc, b"Echo")) + frame(1, b"\xff\xff\xff")
          + frame(15, b"", typ=3, flags=2) + frame(17, b"", typ=2)
          + frame(19, request(svc, b"Later", timeout=10 ** 12)) + frame(19, request(svc, b"Echo")))
    write("ttrpc", "bad-type", frame(1, request(svc, b"Echo")) + frame(3, b"", typ=9))
    write("ttrpc", "too-long", frame(1, b"", length=(4 << 20) + 1))
    write("ttrpc", "mid-frame-eof", frame(1, request(svc, b"Echo"), length=100))
    write("ttrpc", "many", b"".join(frame(2 * i + 1, request(svc, b"Later")) for i in range(12)))


# --- agent OCI spec ----------------------------------------------------------------------------
def agent_spec():
    proto_dir = os.path.join(ROOT, "rpc", "proto")
    proto = "vessel/agent/v1/agent.proto"

    def encode(kind, selector, text):
        out = subprocess.run(["protoc", "--encode=vessel.agent.v1." + kind, "-I", proto_dir,
                              "-I", "/usr/include", proto], input=text.encode(),
                             capture_output=True, check=True).stdout
        return bytes([selector]) + out

    process = '''process { args: "/bin/sh" args: "-c" args: "true" env: "PATH=/bin:/usr/bin" env: "A=b"
      cwd: "/tmp" user { uid: 1000 gid: 1000 additional_gids: 10 }
      rlimits { type: "RLIMIT_NOFILE" hard: 1024 soft: 512 }
      capabilities { bounding: "CAP_CHOWN" effective: "CAP_CHOWN" permitted: "CAP_CHOWN"
                     ambient: "CAP_NET_BIND_SERVICE" }
      no_new_privileges: true terminal: true }'''
    full = '''container_id: "c1" hostname: "box" rootfs: "/rootfs" rootfs_readonly: true
      %s
      mounts { destination: "/proc" type: "proc" source: "proc" options: "nosuid" options: "noexec" }
      mounts { destination: "/dev" type: "tmpfs" source: "tmpfs" options: "mode=755" options: "size=65536k" }
      mounts { destination: "/dev/pts" type: "devpts" options: "newinstance" options: "gid=5" }
      mounts { destination: "/sys/fs/cgroup" type: "cgroup" options: "ro" }
      mounts { destination: "/data" type: "bind" source: "/src/dir" options: "rbind" options: "ro" options: "rprivate" }
      mounts { destination: "/etc/hosts" type: "none" source: "/src/file" options: "bind" }
      namespaces { type: NAMESPACE_TYPE_MOUNT } namespaces { type: NAMESPACE_TYPE_UTS }
      namespaces { type: NAMESPACE_TYPE_PID } namespaces { type: NAMESPACE_TYPE_IPC }
      namespaces { type: NAMESPACE_TYPE_NETWORK path: "/ns/net" }
      namespaces { type: NAMESPACE_TYPE_CGROUP }
      seccomp { default_action: "SCMP_ACT_ERRNO" default_errno_ret: 1 architectures: "SCMP_ARCH_X86_64"
        flags: "SECCOMP_FILTER_FLAG_LOG"
        syscalls { names: "read" names: "write" names: "exit_group" names: "no_such_call" action: "SCMP_ACT_ALLOW" }
        syscalls { names: "personality" action: "SCMP_ACT_ALLOW"
                   args { index: 0 value: 8 op: "SCMP_CMP_EQ" } }
        syscalls { names: "socket" action: "SCMP_ACT_ERRNO" errno_ret: 97
                   args { index: 0 value: 16 op: "SCMP_CMP_NE" }
                   args { index: 2 value: 255 value_two: 3 op: "SCMP_CMP_MASKED_EQ" } }
        syscalls { names: "kill" action: "SCMP_ACT_KILL_PROCESS" } }
      resources { }''' % process
    write("agent_spec", "create-full", encode("CreateContainerRequest", 0, full))
    write("agent_spec", "create-limits", encode("CreateContainerRequest", 0,
          'container_id: "c2" rootfs: "/rootfs" process { args: "ls" } '
          'namespaces { type: NAMESPACE_TYPE_MOUNT } '
          'resources { cpu_shares: 1024 cpu_quota: 50000 cpu_period: 100000 memory_limit: -1 pids_limit: 0 }'))
    write("agent_spec", "create-bad", encode("CreateContainerRequest", 0,
          'container_id: "../x" rootfs: "rootfs" process { args: "" cwd: "rel" env: "NOEQUALS" '
          'rlimits { type: "RLIMIT_BOGUS" } capabilities { bounding: "CAP_NOPE" } } '
          'mounts { destination: "/a/../b" type: "bind" source: "/nope" } '
          'mounts { destination: "/" type: "proc" } mounts { destination: "/x" type: "nfs" } '
          'namespaces { type: NAMESPACE_TYPE_USER } namespaces { type: NAMESPACE_TYPE_MOUNT path: "/ns/mnt" } '
          'seccomp { default_action: "SCMP_ACT_BOGUS" syscalls { names: "read" action: "SCMP_ACT_ERRNO" errno_ret: 5000 '
          'args { index: 9 op: "SCMP_CMP_WHAT" } } }'))
    write("agent_spec", "create-seccomp-only", encode("CreateContainerRequest", 0,
          'seccomp { default_action: "SCMP_ACT_ALLOW" architectures: "SCMP_ARCH_X86" architectures: "SCMP_ARCH_X32" '
          'syscalls { names: "mount" names: "umount2" action: "SCMP_ACT_ERRNO" } '
          'syscalls { names: "ptrace" action: "SCMP_ACT_TRACE" errno_ret: 1 } '
          'syscalls { names: "clone" action: "SCMP_ACT_ERRNO" args { index: 0 value: 2114060288 op: "SCMP_CMP_MASKED_EQ" } } }'))
    write("agent_spec", "sandbox", encode("CreateSandboxRequest", 1,
          'sandbox_id: "pod-1" hostname: "pod" dns: "nameserver 10.0.0.10" '
          'interfaces { name: "eth0" mac: "02:00:00:00:00:01" mtu: 1500 '
          'addresses { address: "10.0.0.2" prefix_length: 24 } addresses { address: "fd00::2" prefix_length: 64 } } '
          'routes { destination: "0.0.0.0/0" gateway: "10.0.0.1" device: "eth0" } '
          'routes { destination: "fd00::/64" device: "eth0" source: "fd00::2" scope: 253 }'))
    write("agent_spec", "sandbox-bad", encode("CreateSandboxRequest", 1,
          'sandbox_id: "" interfaces { name: "a/b" mac: "zz" addresses { address: "10.0.0.256" prefix_length: 40 } } '
          'routes { destination: "1.2.3.4/99" gateway: "::1" device: "this-name-is-too-long" }'))
    write("agent_spec", "exec", encode("ExecProcessRequest", 2,
          'container_id: "c1" exec_id: "e1" ' + process))


# --- virtio-blk (the input is the guest RAM image from address 0) -----------------------------
def virtio_blk():
    IN, OUT, FLUSH, GET_ID, DISCARD = 0, 1, 4, 8, 11

    def request(name, reqs, event_idx=False):
        ram = bytearray(0x1000)
        heads = []
        buf = 0x400
        for i, (typ, sector, data_len, data_write) in enumerate(reqs):
            h = 3 * i
            heads.append(h)
            put(ram, buf, "<IIQ", typ, 0, sector)
            desc(ram, 0, h, buf, 16, NEXT, h + 1)
            if data_len:
                desc(ram, 0, h + 1, buf + 0x20, data_len, (WRITE if data_write else 0) | NEXT, h + 2)
                desc(ram, 0, h + 2, buf + 0x20 + data_len, 1, WRITE)
            else:
                desc(ram, 0, h + 1, buf + 0x20, 1, WRITE)
            buf += 0x20 + data_len + 0x10
        avail(ram, 0x100, heads)
        if event_idx:
            ram[0] |= 1
        write("virtio_blk", name, ram[:max(buf, 0x300)])

    request("read-write", [(OUT, 1, 512, False), (IN, 1, 512, True)])
    request("flush-getid", [(FLUSH, 0, 0, False), (GET_ID, 0, 20, True)], event_idx=True)
    request("out-of-range", [(IN, 63, 1024, True), (OUT, 1 << 60, 512, False), (99, 0, 8, True),
                             (DISCARD, 0, 16, False)])


# --- virtio-fs (records: [opcode selector][nodeid][flags][u16 cap][arg len][args]) --------------
def virtio_fs():
    OPS = ["LOOKUP", "FORGET", "GETATTR", "SETATTR", "READLINK", "SYMLINK", "MKNOD", "MKDIR",
           "UNLINK", "RMDIR", "RENAME", "LINK", "OPEN", "READ", "WRITE", "STATFS", "RELEASE",
           "FSYNC", "SETXATTR", "GETXATTR", "FLUSH", "INIT", "OPENDIR", "READDIR", "RELEASEDIR",
           "FSYNCDIR", "ACCESS", "CREATE", "INTERRUPT", "DESTROY", "BATCH_FORGET", "FALLOCATE",
           "READDIRPLUS", "RENAME2", "LSEEK"]

    def rec(op, nodeid, args=b"", flags=0, cap=0):
        return bytes([OPS.index(op), nodeid, flags]) + struct.pack("<H", cap) + bytes([len(args)]) + args

    def read_in(fh, off, size):
        return struct.pack("<QQIIQII", fh, off, size, 0, 0, 0, 0)

    s = (rec("LOOKUP", 1, b"f\0") + rec("GETATTR", 2, bytes(16)) + rec("OPEN", 2, struct.pack("<II", 2, 0))
         + rec("READ", 2, read_in(1, 0, 4096)) + rec("WRITE", 2, struct.pack("<QQIIQII", 1, 3, 4, 0, 0, 0, 0) + b"abcd")
         + rec("RELEASE", 2, struct.pack("<QIIQ", 1, 0, 0, 0)) + rec("OPENDIR", 1, struct.pack("<II", 0, 0))
         + rec("READDIRPLUS", 1, read_in(2, 0, 4096)) + rec("READDIR", 1, read_in(2, 0, 100), flags=2, cap=64)
         + rec("MKDIR", 1, struct.pack("<II", 0o755, 0) + b"new\0") + rec("LOOKUP", 1, b"out\0")
         + rec("READLINK", 4) + rec("LOOKUP", 1, b"..\0") + rec("LOOKUP", 1, b"etc/passwd\0")
         + rec("STATFS", 1) + rec("RENAME", 1, struct.pack("<Q", 1) + b"f\0g\0"))
    write("virtio_fs", "session", s)
    write("virtio_fs", "bad-len", rec("LOOKUP", 1, b"d\0", flags=0x41) + rec("READ", 9, b"\1", flags=1)
          + bytes([0xf7, 1, 0, 0, 0, 0]))


def main():
    targets = {"descriptor_chain": descriptor_chain, "mmio": mmio, "vsock": vsock,
               "ttrpc": ttrpc, "agent_spec": agent_spec,
               "virtio_blk": virtio_blk, "virtio_fs": virtio_fs}
    for name in sys.argv[1:] or targets:
        targets[name]()


if __name__ == "__main__":
    main()
