"""``tornado-dsm bench coherence``: faults through the full object path, local and remote.

One run, with the floors measured beside the paths:

* floor (C): a fault the trap resolves in C (mprotect), on a scratch window;
  the zero-fill floor is the same fault on a page that is a hole, so the
  kernel allocates and zeroes its frame as in a DSM zero fill;
* floor (network): a raw Python socket round trip between node 0 and node 1,
  each end blocked in ``recv`` or each end polling first as the channels do,
  whichever is lower (transport "mpi": a raw mpi4py ping-pong of 16 bytes,
  see ``bench ppc``),
  and beside it (for context, not a floor) a remote PPC to node 1's node
  service, which is what a remote fault's message costs before any VM work;
* context: the kernel's share of an IVY read fault, each part timed alone:
  the round trip, the owner's downgrade ``mprotect`` (write -> read, with its
  TLB shootdown), the ``pwrite`` that installs the page into a hole of the
  requester's memfd, and the C-resolved fault on that fresh frame: what a
  remote read asks of the kernel here, whatever language serves it;
* local zero-fill fault and local upgrade (read copy -> write) through
  Process -> Region -> FCM -> manager -> COR -> HAT, all on node 0;
* in-core fault: the page is cached in node 0's FCM rep, only the HAT
  mapping was dropped (Tornado's in-core page-fault test);
* remote read fault: the page is owned by node 1;
* remote write fault invalidating k = 1..N-2 readers (owner node 1, readers
  nodes 2..k+1), invalidations sent in parallel;
* migrate ping-pong: under ``migrate`` the page moves between nodes 0 and 1.

Every fault is triggered on node 0 by a C loop (GIL released) that times each
touch, so only the fault is measured, never the set-up on other nodes.
"""

from __future__ import annotations

import argparse

import attrs
import numpy as np

from tornado_dsm._bench import BenchResult, summarize
from tornado_dsm._bench_ppc import _MPIRawPair, _RawPair, _time_each, over_transports, transports
from tornado_dsm.kernel import launched_by_mpi
from tornado_dsm.kernel import DEFAULT_BASE, MODE_FLOOR, PAGE, PROT_READ, NodeMemory, trap
from tornado_dsm.objects import MANAGERS

HELP = "fault latency through the VM objects: local, in-core, remote, invalidations, migration"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``bench coherence``."""
    parser.add_argument("--pages", type=int, default=400, help="faults per path per round (default 400)")
    parser.add_argument("--rounds", type=int, default=3, help="measured rounds (default 3)")
    parser.add_argument("--nodes", type=int, default=5, help="nodes (>= 3; readers up to nodes-2; default 5)")
    parser.add_argument("--manager", choices=MANAGERS, default="dynamic")
    parser.add_argument("--transport", type=transports, default=None,
                        help="transport(s) between the nodes, comma-separated, measured one after "
                             "the other: unix, tcp; under mpiexec (-n >= --nodes) tcp, mpi "
                             "(default unix; under mpiexec tcp,mpi)")


def measure(args: argparse.Namespace) -> list[BenchResult]:
    """Run every path over each transport; floors first, each path with its ratio to its floor."""
    if args.pages < 1 or args.rounds < 1 or args.nodes < 3:
        raise SystemExit(f"--pages and --rounds must be >= 1 and --nodes >= 3 "
                         f"(got {args.pages}, {args.rounds}, {args.nodes})")
    return over_transports(args, _measure_one)


def _cluster_options(transport: str) -> dict:
    """Cluster arguments for ``transport``: under mpiexec the nodes are the job's ranks."""
    return {"transport": transport, **({"launcher": "mpi"} if launched_by_mpi() else {})}


def _measure_one(args: argparse.Namespace, transport: str) -> list[BenchResult]:
    """The rows of one transport."""
    s = _collect_ivy(args, transport)
    s.update(_collect_migrate(args, transport))
    out = _floors(s)
    c_floor, zero_floor, net, remote_floor, kernel = out
    zf = summarize("local zero-fill fault", s["local zero-fill fault"], zero_floor)
    out.append(attrs.evolve(zf, note=f"target (full path): <= 3x C zero-fill floor "
                                     f"({zf.median_us / c_floor.median_us:.2f}x the C floor)"))
    for name in ("local upgrade", "in-core fault"):
        out.append(summarize(name, s[name], c_floor, note="target (full path): <= 3x C floor"))
    ppc = summarize("remote PPC (node service ping)", s["ppc"], net)
    out.append(attrs.evolve(ppc, note="context: the PPC layer's own cost over the raw round trip"))
    remote = summarize("remote read fault", s["remote read fault"], remote_floor)
    beyond = remote.median_us / (ppc.median_us + c_floor.median_us)
    out.append(attrs.evolve(remote, note=f"target: <= 1.5x (round trip + C fault); "
                                         f"{beyond:.2f}x (remote PPC + C fault); "
                                         f"{remote.median_us / kernel.median_us:.2f}x kernel work"))
    write_kernel = _write_kernel_work(net, s)
    out.append(write_kernel)
    one = None
    for k in range(1, args.nodes - 1):
        r = summarize(f"remote write, invalidating {k}", s[f"invalidate {k}"], remote_floor)
        one = one or r
        note = f"{r.median_us / one.median_us:.2f}x invalidating 1" + ("; target <= 1.3x" if k == 3 else "")
        if k == 1:
            note += f"; {r.median_us / write_kernel.median_us:.2f}x its kernel work (target <= 2x)"
        out.append(BenchResult(r.name, r.median_us, r.p90_us, r.ratio_to_floor, r.samples, note))
    out.append(summarize("migrate ping-pong fault", s["migrate"], remote_floor))
    if transport == "mpi":   # its network floor is an MPI ping-pong, not a socket
        out = [attrs.evolve(r, name=r.name.replace("raw socket round trip", "raw MPI ping-pong, 16 B"))
               for r in out]
    return out


def _touch(array: np.ndarray, write: int) -> np.ndarray:
    """Touch one byte per page of ``array`` from C; per-touch latencies in ns."""
    ns = np.zeros(array.nbytes // PAGE, dtype=np.uint64)
    trap.touch(array.__array_interface__["data"][0], ns.size, PAGE, write, ns)
    return ns


def _floor(pages: int) -> tuple[np.ndarray, np.ndarray]:
    """C-resolved faults: (on allocated frames, on holes: read touches of fresh pages)."""
    with NodeMemory(base=DEFAULT_BASE + (64 << 30), size=pages * PAGE, mode=MODE_FLOOR) as mem:
        zero = np.zeros(pages, dtype=np.uint64)
        trap.touch(mem.base, pages, PAGE, 0, zero)  # holes: the kernel allocates the frames
        mem.hat.unmap(0, pages)
        ns = np.zeros(pages, dtype=np.uint64)
        trap.touch(mem.base, pages, PAGE, 1, ns)
        return ns, zero


def _floors(s: dict) -> list[BenchResult]:
    """[C fault, C zero-fill fault, round trip, round trip + C fault, kernel work]."""
    c_floor = summarize("floor: C-resolved fault", s["floor"])
    zero_floor = summarize("floor: C-resolved zero-fill fault", s["zero floor"])
    net = _round_trip(s)
    remote_floor = BenchResult("floor: round trip + C fault", net.median_us + c_floor.median_us,
                               net.p90_us + c_floor.p90_us, None, net.samples)
    kernel = _sum_of("floor: kernel work of a remote read", [net] + [
        summarize(name, s[name]) for name in ("owner's downgrade mprotect", "pwrite install",
                                              "C fault on the new frame")])
    return [c_floor, zero_floor, net, remote_floor, kernel]


def _round_trip(s: dict) -> BenchResult:
    """The network floor: the raw round trip with each end blocked in recv, or the
    one with each end polling first (as the channels do) where that is lower."""
    blocked = summarize("floor: raw socket round trip", s["raw"])
    if "raw polled" not in s:
        return blocked
    polled = summarize("floor: raw socket round trip", s["raw polled"])
    best, other = (polled, blocked) if polled.median_us < blocked.median_us else (blocked, polled)
    how = "both ends polling" if best is polled else "both ends blocked in recv"
    note = (f"{how}; {other.median_us:.1f} us "
            f"{'blocked in recv' if best is polled else 'polling'}")
    return attrs.evolve(best, note=note)


def _write_kernel_work(net: BenchResult, s: dict) -> BenchResult:
    """The kernel's share of a remote write fault that invalidates one reader, from
    parts timed alone: the round trip to the owner, the reader's invalidation
    round trip, the owner's and the reader's revoking mprotect (each timed as
    the owner's downgrade is: one mprotect with its TLB shootdown), the pwrite
    that installs the page into a hole and the C fault on that new frame."""
    mprotect = summarize("mprotect", s["owner's downgrade mprotect"])
    parts = [attrs.evolve(net, name="round trip to the owner"),
             attrs.evolve(net, name="reader's invalidation round trip"),
             attrs.evolve(mprotect, name="owner's revoke mprotect"),
             attrs.evolve(mprotect, name="reader's revoke mprotect"),
             summarize("pwrite install", s["pwrite install"]),
             summarize("C fault on the new frame", s["C fault on the new frame"])]
    return _sum_of("floor: kernel work of a remote write invalidating 1", parts)


def _sum_of(name: str, parts: list[BenchResult]) -> BenchResult:
    """A floor made of parts timed separately: medians and p90s added; the
    note names each part's median."""
    note = "context: " + " + ".join(f"{p.name.removeprefix('floor: ')} {p.median_us:.1f}" for p in parts)
    return BenchResult(name, sum(p.median_us for p in parts), sum(p.p90_us for p in parts),
                       None, min(p.samples for p in parts), note)


def _kernel_work(pages: int) -> dict:
    """The kernel operations of an IVY read fault besides the round trip, each
    timed alone on a scratch window (see the module docstring)."""
    data = b"\x5a" * PAGE
    with NodeMemory(base=DEFAULT_BASE + (64 << 30), size=pages * PAGE, mode=MODE_FLOOR) as mem:
        it = iter(range(pages))  # the requester: the grant's bytes into a hole, as an install does
        install = _time_each(lambda: mem.write_frame(next(it), data), pages)
        fault = np.zeros(pages, dtype=np.uint64)
        trap.touch(mem.base, pages, PAGE, 1, fault)  # ...then its access maps the new frame
        it = iter(range(pages))  # the owner: revoke write on a page it wrote
        downgrade = _time_each(lambda: mem.hat.protect(next(it), 1, PROT_READ), pages)
    return {"pwrite install": install, "C fault on the new frame": fault,
            "owner's downgrade mprotect": downgrade}


def _collect_ivy(args, transport: str) -> dict:
    import tornado_dsm as td
    from tornado_dsm import _benchprogs as progs

    samples: dict = {}
    add = lambda k, v: samples.setdefault(k, []).append(v)  # noqa: E731
    with td.Cluster(nodes=args.nodes, manager=args.manager, size=1 << 30, **_cluster_options(transport)) as c:
        raw = _MPIRawPair(c.node_set) if transport == "mpi" else _RawPair(c.node_set, transport)
        rt = c.node_set.runtime
        ping = lambda: rt.call(1, 0, "ping", None)  # noqa: E731
        try:
            for r in range(args.rounds + 1):  # round 0 warms up
                keep = r > 0
                if keep:
                    floor, zero = _floor(args.pages)
                    add("floor", floor)
                    add("zero floor", zero)
                    for name, ns in _kernel_work(args.pages).items():
                        add(name, ns)
                if keep:
                    for name, ns in raw.time(args.pages).items():
                        add(name, ns)
                add("ppc", _time_each(ping, args.pages)) if keep else None
                fresh = c.zeros((args.pages * PAGE,), np.uint8)
                zero_fill = _touch(fresh, 0)
                upgrade = _touch(fresh, 1)
                c.drop_mappings(fresh, nodes=0)
                incore = _touch(fresh, 1)
                c.free(fresh)
                if keep:
                    add("local zero-fill fault", zero_fill)
                    add("local upgrade", upgrade)
                    add("in-core fault", incore)
                a = c.zeros((args.pages * PAGE,), np.uint8)
                c.run(progs.touch_pages, a, 1, on=1, threads=1)
                remote = _touch(a, 0)
                if keep:
                    add("remote read fault", remote)
                for k in range(1, args.nodes - 1):
                    c.run(progs.touch_pages, a, 1, on=1, threads=1)
                    c.run(progs.touch_pages, a, 0, on=list(range(2, 2 + k)), threads=1)
                    ns = _touch(a, 1)
                    if keep:
                        add(f"invalidate {k}", ns)
                c.free(a)
        finally:
            raw.close()
    return {k: np.concatenate(v) for k, v in samples.items()}


def _collect_migrate(args, transport: str) -> dict:
    import tornado_dsm as td
    from tornado_dsm import _benchprogs as progs

    runs = []
    with td.Cluster(nodes=2, protocol="migrate", manager="centralized", size=1 << 30,
                    base=DEFAULT_BASE + (8 << 30), **_cluster_options(transport)) as c:
        a = c.zeros((args.pages * PAGE,), np.uint8)
        for r in range(args.rounds + 1):
            c.run(progs.touch_pages, a, 1, on=1, threads=1)
            ns = _touch(a, 1)
            if r:
                runs.append(ns)
    return {"migrate": np.concatenate(runs)}
