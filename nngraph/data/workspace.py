"""How a build writes its folder, shared by the INR builder
(:mod:`nngraph.data.build`) and the model-zoo builder (:mod:`nngraph.zoo.build`):
the one-writer lock (whose creation is the writability check, before any
fitting or training), finished chunks kept in ``.partial/`` so that a killed
build resumes, stale temporary files, shard specs, and the up-front check of a
numeric setting."""
from __future__ import annotations

import contextlib
import math
import os
import re
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

from nngraph._atomic import LockHeldError, exclusive, remove_stale_temp_files

__all__ = ['DATA_ROOT_ENV', 'LOCK', 'PARTIAL', 'writer', 'rewriting', 'refuse_other_settings', 'chunk_path',
           'clear_chunks', 'clean_temp_files', 'parse_shard', 'setting']

DATA_ROOT_ENV = 'NNGRAPH_DATA_ROOT'
LOCK = '.lock'               # held by the one process writing a build (or a shard)
PARTIAL = '.partial'         # finished chunks of an unfinished build


@contextlib.contextmanager
def writer(folder: str, lock_name: str, what: str) -> Iterator[None]:
    """Makes this process the one writer of ``folder`` for the block.

    Creating the folder and the lock file inside it is the writability check,
    done before any fitting (a build into an unwritable root used to fit for
    42 minutes, then fail and lose everything).

    Raises:
        LockHeldError: another live build or merge holds the lock (named).
        ValueError: ``folder`` cannot be created or written (named, with why).
    """
    with contextlib.ExitStack() as stack:
        try:
            os.makedirs(folder, exist_ok=True)
            stack.enter_context(exclusive(os.path.join(folder, lock_name), what))
        except LockHeldError:
            raise
        except OSError as err:
            why = 'it is a file, not a directory' if os.path.isfile(folder) else \
                f'{err.strerror or err} ({type(err).__name__})'
            raise ValueError(f'cannot write {what}: {why}; choose a writable directory (out= / --out, '
                             f'or ${DATA_ROOT_ENV})') from None
        yield


@contextlib.contextmanager
def rewriting(out: str, folder: str, lock_name: str, what: str, chunks: Sequence[Tuple[int, int]],
              targets: Sequence[str], overwrite: bool, done: Callable[[], bool]) -> Iterator[bool]:
    """The one writer of a build's result (a whole build, or one shard) made
    from ``chunks``: under :func:`writer` of ``folder``, removes the temporary
    files a killed run left beside ``targets`` and the chunks; with
    ``overwrite`` drops finished chunks too, else asks ``done()`` whether the
    result is already there (another process may have finished it while this
    one waited). Yields whether there is work to do; once the block has
    written the result, the chunk files go. An exception in the block keeps
    them, so that the rerun resumes."""
    with writer(folder, lock_name, what):
        clean_temp_files(out, chunks, targets)
        if overwrite:
            clear_chunks(out, chunks)
        elif done():
            yield False
            return
        yield True
        clear_chunks(out, chunks)


def refuse_other_settings(out: str, what: str, old: Dict[str, Any], new: Dict[str, Any],
                          keys: Sequence[str]) -> None:
    """Refuses to reuse the build in ``out`` whose settings ``old`` differ from
    the asked ``new`` at ``keys``, naming each key with both values."""
    if keys:
        desc = ', '.join(f'{k}: built {old.get(k)!r}, asked {new.get(k)!r}' for k in keys)
        raise ValueError(f'{out!r} already holds {what} built with other settings ({desc}); '
                         f'pass overwrite=True (--overwrite) to rebuild it, or another out=')


def chunk_path(out: str, a: int, b: int) -> str:
    """Where the finished chunk ``[a, b)`` of an unfinished build in ``out`` is kept."""
    return os.path.join(out, PARTIAL, f'chunk-{a:09d}-{b:09d}.pt')


def clear_chunks(out: str, chunks: Sequence[Tuple[int, int]]) -> None:
    """Removes the partial files of ``chunks`` (and their stale temp files),
    then ``out/.partial`` if nothing else is left in it (a shard of the same
    build may still be using it)."""
    for a, b in chunks:
        path = chunk_path(out, a, b)
        remove_stale_temp_files(path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(out, PARTIAL))


def clean_temp_files(out: str, chunks: Sequence[Tuple[int, int]], targets: Sequence[str]) -> None:
    """Removes the temporary files a killed build left beside ``targets``
    and its chunk files (only this process's: it holds their lock)."""
    for path in targets:
        remove_stale_temp_files(path)
    folder = os.path.join(out, PARTIAL)
    if os.path.isdir(folder):
        mine = {os.path.basename(chunk_path(out, a, b)) for a, b in chunks}
        for name in os.listdir(folder):      # one listing, not one per chunk
            if name.startswith('.') and name.endswith('.tmp') and name[1:].split('.pt.')[0] + '.pt' in mine:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, name))


def parse_shard(shard: Union[str, Tuple[int, int]]) -> Tuple[int, int]:
    """``(i, n)`` from ``'i/n'`` or a pair; a ``ValueError`` naming it unless ``0 <= i < n``."""
    if isinstance(shard, str):
        m = re.fullmatch(r'\s*(\d+)\s*/\s*(\d+)\s*', shard)
        if not m:
            raise ValueError(f'shard must be written i/n (e.g. 0/4), got {shard!r}')
        shard = (int(m.group(1)), int(m.group(2)))
    i, n = (int(v) for v in shard)
    if n < 1 or not (0 <= i < n):
        raise ValueError(f'shard {i}/{n}: need n >= 1 and 0 <= i < n')
    return i, n


def setting(o: Dict[str, Any], key: str, kind: type, low: Optional[float] = None,
             optional: bool = False, open_low: bool = False):
    """``o[key]`` as ``kind``, refused up front (before any fitting) unless it
    is a finite number ``>= low`` (``> low`` with ``open_low``), or ``None``
    where ``optional``: a NaN learning rate fitted NaN networks for 42 minutes."""
    value = o[key]
    if value is None and optional:
        return None
    what = 'an integer' if kind is int else 'a finite number'
    if low is not None:
        what += f' {">" if open_low else ">="} {low:g}'
    try:
        if isinstance(value, bool) or (kind is int and isinstance(value, float) and not value.is_integer()):
            raise TypeError
        typed = kind(value)
    except (TypeError, ValueError, OverflowError):
        typed = None
    if typed is None or not math.isfinite(typed) or (
            low is not None and (typed <= low if open_low else typed < low)):
        raise ValueError(f'build setting {key}={value!r} is not {what}'
                         f'{" (or None)" if optional else ""}')
    return typed
