"""Where a `fastflow batch` dataset lives: a local folder, or an object store through fsspec (s3://, gs://,
az://, ...). batch.py names the dataset's files by their path inside it ("flows/date=.../part-....parquet",
"_fastflow/manifest.json") and goes through one of these two classes for everything it writes, reads, lists,
deletes and locks.

The two give batch the same guarantees by different means (docs/batch.md, "Crash safety and locking"):
- a file appears whole or not at all: locally a temporary name, fsync and rename; on an object store a PUT
  (or a multipart upload's completion) is atomic, so files are written in a local staging folder and uploaded
  under their final name;
- one run at a time: locally flock, which the kernel releases when the process dies; an object store has no
  locks, so the run creates a lock object by exclusive create (If-None-Match), keeps it fresh while it runs,
  and a lock left by a killed run is taken over once it is older than the lease."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
import threading
import time

from .errors import FastflowError, OutputError, UsageError
from .source import is_url, url_filesystem

META_DIR = "_fastflow"
LOCK_LEASE_S = 600.0        # an object store's lock not refreshed for this long belongs to a dead run


class LockedError(FastflowError):
    """Another batch run holds the dataset."""

    exit_code = 75      # sysexits EX_TEMPFAIL: try again later


def open_store(dataset: str) -> LocalStore | ObjectStore:
    """The store of a dataset named by a local path, a file:// URI or another fsspec URI."""
    if is_url(dataset):
        scheme, _, rest = dataset.partition("://")
        if scheme == "file":
            return LocalStore(rest)
        return ObjectStore(dataset)
    return LocalStore(dataset)


class LocalStore:
    """A dataset in a local (or shared POSIX) folder."""

    remote = False

    def __init__(self, root: str):
        self.root = self.name = os.path.abspath(root)

    def prepare(self) -> None:
        """Check that the dataset can be made here, and make its folder."""
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise UsageError(f"{self.root}: exists and is not a folder")
        try:
            os.makedirs(os.path.join(self.root, META_DIR), exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot write: {exc.strerror or exc}") from None

    def local_path(self, rel: str) -> str:
        """Where to write the file rel (by temporary name and rename, as ParquetStream does); publish() next."""
        path = os.path.join(self.root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def publish(self, rel: str, local: str) -> None:
        """The file written at local_path(rel) is in place (it was renamed there)."""

    def write_atomic(self, rel: str, data: bytes) -> None:
        """A small file (the manifest, a state file): temporary file, fsync, rename, fsync of the folder."""
        path = self.local_path(rel)
        folder = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            dfd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def open(self, rel: str):
        return open(os.path.join(self.root, rel), "rb")

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(self.root, rel))

    def files(self, top: str):
        """The files below top (a folder of the dataset), as paths inside the dataset."""
        for folder, _, names in os.walk(os.path.join(self.root, top)):
            for name in names:
                yield os.path.relpath(os.path.join(folder, name), self.root)

    def path(self, rel: str) -> str:
        """The full name of a file of the dataset, for messages and readers."""
        return os.path.join(self.root, rel)

    def contains(self, path: str) -> bool:
        """Whether a local input path lies inside the dataset (batch never reads its own outputs)."""
        return path == self.root or path.startswith(self.root + os.sep)

    @contextlib.contextmanager
    def locked(self):
        """Hold the dataset's lock for the run, or raise LockedError at once."""
        try:
            fd = os.open(os.path.join(self.root, META_DIR, "lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.root}: cannot write: {exc.strerror or exc}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockedError(f"{self.root}: another fastflow batch is running on this dataset; "
                                  "nothing done") from None
            yield
        finally:
            os.close(fd)

    def check_lock(self) -> None:
        """flock holds until the process ends: nothing to check."""

    def close(self) -> None:
        pass

    def filesystem(self):
        """(pyarrow-usable filesystem or None, root) for reading the dataset."""
        return None, self.root


class ObjectStore:
    """A dataset on an object store (any fsspec filesystem that can create a file exclusively)."""

    remote = True

    def __init__(self, url: str):
        self.name = url.rstrip("/")
        self.fs, root = url_filesystem(self.name)
        self.root = root.rstrip("/")
        # fsspec instances are shared and cache listings: other processes (workers, other runs) change the
        # dataset, so every listing here is fresh
        self.fs.invalidate_cache()
        self._stage: str | None = None
        self._generation: int | None = None

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def prepare(self) -> None:
        try:
            if self.fs.isfile(self.root):
                raise UsageError(f"{self.name}: exists and is not a folder")
        except (OSError, ValueError) as exc:
            raise OutputError(f"{self.name}: cannot reach the dataset: {exc}") from None

    def local_path(self, rel: str) -> str:
        """A staging file; publish() uploads it under its name in the dataset."""
        if self._stage is None:
            self._stage = tempfile.mkdtemp(prefix="fastflow-stage-")
        path = os.path.join(self._stage, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def publish(self, rel: str, local: str) -> None:
        # one PUT, or a multipart upload that becomes visible only when it completes: never half a file
        try:
            self.fs.put_file(local, self._full(rel))
        except (OSError, ValueError) as exc:
            raise OutputError(f"{self.path(rel)}: cannot write: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(local)

    def write_atomic(self, rel: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._full(rel), data)
        except (OSError, ValueError) as exc:
            raise OutputError(f"{self.path(rel)}: cannot write: {exc}") from None

    def open(self, rel: str):
        return self.fs.open(self._full(rel), "rb")

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._full(rel))

    def files(self, top: str):
        prefix = self.root + "/"
        self.fs.invalidate_cache()
        try:
            names = self.fs.find(self._full(top))
        except FileNotFoundError:
            return
        for name in names:
            if name.startswith(prefix):
                yield name[len(prefix):]

    def path(self, rel: str) -> str:
        return f"{self.name}/{rel}"

    def contains(self, path: str) -> bool:
        return path == self.name or path.startswith(self.name + "/")

    # --- the lock: generations of lock objects, each made by exclusive create ---------------------------
    # _fastflow/lock.N. A run takes generation N+1 (exclusive create: of two runs, one gets it) when
    # generation N is released or stale, and refreshes its lock object every lease/10 while it runs. A run
    # checks before each manifest write that no later generation exists (it would have lost the lock by not
    # refreshing it for a whole lease).

    def _generations(self) -> list[int]:
        # one level only: check_lock() runs before every manifest write, and _fastflow/state/ can hold many
        folder = self._full(META_DIR)
        self.fs.invalidate_cache(folder)
        try:
            names = self.fs.ls(folder, detail=False)
        except FileNotFoundError:
            return []
        found = []
        for name in names:
            name = name.rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("lock.") and name[5:].isdigit():
                found.append(int(name[5:]))
        return sorted(found)

    def _lock_body(self, **more) -> bytes:
        return json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time(), **more}).encode()

    @contextlib.contextmanager
    def locked(self):
        lease = float(os.environ.get("FASTFLOW_LOCK_LEASE_S", LOCK_LEASE_S))
        generations = self._generations()
        if generations:
            top = generations[-1]
            rel = f"{META_DIR}/lock.{top}"
            try:
                held = json.loads(self.fs.cat_file(self._full(rel)))
                modified = _modified(self.fs.info(self._full(rel)))
                # stale by this machine's clock: confirmed on the store's clock before it is taken over
                stale = held.get("released") or (_local_now() - modified >= lease
                                                  and self._store_now() - modified >= lease)
            except FileNotFoundError:       # released and replaced meanwhile: someone else is starting
                raise LockedError(f"{self.name}: another fastflow batch is starting on this dataset; "
                                  "nothing done") from None
            if not stale:
                raise LockedError(f"{self.name}: another fastflow batch is running on this dataset "
                                  f"({held.get('host')}, pid {held.get('pid')}); nothing done (a lock left by a "
                                  f"killed run is taken over after {lease:.0f} s)")
        mine = (generations[-1] if generations else 0) + 1
        try:
            with self.fs.open(self._full(f"{META_DIR}/lock.{mine}"), "xb") as f:
                f.write(self._lock_body())
        except FileExistsError:
            raise LockedError(f"{self.name}: another fastflow batch took the dataset's lock first; "
                              "nothing done") from None
        except (NotImplementedError, TypeError) as exc:
            raise UsageError(f"{self.name}: this filesystem cannot create a file exclusively, so it cannot hold "
                             f"the dataset's lock ({exc})") from None
        except (OSError, ValueError) as exc:
            raise OutputError(f"{self.name}: cannot write: {exc}") from None
        self._generation = mine
        for old in generations:
            self.delete(f"{META_DIR}/lock.{old}")
        stop = threading.Event()

        def refresh():
            while not stop.wait(lease / 10):
                with contextlib.suppress(OSError, ValueError):
                    self.fs.pipe_file(self._full(f"{META_DIR}/lock.{mine}"), self._lock_body())

        thread = threading.Thread(target=refresh, name="fastflow-lock", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            with contextlib.suppress(OSError, ValueError):
                self.fs.pipe_file(self._full(f"{META_DIR}/lock.{mine}"), self._lock_body(released=True))
            self._generation = None

    def _store_now(self) -> float:
        """The store's clock: the modification time it gives an object written now (the lock's age is
        measured on the clock that stamped it, whatever this machine's clock says)."""
        probe = self._full(f"{META_DIR}/clock")
        try:
            self.fs.pipe_file(probe, b"")
            return _modified(self.fs.info(probe))
        except (OSError, ValueError) as exc:
            raise OutputError(f"{self.name}: cannot write: {exc}") from None

    def check_lock(self) -> None:
        if self._generation is not None and self._generations()[-1:] != [self._generation]:
            raise LockedError(f"{self.name}: this run lost the dataset's lock (not refreshed for a whole lease) "
                              "to another run; it stops without writing the manifest")

    def close(self) -> None:
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None

    def filesystem(self):
        return self.fs, self.root


def _local_now() -> float:
    return time.time()


def modified_time(info: dict) -> float | None:
    """An object's modification time (s since the epoch) from an fsspec info() dict; None where the
    filesystem keeps none."""
    stamp = info.get("mtime", info.get("LastModified", info.get("last_modified", info.get("updated",
                                                                                         info.get("created")))))
    if stamp is None:
        return None
    if hasattr(stamp, "timestamp"):
        return stamp.timestamp()
    if isinstance(stamp, str):
        from datetime import datetime
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return float(stamp)


def _modified(info: dict) -> float:
    """modified_time(); a filesystem that keeps none makes every lock look fresh (only a released lock is
    taken)."""
    stamp = modified_time(info)
    return _local_now() if stamp is None else stamp
