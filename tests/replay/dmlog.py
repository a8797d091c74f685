# SPDX-License-Identifier: BSD-3-Clause
"""Reader of the dm-log-writes log format (Linux's dm-log-writes target,
written by QEMU's and vdisk's blklogwrites filters).

Layout, little-endian, in units of the log's sector size S: sector 0 holds
the super block (u64 magic 0x6a736677736872, u64 version 1, u64 nr_entries,
u32 sectorsize); from sector 1, each entry is one sector (u64 sector,
u64 nr_sectors, u64 flags, u64 data_len) followed, unless it is a discard,
by nr_sectors sectors of data.  Offsets/lengths are in S units.
"""
import struct

MAGIC = 0x6a736677736872
FLUSH, FUA, DISCARD, MARK, METADATA = 1, 2, 4, 8, 16


class LogError(Exception):
    pass


class Entry:
    __slots__ = ("index", "offset", "length", "flags", "data_pos")

    def __init__(self, index, offset, length, flags, data_pos):
        self.index, self.offset, self.length = index, offset, length
        self.flags, self.data_pos = flags, data_pos

    def kind(self):
        if self.flags & FLUSH:
            return "flush"
        if self.flags & DISCARD:
            return "discard"
        if self.flags & MARK:
            return "mark"
        return "write"


class Log:
    """entries: from the super block's count, or (scan=True) every entry
    present in the file (the super block lags between flushes)."""

    def __init__(self, path, scan=False):
        self.f = open(path, "rb")
        sb = self.f.read(28)
        if len(sb) < 28:
            raise LogError("%s: no super block" % path)
        magic, version, self.nr_entries, self.sector_size = struct.unpack("<QQQI", sb)
        if magic != MAGIC:
            raise LogError("%s: bad magic %#x" % (path, magic))
        if version != 1:
            raise LogError("%s: unsupported version %d" % (path, version))
        if self.sector_size < 512 or self.sector_size & (self.sector_size - 1):
            raise LogError("%s: bad sector size %d" % (path, self.sector_size))
        self.entries = []
        self.f.seek(0, 2)
        size = self.f.tell()
        s = self.sector_size
        cur = 1
        i = 0
        while scan or i < self.nr_entries:
            if (cur + 1) * s > size:
                if scan:
                    break
                raise LogError("%s: entry %d past the end" % (path, i))
            self.f.seek(cur * s)
            sector, nr, flags, _ = struct.unpack("<QQQQ", self.f.read(32))
            if flags & ~31:
                raise LogError("%s: entry %d: bad flags %#x" % (path, i, flags))
            if scan and sector == 0 and nr == 0 and flags == 0:
                break
            cur += 1
            data_pos = cur * s
            if not flags & DISCARD:
                cur += nr
                if cur * s > size:
                    if scan:
                        break
                    raise LogError("%s: entry %d data past the end" % (path, i))
            self.entries.append(Entry(i, sector * s, nr * s, flags, data_pos))
            i += 1

    def data(self, e):
        self.f.seek(e.data_pos)
        return self.f.read(e.length)

    def close(self):
        self.f.close()


def dump(path):
    log = Log(path)
    out = ["sector_size=%d nr_entries=%d" % (log.sector_size, log.nr_entries)]
    import hashlib
    for e in log.entries:
        h = hashlib.sha256(log.data(e)).hexdigest()[:16] if e.kind() == "write" else "-"
        out.append("%d %s off=%d len=%d flags=%d %s" % (e.index, e.kind(), e.offset, e.length,
                                                        e.flags, h))
    return out


if __name__ == "__main__":
    import sys
    print("\n".join(dump(sys.argv[1])))
