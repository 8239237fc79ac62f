"""Hostile uploads and connections, made as an attacker makes them: the service tests send them, and
benchmarks/attacks.py measures what each one costs a real server."""

from __future__ import annotations

import io
import json
import socket
import struct
import threading
import zipfile
import zlib

import numpy as np

from support.service import run_together

_DOS_DATE = 0x21  # 1980-01-01, the zip epoch


def npy_header(descr: str, shape: tuple) -> bytes:
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue()


def deflated_zip(members: list[tuple[str, bytes]]) -> bytes:
    """A zip of deflated members, each distinct payload (by identity) compressed once: many members
    of one large payload cost one compression, as they cost an attacker."""
    compressed: dict[int, tuple[bytes, int]] = {}
    out, directory = io.BytesIO(), io.BytesIO()
    for name, payload in members:
        if id(payload) not in compressed:
            packer = zlib.compressobj(6, zlib.DEFLATED, -15)
            compressed[id(payload)] = (packer.compress(payload) + packer.flush(), zlib.crc32(payload))
        data, crc = compressed[id(payload)]
        encoded, offset = name.encode(), out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, _DOS_DATE, crc, len(data), len(payload),
                              len(encoded), 0) + encoded + data)
        directory.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, _DOS_DATE, crc, len(data),
                                    len(payload), len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start = out.tell()
    out.write(directory.getvalue())
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(directory.getvalue()),
                          start, 0))
    return out.getvalue()


def spaces_of_zeros(spaces: int, mib: int) -> bytes:
    """A file of several spaces whose every space member is ``mib`` MiB of zeros (about 1,000:1):
    issue 29's 32 × 63 MiB in 2 MB."""
    record = io.BytesIO()
    np.save(record, np.str_(json.dumps({"spaces": [f"s{i}" for i in range(spaces)], "validation_fd": {}})))
    zeros = npy_header("|u1", (mib << 20,)) + bytes(mib << 20)
    return deflated_zip([("fastfid_spaces.npy", record.getvalue())]
                        + [(f"space{i}.npy", zeros) for i in range(spaces)])


def inflated_metadata(stats_file: bytes, member: str = "fastfid_feature_space", mib: int = 63) -> bytes:
    """A good statistics file with its text member replaced by ``mib`` MiB of declared characters."""
    with zipfile.ZipFile(io.BytesIO(stats_file)) as zipped:
        kept = [(name, zipped.read(name)) for name in zipped.namelist() if name != f"{member}.npy"]
    text = npy_header(f"<U{(mib << 20) // 4}", ()) + bytes(mib << 20)
    return deflated_zip([*kept, (f"{member}.npy", text)])


def many_members(count: int) -> bytes:
    """An archive of ``count`` empty members (issue 29's 50,000-member file, in small)."""
    empty = b""
    return deflated_zip([(f"m{i}.npy", empty) for i in range(count)])


def overlapping_zip() -> bytes:
    """Two members whose data overlap: the second's local header and data lie inside the first's
    (the shape of Fifield's non-recursive zip bomb, where every member inflates one shared stream)."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_STORED) as zipped:
        header = io.BytesIO()
        np.save(header, np.zeros(4))
        zipped.writestr("mu.npy", header.getvalue())
    second = inner.getvalue()
    second_local = second[:second.index(b"PK\x01\x02")]
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("sigma.npy", b"\x00" * 8 + second_local)
    data = bytearray(outer.getvalue())
    # Append a second central directory entry pointing into the first member's data.
    directory_at = data.index(b"PK\x01\x02")
    end_at = data.index(b"PK\x05\x06")
    first_entry = bytes(data[directory_at:end_at])
    second_offset = 30 + len("sigma.npy") + 8
    second_entry = bytearray(second[second.index(b"PK\x01\x02"):second.index(b"PK\x05\x06")])
    second_entry[42:46] = second_offset.to_bytes(4, "little")
    directory = first_entry + bytes(second_entry)
    end = bytearray(data[end_at:end_at + 22])
    end[8:10] = end[10:12] = (2).to_bytes(2, "little")
    end[12:16] = len(directory).to_bytes(4, "little")
    return bytes(data[:directory_at]) + directory + bytes(end)


def shared_stream_zip(members: int = 32, mib: int = 128) -> bytes:
    """Issue 29's overlapping-entries bomb: one deflated stream of a d × d sigma's zeros, and
    ``members`` central entries that all point at it."""
    side = int(np.sqrt((mib << 20) // 8))
    sigma = npy_header("<f8", (side, side)) + bytes(side * side * 8)
    single = bytearray(deflated_zip([("sigma.npy", sigma)]))
    directory_at, end_at = single.index(b"PK\x01\x02"), single.index(b"PK\x05\x06")
    entry = bytes(single[directory_at:end_at])
    entries = b"".join(entry.replace(b"sigma.npy", f"sig{i:02d}.npy".encode()[:9]) for i in range(members))
    end = bytearray(single[end_at:end_at + 22])
    end[8:10] = end[10:12] = members.to_bytes(2, "little")
    end[12:16] = len(entries).to_bytes(4, "little")
    return bytes(single[:directory_at]) + entries + bytes(end)


def answer_of(connection: socket.socket, limit: int = 1 << 16) -> bytes:
    """What the server sent before it closed (or ``limit`` bytes); b"" for a reset."""
    chunks: list[bytes] = []
    try:
        while sum(map(len, chunks)) < limit:
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except OSError:
        pass
    return b"".join(chunks)


def response_of(connection: socket.socket) -> bytes:
    """One HTTP response, head and body (by its Content-Length), without waiting for the close."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _response_length(data):
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _response_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


def header_flood(port: int, connections: int = 8, headers: int = 1_000_000) -> list[bytes]:
    """``connections`` unauthenticated clients at once, each sending ``headers`` small headers; the
    first bytes of each answer (b"" where the server cut the connection without one)."""
    def flood(_) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
            try:
                connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * headers)
            except OSError:
                pass  # the server stopped reading: its answer may still be there
            return answer_of(connection, 64)

    return run_together(flood, connections)


def long_header(port: int, mib: int = 256) -> bytes:
    """One header value of ``mib`` MiB, sent until the server stops reading."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        try:
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: ")
            block = b"a" * (1 << 20)
            for _ in range(mib):
                connection.sendall(block)
        except OSError:
            pass
        return answer_of(connection, 64)


class Trickle:
    """Evaluation uploads whose bodies arrive a byte every ``every`` seconds (under the idle timeout)
    from a thread, until closed: what issue 29 sent to hold the work slots."""

    def __init__(self, port: int, token: str, connections: int = 2, every: float = 1.0):
        head = (f"POST /evaluations HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n\r\n--b\r\n").encode()
        self.connections = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(connections)]
        for connection in self.connections:
            connection.sendall(head)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._send, args=(every,), daemon=True)
        self._thread.start()

    def _send(self, every: float) -> None:
        while not self._stop.wait(every):
            for connection in self.connections:
                try:
                    connection.sendall(b"x")
                except OSError:
                    pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self.connections:
            connection.close()

    def __enter__(self) -> "Trickle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def peak_rss(pid: int) -> int | None:
    """The process's peak resident memory (VmHWM) in bytes; None where /proc does not say."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def reset_peak_rss(pid: int) -> bool:
    """Start the process's peak over from its current RSS (Linux's clear_refs); False where refused."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False
