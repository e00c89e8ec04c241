"""Step locks: a lock whose holder died is broken at once, whatever the form of the holder's id."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

from prefect_aml.tasks.locks import LeasedFileLockManager


def test_a_dead_holders_lock_is_broken_at_once_with_a_uuid_holder(tmp_path):
    """Prefect's transactions name holders by UUID; the lock file records the holding process."""
    script = (f"import sys; sys.path[:0] = {sys.path!r}\n"
              "from prefect_aml.tasks.locks import LeasedFileLockManager\n"
              f"m = LeasedFileLockManager(__import__('pathlib').Path({str(tmp_path)!r}))\n"
              f"assert m.acquire_lock('k', {str(uuid.uuid4())!r})\n")
    subprocess.run([sys.executable, "-c", script], check=True)  # takes the lock, then exits (dies) holding it
    info = json.loads((tmp_path / "k.lock").read_text())
    assert info["pid"] and info["host"]
    manager = LeasedFileLockManager(tmp_path)
    assert not manager.is_locked("k")  # its holder is gone: not locked, no wait for the lease
    assert manager.acquire_lock("k", str(uuid.uuid4()), acquire_timeout=1)


def test_a_live_holders_lock_holds(tmp_path):
    holder = str(uuid.uuid4())
    first = LeasedFileLockManager(tmp_path)
    assert first.acquire_lock("k", holder)
    other = LeasedFileLockManager(tmp_path)
    assert other.is_locked("k")
    assert not other.acquire_lock("k", str(uuid.uuid4()), acquire_timeout=0.5)
    first.release_lock("k", holder)
    assert not other.is_locked("k")
