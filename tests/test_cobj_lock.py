"""ObjectLock and the lock-debug mode's bookkeeping (the cluster-level check is in test_cobj)."""

from __future__ import annotations

import os
import threading

import pytest

from tornado_dsm.kernel import DSMInternalError, ObjectLock
from tornado_dsm.kernel.cobj import _lock as lockdebug


class TestDebugModeFromEnvironment:
    def test_suite_runs_in_debug_mode(self):
        """conftest turns the lock-debug mode on for the whole suite (and for spawned nodes)."""
        assert os.environ[lockdebug.ENV_VAR] == "1" and lockdebug.enabled

    def test_refresh_reads_the_variable(self, monkeypatch):
        """refresh() turns debugging on exactly when TORNADO_DSM_DEBUG_LOCKS is 1."""
        try:
            monkeypatch.setenv(lockdebug.ENV_VAR, "0")
            assert lockdebug.refresh() is False
            monkeypatch.setenv(lockdebug.ENV_VAR, "1")
            assert lockdebug.refresh() is True
        finally:
            lockdebug.set_debug(True)


class TestHeldStack:
    def test_nested_and_out_of_order(self):
        """Held locks are tracked per thread, nested or released out of order."""
        a, b = ObjectLock("a"), ObjectLock("b")
        a.acquire(); b.acquire()
        assert lockdebug.held_locks() == ("a", "b")
        a.release()
        assert lockdebug.held_locks() == ("b",)
        b.release()
        assert lockdebug.held_locks() == ()

    def test_other_threads_do_not_see_my_locks(self):
        """A lock held by one thread is not in another thread's stack."""
        seen = []
        with ObjectLock("mine"):
            t = threading.Thread(target=lambda: seen.append(lockdebug.held_locks()))
            t.start(); t.join()
        assert seen == [()]

    def test_check_call_names_both(self):
        """check_call under a held lock raises DSMInternalError naming the lock's owner and the target."""
        with ObjectLock("holder obj"):
            with pytest.raises(DSMInternalError, match="target.m.*holder obj"):
                lockdebug.check_call("target.m")
        lockdebug.check_call("target.m")  # no lock: fine

    def test_reentrant(self):
        """A reentrant ObjectLock can be taken twice by its thread and is tracked twice."""
        lock = ObjectLock("r", reentrant=True)
        with lock:
            with lock:
                assert lockdebug.held_locks() == ("r", "r")
        assert lockdebug.held_locks() == ()
