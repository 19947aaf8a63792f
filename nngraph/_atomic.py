"""Atomic file writes (a reader sees the old file or the complete new one,
never half), the cleaning of what a killed writer left, and lock files that
make one process the only writer of a folder."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from typing import Iterator, Optional, Union


@contextlib.contextmanager
def atomic_path(path: Union[str, os.PathLike]) -> Iterator[str]:
    """Yields a temporary path beside ``path``; on success it is renamed onto
    ``path`` (atomic on POSIX), on error it is removed and ``path`` untouched."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual mode
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stale_temp_files(path: Union[str, os.PathLike]) -> list:
    """The temporary files :func:`atomic_path` left beside ``path`` when its
    process was killed before the rename (``.<name>.XXXX.tmp``)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    prefix = '.' + os.path.basename(path) + '.'
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return [os.path.join(folder, n) for n in names if n.startswith(prefix) and n.endswith('.tmp')]


def remove_stale_temp_files(path: Union[str, os.PathLike]) -> int:
    """Removes :func:`stale_temp_files` of ``path``; returns how many. Call it
    only while holding the lock that makes this process the one writer of
    ``path`` (:func:`exclusive`), or it may remove a live writer's file."""
    gone = 0
    for tmp in stale_temp_files(path):
        try:
            os.unlink(tmp)
            gone += 1
        except FileNotFoundError:
            pass
    return gone


class LockHeldError(ValueError):
    """Another live process holds the lock (its holder is named)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # alive, owned by another user
        return True
    return True


def read_lock(path: Union[str, os.PathLike]) -> Optional[dict]:
    """The holder ``{'pid', 'host', 'since'}`` recorded in lock file ``path``,
    ``{}`` for an unreadable one, ``None`` where there is no lock."""
    try:
        with open(path) as f:
            holder = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def lock_is_stale(holder: Optional[dict]) -> bool:
    """Whether a lock's holder is certainly gone: a process of *this* host
    whose pid no longer runs. A lock of another host, or an unreadable one,
    is never stale (we cannot tell)."""
    if not holder or not isinstance(holder.get('pid'), int):
        return False
    return holder.get('host') == socket.gethostname() and not _pid_alive(holder['pid'])


def describe_lock(holder: Optional[dict]) -> str:
    """``pid 123 on host h since 2026-01-01 10:00:00`` (or why it is unknown)."""
    if not holder:
        return 'an unknown process (the lock file is empty or unreadable)'
    since = holder.get('since')
    when = time.strftime(' since %Y-%m-%d %H:%M:%S', time.localtime(since)) \
        if isinstance(since, (int, float)) else ''
    return f'pid {holder.get("pid")} on host {holder.get("host")!r}{when}'


@contextlib.contextmanager
def exclusive(path: Union[str, os.PathLike], what: str) -> Iterator[dict]:
    """Holds the lock file ``path`` for the block: created with
    ``O_CREAT | O_EXCL`` (one winner even between processes and hosts that
    share the folder), holding this process's pid and host; removed on exit.

    A lock left by a process of this host that no longer runs (killed) is
    taken over. Raises :class:`LockHeldError` naming ``what`` and the holder
    when a live process, another host's process or an unknown one holds it.
    Creating the lock is also the proof that the folder is writable: an
    ``OSError`` there is the caller's to explain.
    """
    path = os.fspath(path)
    me = dict(pid=os.getpid(), host=socket.gethostname(), since=time.time())
    for attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(path)
            if attempt == 0 and lock_is_stale(holder):
                # Remove the stale lock only if it is still the one we judged
                # (another process may have taken it over meanwhile).
                if read_lock(path) == holder:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
                continue
            raise LockHeldError(f'{what} is locked by {describe_lock(holder)}: another build or '
                                f'merge is writing it; wait for it, or remove {path!r} if that '
                                f'process is gone') from None
        with os.fdopen(fd, 'w') as f:
            json.dump(me, f)
        break
    try:
        yield me
    finally:
        if read_lock(path) == json.loads(json.dumps(me)):   # never remove another's lock
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
