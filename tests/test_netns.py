"""Two hosts for real: two network namespaces joined by a veth pair, node 0 in the "near"
one and nodes 1 and 2 in the "far" one, over TCP with the key (`tornado-dsm node --join`).

One cluster run (netnsprogs.py) serves the module: a litmus subset, a file-backed array
written on the far side and flushed, and a far node killed.  Needs root and iproute2
(`ip netns`); skipped, saying why, where the namespaces cannot be made."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tornado_dsm as td
from helpers import MPI_SKIP, mpiexec

pytestmark = pytest.mark.multinode

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
TAG = f"{os.getpid() % 100000}"
NEAR, FAR = f"tdsm-near-{TAG}", f"tdsm-far-{TAG}"
NEAR_IF, FAR_IF = f"tdsmn{TAG}", f"tdsmf{TAG}"
NEAR_IP, FAR_IP, PORT = "10.231.0.1", "10.231.0.2", 7000
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def make_namespaces() -> str | None:
    """Create both namespaces and the veth pair between them; the reason if that is impossible."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    try:
        ip("netns", "add", NEAR)
        ip("netns", "add", FAR)
        ip("link", "add", NEAR_IF, "type", "veth", "peer", "name", FAR_IF)
        for ns, dev, address in ((NEAR, NEAR_IF, NEAR_IP), (FAR, FAR_IF, FAR_IP)):
            ip("link", "set", dev, "netns", ns)
            ip("-n", ns, "addr", "add", f"{address}/24", "dev", dev)
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
    except subprocess.CalledProcessError as e:
        remove_namespaces()
        return f"cannot make network namespaces here: `{' '.join(e.cmd)}`: {e.stderr.strip()}"
    return None


def remove_namespaces() -> None:
    for ns in (NEAR, FAR):   # deleting a namespace destroys its end of the veth pair
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def in_namespace(ns: str, *command: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, *command], env=ENV, text=True,
                            start_new_session=True, **kwargs)


def node0_listens(within: float) -> bool:
    """Whether node 0 listens on NEAR_IP:PORT (read from the near namespace's /proc/net/tcp)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        table = subprocess.run(["ip", "netns", "exec", NEAR, "cat", "/proc/net/tcp"],
                               capture_output=True, text=True, timeout=30).stdout
        if any(f":{PORT:04X} " in line and line.split()[3] == "0A" for line in table.splitlines()[1:]):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture(scope="module")
def namespaces():
    """NEAR and FAR joined by a veth pair, for the module (removed after it)."""
    reason = make_namespaces()
    if reason:
        pytest.skip(reason)
    yield
    remove_namespaces()


@pytest.fixture(scope="module")
def run(namespaces, tmp_path_factory):
    """Node 0's program in NEAR and two joiners in FAR, once: {name: value} of its RESULT lines,
    plus "stderr", "status" and the joiners' exit statuses."""
    tmp = tmp_path_factory.mktemp("netns")
    key_file = tmp / "cluster.key"
    td.write_key_file(key_file)
    started: list[subprocess.Popen] = []
    try:
        node0 = in_namespace(NEAR, sys.executable, str(TESTS / "netnsprogs.py"), f"{NEAR_IP}:{PORT}",
                             str(key_file), str(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append(node0)
        assert node0_listens(60), "node 0 never listened in the near namespace"
        join = [str(BIN / "tornado-dsm"), "node", "--join", f"{NEAR_IP}:{PORT}", "--key-file", str(key_file)]
        started += [in_namespace(FAR, *join, stderr=subprocess.PIPE) for _ in range(2)]
        out, err = node0.communicate(timeout=150)
        results = {}
        for line in out.splitlines():
            if line.startswith("RESULT "):
                results.update(json.loads(line[len("RESULT "):]))
        results.update(stderr=err, status=node0.returncode,
                       joiners=[p.wait(20) for p in started[1:]])
        yield results
    finally:
        for p in started:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.communicate()


class TestTwoNamespaces:
    @pytest.mark.timeout(240)
    def test_nodes_run_in_the_far_namespace(self, run):
        """Nodes 1 and 2 joined from the far namespace: another network stack than node 0's."""
        assert run["status"] == 0, run["stderr"][-3000:]
        where = run["where"]
        assert [w["node"] for w in where] == [0, 1, 2]
        assert where[1]["netns"] == where[2]["netns"] != where[0]["netns"]

    @pytest.mark.timeout(240)
    def test_litmus_across_the_veth(self, run):
        """MP, SB, LB on nodes (0, 1) across the veth and (1, 2) on the far side: nothing SC forbids."""
        assert run.get("litmus"), run["stderr"][-3000:]
        assert len(run["litmus"]) == 12 and all(v == [] for v in run["litmus"].values()), run["litmus"]

    @pytest.mark.timeout(240)
    def test_file_written_on_the_far_side_is_flushed(self, run):
        """A file-backed array written on a far node and flushed from node 0 is in the file."""
        f = run["file"]
        assert f["written_far"] == [1234] and f["flushed_pages"] == 64
        assert f["on_disk_all_1234"] and f["on_disk_words"] == 64 * 512

    @pytest.mark.timeout(240)
    def test_a_far_node_killed_is_lost_at_once(self, run):
        """A far node SIGKILLed during a run: NodeLost on node 0 within 2 s; the others go on."""
        k = run["kill"]
        assert k["error"].startswith("node 2 is lost: peer closed the connection"), k
        assert k["seconds"] < 2.0 and k["survivors"] == [0, 1] and k["lost"] == [2]

    @pytest.mark.timeout(240)
    def test_the_joiners_end_with_the_cluster(self, run):
        """Closing the cluster ends the surviving joined node with status 0 (the killed one: SIGKILL)."""
        assert sorted(run["joiners"]) == [-signal.SIGKILL, 0]


@pytest.mark.skipif(MPI_SKIP is not None, reason=MPI_SKIP or "")
class TestMPIAcrossNamespaces:
    @pytest.mark.timeout(90)
    def test_from_mpi_with_ranks_in_both(self, namespaces):
        """mpiexec, rank 0 in NEAR, ranks 1-2 in FAR: each rank gets node 0's address across the veth."""
        python = [sys.executable, "mpiprogs.py", "basic"]
        job = mpiexec(1, "ip", "netns", "exec", NEAR, *python, ":",
                      "-n", "2", "ip", "netns", "exec", FAR, *python, timeout=80)
        assert job.returncode == 0 and job.ranks == [("exit", 0)] * 3, job
        nodes = job.result()["nodes"]
        assert [n["band"] for n in nodes] == [102400.0, 204800.0, 307200.0]
        assert nodes[1]["netns"] == nodes[2]["netns"] != nodes[0]["netns"]
