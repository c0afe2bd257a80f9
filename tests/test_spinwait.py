"""Spin-then-block readers (kernel/net/_spinwait.py): the setting, the bounded
poll, and nodes that poll after traffic but sleep when idle."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from tornado_dsm.kernel.machine import spin_readable
from tornado_dsm.kernel.net import _spinwait
from tornado_dsm.kernel.net._channel import ServeChannel
from tornado_dsm.kernel.net._transport import HEADER, REPLY, REQUEST, FrameReader
from tornado_dsm.kernel.net._wire import pack_parts

from helpers import new_cluster


class TestParse:
    def test_default_is_call_200_serve_50_us(self):
        """The default setting polls 200 us for a reply and 50 us for a burst's next request."""
        assert _spinwait.parse(_spinwait.DEFAULT) == pytest.approx((200e-6, 50e-6))

    def test_one_number_sets_both(self):
        """A single number is both bounds; 0 turns polling off."""
        assert _spinwait.parse("80") == pytest.approx((80e-6, 80e-6))
        assert _spinwait.parse("0") == (0.0, 0.0)

    @pytest.mark.parametrize("text", ["", "abc", "1,2,3", "-5", "10,-1", "2e6", "nan"])
    def test_bad_text_is_refused_naming_the_variable(self, text):
        """Anything but CALL[,SERVE] microseconds in range is a ValueError naming the variable and the form."""
        with pytest.raises(ValueError, match=r"TORNADO_DSM_SPIN_US=.*CALL\[,SERVE\] microseconds"):
            _spinwait.parse(text)


class TestSpinReadable:
    def test_bytes_waiting_is_true_at_once(self):
        """A socket with bytes to read is reported readable without spending the bound."""
        a, b = socket.socketpair()
        with a, b:
            b.send(b"x")
            t0 = time.perf_counter()
            assert spin_readable(a.fileno(), 1.0)
            assert time.perf_counter() - t0 < 0.5

    def test_nothing_comes_is_false_after_the_bound(self):
        """With nothing sent it polls for the bound, then gives up (it never blocks longer)."""
        a, b = socket.socketpair()
        with a, b:
            t0 = time.perf_counter()
            assert not spin_readable(a.fileno(), 0.02)
            assert 0.02 <= time.perf_counter() - t0 < 0.5

    def test_bytes_sent_while_polling_end_the_poll(self):
        """A byte sent by another thread mid-poll is seen (the GIL is released while polling)."""
        a, b = socket.socketpair()
        with a, b:
            sender = threading.Timer(0.02, b.send, args=(b"x",))
            sender.start()
            t0 = time.perf_counter()
            assert spin_readable(a.fileno(), 2.0)
            assert time.perf_counter() - t0 < 1.0
            sender.join()

    def test_hang_up_counts_as_readable(self):
        """A closed peer ends the poll at once, so the blocking read meets the EOF."""
        a, b = socket.socketpair()
        with a:
            b.close()
            assert spin_readable(a.fileno(), 1.0)


class TestFrameReaderSpin:
    def test_buffered_frame_needs_no_poll(self):
        """A whole frame already in the reader's buffer is ready even if the socket is empty."""
        a, b = socket.socketpair()
        with a, b:
            b.sendall(HEADER.pack(REPLY, 0, 0, 1, 2, 1, 0) + b"\xc0" + HEADER.pack(REPLY, 0, 0, 2, 2, 1, 0) + b"\xc0")
            reader = FrameReader(a)
            reader.next()   # reads both frames into the buffer, returns the first
            assert reader.has_frame() and reader.spin(0.0)


class _CountingReader(FrameReader):
    """A FrameReader that counts its polls."""

    spins = 0

    def spin(self, seconds: float) -> bool:
        self.spins += 1
        return super().spin(seconds)


class TestServeBurst:
    def _channel(self):
        a, b = socket.socketpair()
        channel = ServeChannel.__new__(ServeChannel)   # the reading half only: no core, no pool
        channel.reader, channel.replied, channel.burst = _CountingReader(a), -1e9, False
        channel.closed, channel.core, channel.peer = False, None, 1
        return channel, a, b

    def _request(self, b):
        body, _ = pack_parts(["ping", None])
        b.sendall(HEADER.pack(REQUEST, 0, 0, 1, 0, len(body), 0) + body)

    def test_a_request_soon_after_a_reply_is_polled_for_next_time(self, monkeypatch):
        """A request arriving within twice the serve bound of the last reply makes the reader poll for the next one."""
        monkeypatch.setattr(_spinwait, "SERVE", 0.05)
        channel, a, b = self._channel()
        with a, b:
            channel.replied = time.perf_counter()
            self._request(b)
            assert channel._next_request()[2] == "ping" and channel.burst
            self._request(b)
            channel._next_request()
            assert channel.reader.spins == 1

    def test_a_lone_request_is_not_followed_by_a_poll(self, monkeypatch):
        """A request long after the last reply (an invalidation, say) leaves the next read unpolled."""
        monkeypatch.setattr(_spinwait, "SERVE", 0.005)
        channel, a, b = self._channel()
        with a, b:
            channel.replied = time.perf_counter() - 1.0
            self._request(b)
            channel._next_request()
            assert not channel.burst
            self._request(b)
            channel._next_request()
            assert channel.reader.spins == 0


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.multinode
@pytest.mark.timeout(120)
class TestNodes:
    def test_idle_nodes_sleep_after_a_burst(self):
        """After thousands of PPCs the polling stops: idle nodes use under 0.15 s of CPU in 1 s."""
        with new_cluster(3) as c:
            rt = c.node_set.runtime
            for _ in range(1000):
                rt.call(1, 0, "ping", None)
                rt.call(2, 0, "ping", None)
            pids = [os.getpid(), *c.node_set.pids.values()]
            before = [_cpu_seconds(p) for p in pids]
            time.sleep(1.0)
            used = [_cpu_seconds(p) - b for p, b in zip(pids, before)]
        assert max(used) < 0.15, used

    def test_polling_off_still_serves(self, monkeypatch):
        """TORNADO_DSM_SPIN_US=0 (readers sleep at once) changes no result: calls and faults work."""
        monkeypatch.setenv(_spinwait.ENV_VAR, "0")
        monkeypatch.setattr(_spinwait, "CALL", 0.0)
        monkeypatch.setattr(_spinwait, "SERVE", 0.0)
        with new_cluster(2) as c:
            assert c.node_set.run_on(1, _spin_setting) == (0.0, 0.0)
            a = c.zeros(4096)
            c.run(_fill, a, on=1)
            assert float(a.sum()) == 4096 * 7.0


def _spin_setting():
    return _spinwait.CALL, _spinwait.SERVE


def _fill(a):
    a[:] = 7.0
