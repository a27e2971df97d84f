"""Keep the embedded Redis private: a 0700 data dir, 0600 files, a short private socket dir, a password.

The embedded redis-server trusts whoever reaches it, so nobody else may: its unix socket lives in
a directory only we can enter, its AOF/RDB/log files are readable by us alone, and when TCP is
unavoidable it gets a generated ``requirepass`` that never reaches a command line or a log.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import sys
import tempfile
from pathlib import Path

#: Files of a data dir that hold data or its trace; older runs may have left them 0644.
PRIVATE_FILES = ("appendonly.aof", "dump.rdb", "redis.log", "redis.lock", "redis-auth.conf")
#: The mode of everything the child creates: no group, no other.
CHILD_UMASK = 0o077


def tighten_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` 0700 (or make an existing one 0700) and make its Redis files 0600."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)  # mkdir's mode is ignored for an existing dir and masked by the umask
    for name in PRIVATE_FILES:
        path = data_dir / name
        if path.is_file():
            os.chmod(path, 0o600)
    for path in data_dir.glob("*.aof"):
        os.chmod(path, 0o600)


def open_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """Open ``path`` (created 0600) and make sure an existing file is 0600 too."""
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def short_socket_dir(max_path: int) -> Path | None:
    """A fresh 0700 directory whose ``redis.sock`` fits ``max_path`` bytes, or None if none fits.

    ``/tmp`` first: a long ``$TMPDIR`` (macOS gives ~50 bytes) is what made the data dir too long.
    """
    for base in ("/tmp", tempfile.gettempdir()):
        if not os.path.isdir(base):
            continue
        if len(os.fsencode(os.path.join(base, "tablelock-redis-XXXXXXXX", "redis.sock"))) > max_path:
            continue
        return Path(tempfile.mkdtemp(prefix="tablelock-redis-", dir=base))  # mkdtemp makes it 0700
    return None


def new_password() -> str:
    """A generated ``requirepass`` for a TCP listener."""
    return secrets.token_urlsafe(32)


def write_auth_config(data_dir: Path, password: str) -> Path:
    """Write the password to a 0600 config file redis-server reads: never on its command line (ps)."""
    path = data_dir / "redis-auth.conf"
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as out:
        out.write(f"requirepass {password}\n")
    return path


def child_setup() -> None:
    """Set up the redis-server child (a preexec_fn): umask 077, and die with its parent on Linux."""
    # Runs in the child between fork and exec: whatever redis-server creates (AOF, RDB) is 0600.
    os.umask(CHILD_UMASK)
    if sys.platform.startswith("linux"):
        _die_with_parent()


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. If the coordinator is SIGKILLed, the kernel sends
    # SIGTERM to redis-server so it does not outlive us holding the data dir. Caveat: the signal
    # fires when the *thread* that forked exits, so start() belongs on a long-lived thread.
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 - best effort; only the orphan guard is lost
        pass
