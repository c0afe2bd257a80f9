"""The two halves of a node pair's PPC traffic: a call channel and a serve channel.

Design
------
Every ordered pair of nodes (A, B) has its own connection, dialed by A: A
sends requests on it and B replies on it.  Splitting the directions is what
lets both ends run a call without a thread hop, which is most of a remote
PPC's cost in CPython (each hop is a futex wake plus a GIL hand-over).

Call channel (A's end): leader/follower among the callers.  A caller
registers its ``PendingCall``, sends, then tries the channel's read token
without blocking.  If it gets it, it is the leader: it reads replies itself
until its own has come, completing any other caller's call it meets on the
way, so a lone caller reads its own reply with no other thread involved.
Callers that find the token taken wait on their own lock.  A leader leaving
while calls are still pending hands reading to a pool task (``_drain``),
which keeps reading while calls are pending and re-checks after releasing
the token, so no pending call is ever left without a reader.

Serve channel (B's end): the worker holding the channel's reading role
reads a request and runs it itself, inline, then reads the next one: no
thread hop.  But a handler that blocks must not stop the channel (a handler
on B waiting on C, whose handler calls B again, would deadlock), so the
reading role is handed to another pool worker ("promotion") as soon as the
handler may block:

* at once when the handler makes a remote PPC (``CallChannel.wait``) or
  calls ``before_blocking()`` (the hook for any other wait);
* otherwise by the node's monitor thread, which promotes any channel whose
  inline request has been running for more than one ``MONITOR_TICK``
  (a lock wait, a long computation): a bounded delay, never a deadlock.

The executing worker and a promoter agree through one atomic ``dict.pop``
(see ``ServeChannel``): whoever takes the entry first decides; a worker
that finds it gone after its request lost the role and returns to the pool.

Call chains: a request carries the oids of the clustered objects its call
chain is inside (``chain_stack``, kept by the object tables on each call),
and the serving thread takes that stack for the handler's run, so a chain
A -> B -> A across nodes is recognisable on every node it reaches (a hot
swap's mediator lets such a call pass instead of deadlocking the chain
against the swap's drain).  An empty stack is not sent.

Both ends fail the same way: a read error closes the connection and fails
every pending call at once with ``NodeLost`` (callers register, then check
``closed``; failing sets ``closed``, then drains ``pending``: under the GIL
no call can slip between).
"""

from __future__ import annotations

import logging
import threading
import time

from . import _spinwait
from ._transport import ERROR, HEADER_SIZE, REPLY, REQUEST, Connection, FrameReader
from ._wire import NodeLost, Payload, PPCTimeout, decode_error, pack_parts, unpack_parts

log = logging.getLogger("tornado_dsm.ppc")

F_PAYLOAD = 1          # REPLY flag: the result is a Payload (value in body, bytes after)

MONITOR_TICK = 0.005   # seconds between the monitor's checks of inline requests

_tls = threading.local()   # .serving: the channel this thread reads inline
_chain = threading.local()  # .stack: see chain_stack (a plain local: a subclass's attributes cost 2x)


def chain_stack() -> list:
    """This thread's call-chain stack: the oids of the clustered objects its call
    chain is inside, outermost first.  The object tables push and pop it around
    every call through a rep; a request carries it; a serving thread starts each
    handler with the caller's stack."""
    try:
        return _chain.stack
    except AttributeError:
        stack = _chain.stack = []
        return stack


def in_chain(oid: int, bound, args):
    """Run ``bound(*args)`` with ``oid`` on this thread's call-chain stack: while it
    runs, the chain is inside that object (the object tables call it once a call
    holds its rep; a hot swap's mediator lets the chain's calls pass)."""
    stack = chain_stack()
    stack.append(oid)
    try:
        return bound(*args)
    finally:
        stack.pop()


def before_blocking() -> None:
    """Hand this thread's reading role on if it is running a request inline.

    Remote calls do it themselves; call it before any other wait in a
    handler that may take long (it makes the monitor's delay unnecessary).
    """
    channel = getattr(_tls, "serving", None)
    if channel is not None:
        _tls.serving = None
        channel.promote()


class PendingCall:
    """A remote call in flight; ``result(timeout)`` waits for its outcome once."""

    __slots__ = ("channel", "rid", "oid", "method", "sent", "t0", "done", "wake",
                 "value", "error", "finished")

    def __init__(self, channel, rid: int, oid: int, method: str) -> None:
        self.channel, self.rid, self.oid, self.method = channel, rid, oid, method
        self.wake = None   # made only if the caller has to sleep (see ``sleep``)
        self.done = self.finished = False
        self.value = self.error = None
        self.sent = 0
        self.t0 = 0.0

    @property
    def node(self) -> int:
        """The node the call went to."""
        return self.channel.peer

    def complete(self, value, error, nbytes: int) -> None:
        """Deliver the outcome; called once, by whoever popped the call from ``pending``."""
        self.value, self.error = value, error
        self.sent += nbytes
        self.done = True
        wake = self.wake   # read after setting done: see ``sleep``
        if wake is not None:
            wake.release()

    def sleep(self, timeout: float | None) -> bool:
        """Block the calling thread (the caller) until done; False after ``timeout``.

        The lock is made here, then ``done`` is checked: ``complete`` sets
        ``done`` before reading ``wake``, so under the GIL either we see done
        or it sees the lock and releases it, never neither.
        """
        if self.wake is None:
            wake = threading.Lock()
            wake.acquire()
            self.wake = wake
        if self.done:
            return True
        return self.wake.acquire(timeout=-1 if timeout is None else max(0.0, timeout))

    def result(self, timeout: float | None = None):
        """The call's result; raises its exception, PPCTimeout or NodeLost."""
        if not self.finished:
            self.channel.wait(self, timeout)
            self.finished = True
            self.channel.record(self.oid, self.method, True, self.sent,
                                time.perf_counter() - self.t0)
        if self.error is not None:
            raise self.error
        return self.value


class CallChannel:
    """This node's end of the connection it dialed to ``peer`` (see module docstring)."""

    def __init__(self, core, conn: Connection, reader: FrameReader, peer: int) -> None:
        self.core, self.conn, self.reader, self.peer = core, conn, reader, peer
        conn.peer = peer
        self.pending: dict[int, PendingCall] = {}
        self.record = core.counters.record
        self.token = threading.Lock()
        self.closed = False
        self.reason = ""

    def start(self, rid: int, oid: int, method: str, args, payload) -> PendingCall:
        """Register and send one request; the caller then waits with ``result``."""
        stack = chain_stack()
        body, parts = pack_parts([method, args, stack] if stack else [method, args])
        if payload is not None:
            parts.append(payload)
        call = PendingCall(self, rid, oid, method)
        self.pending[rid] = call
        if self.closed:
            self.pending.pop(rid, None)
            raise NodeLost(f"node {self.peer} is lost: {self.reason}")
        call.t0 = time.perf_counter()
        try:
            call.sent = self.conn.send(REQUEST, rid, oid, body, parts)
        except OSError as e:
            self.pending.pop(rid, None)
            self.fail(f"send failed: {e}")
            raise NodeLost(f"node {self.peer} is lost: send failed: {e}") from None
        except BaseException:
            self.pending.pop(rid, None)
            raise
        return call

    def wait(self, call: PendingCall, timeout: float | None) -> None:
        """Wait for ``call`` as leader (reading) or follower; PPCTimeout sets its error."""
        if call.done:
            return
        if getattr(_tls, "serving", None) is not None:
            before_blocking()   # a handler calling out must not hold its channel
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.token.acquire(False):
            try:
                self._read_until(call, deadline)
            finally:
                self.token.release()
                self._handoff()
            if call.done:
                return
        elif call.sleep(None if deadline is None else deadline - time.monotonic()):
            return
        self._give_up(call, timeout)

    def _give_up(self, call: PendingCall, timeout) -> None:
        if self.pending.pop(call.rid, None) is not None:
            call.error = PPCTimeout(f"PPC {call.method!r} on oid {call.oid:#x} at node {self.peer} "
                                    f"did not answer within {timeout} s")
        else:   # whoever popped it is delivering the outcome right now
            call.sleep(None)

    def _read_until(self, call: PendingCall, deadline: float | None) -> None:
        reader = self.reader
        while not call.done:
            if not reader.has_frame() and not _frame_soon(reader, deadline):
                return
            if not self._read_one():
                return

    def _read_one(self) -> bool:
        """Read and deliver one reply; False once the channel has failed."""
        try:
            kind, flags, rid, oid, body, payload = self.reader.next()
            value, data = unpack_parts(body, payload)   # decode fully before popping the call
            if kind == REPLY:
                result = Payload(data, value) if flags & F_PAYLOAD else value
                error = None
            elif kind == ERROR and isinstance(value, dict):
                result, error = None, decode_error(value, self.peer)
            else:
                raise ValueError(f"frame kind {kind} on a call channel")
        except (ConnectionError, OSError) as e:
            self.fail(str(e) or type(e).__name__)
            return False
        except Exception as e:
            log.warning("node %s: bad reply from node %s: %s: %s", self.core.node_id,
                        self.peer, type(e).__name__, e)
            self.fail(f"protocol error: {type(e).__name__}: {e}")
            return False
        call = self.pending.pop(rid, None)
        if call is None:
            log.debug("node %s: late reply %d from node %s dropped", self.core.node_id, rid, self.peer)
        else:
            call.complete(result, error,
                          HEADER_SIZE + len(body) + (len(payload) if payload is not None else 0))
        return True

    def _handoff(self) -> None:
        if self.pending and not self.closed:
            self.core.pool.submit(self._drain, ())

    def _drain(self) -> None:
        """Read replies while calls are pending and nobody else leads."""
        while self.pending and not self.closed:
            if not self.token.acquire(False):
                return   # a leader reads; it hands off again when it leaves
            try:
                while self.pending and self._read_one():
                    pass
            finally:
                self.token.release()

    def fail(self, reason: str) -> None:
        """The connection broke: the peer is lost.  The core announces the loss,
        then aborts this channel (its pending calls fail with NodeLost)."""
        self.abort(reason, pending=False)
        self.core._peer_lost(self.peer, self.reason)
        self.abort(reason)   # a channel the core no longer knew (replaced) still fails its calls

    def abort(self, reason: str, pending: bool = True) -> None:
        """Close the channel and, with ``pending``, fail every pending call with
        NodeLost (idempotent; no call back to the core)."""
        if not self.closed:
            self.reason = reason
            self.closed = True
            self.conn.close()
        while pending:
            try:
                _rid, call = self.pending.popitem()
            except KeyError:
                break
            call.complete(None, NodeLost(f"node {self.peer} is lost: {self.reason}"), 0)


def _frame_soon(reader, deadline: float | None) -> bool:
    """Whether to read now: poll up to the call bound first (a reply is due
    soon, see _spinwait), then wait up to ``deadline``; False once it passed."""
    spin = _spinwait.CALL
    if spin and reader.spin(spin if deadline is None else max(0.0, min(spin, deadline - time.monotonic()))):
        return True
    if deadline is None:
        return True   # ``next`` blocks until a frame comes
    left = deadline - time.monotonic()
    return left > 0 and reader.wait_readable(left)


class ServeChannel:
    """This node's end of the connection ``peer`` dialed: requests in, replies out."""

    def __init__(self, core, conn: Connection, reader: FrameReader, peer: int) -> None:
        self.core, self.conn, self.reader, self.peer = core, conn, reader, peer
        conn.peer = peer
        self.closed = False
        self.seq = 0          # requests read so far (only the reading worker writes it)
        self.replied = -1e9   # perf_counter when the last request's handler returned
        self.burst = False    # whether requests come in a burst now (see _next_request)
        # {0: seq} while the reading worker runs request seq inline.  Whoever pops
        # the entry first decides (dict.pop is atomic under the GIL): the worker
        # keeps reading, or a promoter hands reading to a new worker.
        self._role: dict[int, int] = {}

    @property
    def executing(self) -> int:
        """seq of the request the reading worker runs inline, 0 if none."""
        return self._role.get(0, 0)

    def start(self) -> None:
        """Start reading requests (on a pool worker)."""
        self.core.pool.submit(self._run, ())

    def _run(self) -> None:
        """Hold the reading role: read a request, run it inline, repeat while we keep the role."""
        serve, role = self.core.serve, self._role
        while True:
            request = self._next_request()
            if request is None:
                return
            self.seq += 1
            role[0] = self.seq
            _tls.serving, _chain.stack = self, request[-1]  # the handler runs in the caller's chain
            try:
                serve(self.conn, *request[:-1])
            finally:
                _tls.serving, _chain.stack = None, []
                self.replied = time.perf_counter()
            if role.pop(0, None) is None:
                return   # promoted away while running: another worker reads now

    def _next_request(self):
        """``_read_request``, polling first while this channel's requests come in a
        burst: the last one came within twice the serve bound of our reply before
        it (a wake-up from ``recv`` adds about one bound to the gap it measures).
        So a fault stream's next request is polled for, while a lone request (an
        invalidation, a barrier's wait) never leaves a CPU polling after it."""
        bound = _spinwait.SERVE
        if bound and self.burst:
            self.reader.spin(bound)
        request = self._read_request()
        self.burst = time.perf_counter() - self.replied < 2 * bound
        return request

    def promote(self, seq: int | None = None) -> None:
        """Give the reading role to a new worker if the reader is running
        request ``seq`` (any request if None) inline."""
        if seq is not None and self._role.get(0) != seq:
            return
        if self._role.pop(0, None) is None:
            return   # the worker finished first and keeps reading
        # (if the worker moved on to a newer request in between, that one is
        # promoted instead: one extra worker, never a lost reader)
        self.core.pool.submit(self._run, ())

    def _read_request(self):
        """(rid, oid, method, args, payload, chain stack) of the next request; None once failed."""
        try:
            kind, _flags, rid, oid, body, payload = self.reader.next()
            if kind != REQUEST:
                raise ValueError(f"frame kind {kind} on a serve channel")
            (method, args, *chain), data = unpack_parts(body, payload)
            stack = chain[0] if chain else []
            if len(chain) > 1 or not isinstance(stack, list):
                raise ValueError(f"request body of {2 + len(chain)} parts (accepted: method, args "
                                 f"and an optional call-chain list)")
            return rid, oid, str(method), args, data, stack
        except (ConnectionError, OSError) as e:
            self.fail(str(e) or type(e).__name__)
        except Exception as e:
            log.warning("node %s: dropping connection from node %s: bad request: %s: %s",
                        self.core.node_id, self.peer, type(e).__name__, e)
            self.fail(f"protocol error: {type(e).__name__}: {e}")
        return None

    def fail(self, reason: str) -> None:
        """The connection broke: the peer counts as lost (the core aborts this channel)."""
        self.abort(reason)
        self.core._peer_lost(self.peer, reason)

    def abort(self, reason: str) -> None:
        """Close the connection (idempotent; no call back to the core)."""
        if not self.closed:
            self.closed = True
            self.conn.close()


def monitor(core) -> None:
    """Body of a node's monitor thread: promote channels stuck on one inline request."""
    seen: dict = {}
    while not core.closed_down:
        time.sleep(MONITOR_TICK)   # a periodic check, not synchronization
        for channel in list(core._serves.values()):
            busy = channel.executing
            if busy and seen.get(channel) == busy:
                channel.promote(busy)
            seen[channel] = busy
