"""How a build writes its folder, shared by the INR builder
(:mod:`nngraph.data.build`) and the model-zoo builder (:mod:`nngraph.zoo.build`):
the one-writer lock (whose creation is the writability check, before any
fitting or training), finished chunks kept in ``.partial/`` so that a killed
build resumes, stale temporary files, shard specs, and the up-front check of a
numeric setting; and the two ways one build uses several processes: workers
on this machine (:func:`in_workers`) and ``torchrun``'s ranks on one machine
or several (:func:`rank_group`, :func:`every_rank`)."""
from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import math
import multiprocessing
import os
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from nngraph._atomic import LockHeldError, exclusive, remove_stale_temp_files

__all__ = ['DATA_ROOT_ENV', 'LOCK', 'PARTIAL', 'writer', 'rewriting', 'refuse_other_settings', 'chunk_path',
           'clear_chunks', 'clean_temp_files', 'parse_shard', 'shard_slice', 'setting', 'in_workers', 'stopping',
           'rank_group', 'every_rank', 'RANK_TIMEOUT']

DATA_ROOT_ENV = 'NNGRAPH_DATA_ROOT'
LOCK = '.lock'               # held by the one process writing a build (or a shard)
PARTIAL = '.partial'         # finished chunks of an unfinished build
# How long a rank waits for the others at a step of a distributed build: the
# slowest rank's whole slice (an hour or more). torchrun ends every rank when
# one dies, so this only bounds a hang.
RANK_TIMEOUT = datetime.timedelta(hours=24)


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


def shard_slice(items: Sequence[Any], i: int, n: int) -> Sequence[Any]:
    """The ``i``-th of ``n`` contiguous slices of ``items`` (a shard's chunks),
    their sizes within one of each other."""
    return items[i * len(items) // n:(i + 1) * len(items) // n]


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


# --------------------------------------------------------------------------- #
# Several processes: workers on this machine, torchrun's ranks
# --------------------------------------------------------------------------- #

_STOP = None        # in a worker of in_workers: the pool's stop flag


def _start_worker(stop) -> None:
    global _STOP
    _STOP = stop


def stopping() -> bool:
    """In a worker of :func:`in_workers`: whether another worker failed (or the
    parent was interrupted), so that this one ends after its current chunk."""
    return _STOP is not None and _STOP.is_set()


def _describe(err: BaseException) -> str:
    return f'{type(err).__name__}: {err}'


def in_workers(fn: Callable[[Any], Any], jobs: Sequence[Any], names: Sequence[str]) -> None:
    """Runs ``fn(job)`` for every job, each in a process of its own, and waits
    for all of them.

    The processes are started by ``spawn`` (a fresh interpreter: no threads,
    locks or CUDA state of this one are inherited), so ``fn`` must be a
    module-level function and the jobs picklable (tensors travel through
    shared memory). The first failure raises the stop flag that
    :func:`stopping` reads in every worker, so the others end after their
    current chunk (every finished chunk stays in ``.partial`` for the rerun),
    and once all have ended a ``ValueError`` names each failed job
    (``names[k]``) with its error; the worker's traceback is its cause. A
    worker killed outright (out of memory) breaks the pool: the jobs it left
    unfinished are named the same way.
    """
    ctx = multiprocessing.get_context('spawn')
    stop = ctx.Event()
    failed: List[Tuple[int, BaseException]] = []
    with concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=ctx, initializer=_start_worker,
                                                initargs=(stop,)) as pool:
        futures = {pool.submit(fn, job): k for k, job in enumerate(jobs)}
        try:
            for future in concurrent.futures.as_completed(futures):
                if future.exception() is not None:
                    stop.set()
                    failed.append((futures[future], future.exception()))
        except BaseException:        # Ctrl-C here: the workers end after their chunk
            stop.set()
            raise
    if failed:
        failed.sort(key=lambda f: f[0])
        raise ValueError('; '.join(f'{names[k]} failed: {_describe(err)}' for k, err in failed)
                         + '. Finished chunks are kept: rerun the same build to resume') from failed[0][1]


@contextlib.contextmanager
def rank_group() -> Iterator[Tuple[int, int, Any]]:
    """``(rank, world_size, group)`` of this process in a gloo process group of
    every rank, for the block.

    Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
    ``MASTER_PORT`` set) with no process group yet, initialises the default
    one (``group`` is ``None``) and destroys it afterwards; where a process
    group already exists (a training job, perhaps on nccl), makes a gloo group
    of the same ranks beside it. Collectives wait up to :data:`RANK_TIMEOUT`.

    Raises:
        ValueError: no process group and torchrun's variables missing (named).
    """
    import torch.distributed as dist
    if dist.is_initialized():
        group = dist.new_group(backend='gloo', timeout=RANK_TIMEOUT)
        try:
            yield dist.get_rank(group), dist.get_world_size(group), group
        finally:
            dist.destroy_process_group(group)
        return
    missing = [k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ]
    if missing:
        raise ValueError(f'a distributed build runs as one of torchrun\'s processes (torchrun '
                         f'--nproc-per-node K -m nngraph.data build ...); {", ".join(missing)} not set')
    dist.init_process_group('gloo', timeout=RANK_TIMEOUT)
    try:
        yield dist.get_rank(), dist.get_world_size(), None
    finally:
        dist.destroy_process_group()


def every_rank(step: Callable[[], Any], name: Callable[[int], str], group: Any = None) -> List[Any]:
    """Runs ``step()`` on this rank, waits until every rank of ``group`` has
    run its own, and returns every rank's value (small and picklable), in rank
    order.

    The wait is an all-gather of the outcomes: the step's barrier, which also
    tells each rank whether the others succeeded, so that no rank waits at the
    next step for one that failed. When any rank failed, every rank raises:
    its own error where it failed, elsewhere a ``ValueError`` naming each
    failed rank (``name(rank)``) with its error.
    """
    import torch.distributed as dist
    err, value = None, None
    try:
        value = step()
    except Exception as e:
        err = e
    outcomes: List[Any] = [None] * dist.get_world_size(group)
    dist.all_gather_object(outcomes, ('ok', value) if err is None else ('failed', _describe(err)), group=group)
    if err is not None:
        raise err
    failed = [(r, what) for r, (kind, what) in enumerate(outcomes) if kind == 'failed']
    if failed:
        raise ValueError('; '.join(f'{name(r)} failed: {what}' for r, what in failed))
    return [v for _, v in outcomes]
