"""Locks for serializable step runs that survive their holder's death.

Prefect takes a step's lock without a time limit, so a runner killed mid-step (machine lost) would
leave its lock forever. Here each lock is a lease (`LEASE_S`) renewed by its holder while it lives;
a lost holder's lease runs out, and on the same machine a dead holder's lock is broken at once. Prefect
names holders by a UUID of its transaction, so the holding process's host and pid are written into the
lock file beside it: that is what tells a dead holder, whatever the form of its id.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prefect.locking.filesystem import FileSystemLockManager

LEASE_S = 60.0


def _holder_is_dead(info: dict) -> bool:
    """A lock held by a process on this host that is gone. The host and pid are the lock file's own fields
    (written by this module), else read from a holder of the form "host:pid:..."."""
    host, pid = info.get("host"), info.get("pid")
    if host is None:
        parts = str(info.get("holder") or "").split(":")
        if len(parts) < 2 or not parts[1].isdigit():
            return False
        host, pid = parts[0], parts[1]
    if host != socket.gethostname() or not str(pid).isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class _Leases:
    """Takes each lock as a lease and renews the ones this process holds, every third of `LEASE_S`."""

    def _init_leases(self) -> None:
        self._held: dict[str, str] = {}
        self._held_lock = threading.Lock()
        self._renewer: threading.Thread | None = None

    def _hold(self, key: str, holder: str) -> None:
        with self._held_lock:
            self._held[key] = holder
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name="aml-lock-leases")
                self._renewer.start()

    def _drop(self, key: str) -> None:
        with self._held_lock:
            self._held.pop(key, None)

    def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        acquired = super().acquire_lock(key, holder, acquire_timeout, hold_timeout or LEASE_S)
        if acquired:
            self._hold(key, holder)
        return acquired

    def release_lock(self, key, holder) -> None:
        self._drop(key)
        super().release_lock(key, holder)

    def _renew_loop(self) -> None:
        while True:
            threading.Event().wait(LEASE_S / 3)
            with self._held_lock:
                held = dict(self._held)
            for key, holder in held.items():
                try:
                    self._renew(key, holder)
                except Exception:  # a failed renewal only shortens the lease
                    pass

    def _renew(self, key: str, holder: str) -> None:  # pragma: no cover - per backend
        raise NotImplementedError


class LeasedFileLockManager(_Leases, FileSystemLockManager):
    """Prefect's file locks (one machine, or a shared file system), as leases."""

    def __init__(self, lock_files_directory: Path):
        super().__init__(lock_files_directory)
        self._init_leases()

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        try:
            info = self._get_lock_info(key, use_cache=use_cache)
        except ValueError:  # being written by its new holder right now
            return True
        if info is not None and _holder_is_dead(info):
            Path(info["path"]).unlink(missing_ok=True)
            self._locks.pop(key, None)
            return False
        return super().is_locked(key, use_cache=use_cache)

    def acquire_lock(self, key, holder, acquire_timeout=None, hold_timeout=None) -> bool:
        acquired = super().acquire_lock(key, holder, acquire_timeout, hold_timeout)
        if acquired:
            self._renew(key, holder)  # this process's host and pid beside Prefect's holder id
        return acquired

    def _renew(self, key: str, holder: str) -> None:
        path = Path(self._lock_path_for_key(key))
        info = json.loads(path.read_bytes())
        if info.get("holder") != holder:
            return
        expiration = datetime.now(UTC) + timedelta(seconds=LEASE_S)
        tmp = path.with_suffix(f".{os.getpid()}.renew")
        tmp.write_text(json.dumps({"holder": holder, "expiration": str(expiration), "host": socket.gethostname(),
                                   "pid": os.getpid()}))
        os.replace(tmp, path)
        self._locks.pop(key, None)


def redis_lock_manager(url: str):
    """Prefect's Redis locks (any number of machines), as leases."""
    from prefect_redis.locking import RedisLockManager  # redis only where a workspace names a Redis server

    class LeasedRedisLockManager(_Leases, RedisLockManager):
        def __init__(self, connection_url: str):
            super().__init__(connection_url=connection_url)
            self._init_leases()

        def _renew(self, key: str, holder: str) -> None:
            lock = self._locks.get(self._lock_name_for_key(key))
            if lock is not None:
                lock.reacquire()

    return LeasedRedisLockManager(url)
