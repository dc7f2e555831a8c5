"""The peer-credential check of the socket server: the kernel's structs decoded
from bytes built by hand (Linux ``struct ucred``, macOS ``struct xucred``), and
the decision to serve or refuse, which fails closed."""

from __future__ import annotations

import os
import socket

from impetusd.transport.server import admit_peer, read_peer_credentials, uid_from_ucred, uid_from_xucred

BIG_UID = 2**31 + 7  # uid_t is unsigned: directory services hand out uids this large


def le32(n: int) -> bytes:
    return n.to_bytes(4, "little")


def ucred(pid: int, uid: int, gid: int) -> bytes:
    return le32(pid) + le32(uid) + le32(gid)


def xucred(uid: int, groups: list[int], version: int = 0) -> bytes:
    # u_int cr_version; uid_t cr_uid; short cr_ngroups (+2 bytes padding); gid_t cr_groups[16]
    padded = groups + [0] * (16 - len(groups))
    return le32(version) + le32(uid) + len(groups).to_bytes(2, "little") + b"\0\0" + b"".join(le32(g) for g in padded)


def test_peer_credentials_large_uids_decode_unsigned() -> None:
    assert uid_from_ucred(ucred(4242, BIG_UID, 20)) == BIG_UID
    assert uid_from_xucred(xucred(BIG_UID, [20, 12, 61])) == BIG_UID
    assert uid_from_ucred(ucred(1, 501, 20)) == 501 and uid_from_xucred(xucred(501, [20])) == 501
    assert len(xucred(501, [20])) == 76  # sizeof(struct xucred) on macOS


def test_peer_credentials_same_large_uid_is_admitted_and_others_refused() -> None:
    assert admit_peer(("ucred", ucred(4242, BIG_UID, 20)), me=BIG_UID) == (True, "")
    assert admit_peer(("xucred", xucred(BIG_UID, [20])), me=BIG_UID) == (True, "")
    served, why = admit_peer(("xucred", xucred(BIG_UID + 1, [20])), me=BIG_UID)
    assert not served and str(BIG_UID + 1) in why


def test_peer_credentials_unreadable_are_refused() -> None:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        assert admit_peer(read_peer_credentials(a), os.getuid()) == (True, "")  # a real peer: this user
    finally:
        b.close()
        a.close()
    outcome = read_peer_credentials(a)  # the connection's credentials can no longer be read
    assert isinstance(outcome, OSError)
    served, why = admit_peer(outcome, os.getuid())
    assert not served and "cannot read the peer's credentials" in why
    assert admit_peer(None, os.getuid())[0] is False  # a platform with no way to read them
    assert admit_peer(("xucred", xucred(501, [20], version=3)), 501)[0] is False  # an unknown layout
    assert admit_peer(("xucred", b"\0" * 6), 0)[0] is False  # truncated
