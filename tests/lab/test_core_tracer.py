"""The CO-RE object (bpf/build.sh, loaded by libbpf: what the node agent runs) on real lookups in a lab's network
namespaces, beside bcc's build of the same source (the local capture) on the same traffic: the same packets at the
same vantage points, decoded from records of the same format. `capture` is run as a user runs it, once per build."""

import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pandas as pd

from .conftest import dig
from tests.subprocesses import ctrl_c_reaches_it

# What a packet is, as each vantage saw it; everything but the clock.
SAME = ["vantage", "role", "ifname", "pkt_type", "kind", "proto", "family", "src_ip", "src_port", "dst_ip", "dst_port",
        "dns_id", "qr", "rcode", "qname", "qtype", "answers", "ancount", "size", "decoded"]


def started_capture(lab, how, out, timeout_s=120):
    """`dnscorrelate capture --lab LAB -o OUT` with DNSCORRELATE_TRACER=HOW, returned once it captures."""
    proc = subprocess.Popen([sys.executable, "-m", "dnscorrelate", "capture", "--lab", lab.name, "-o", str(out)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env={**os.environ, "DNSCORRELATE_TRACER": how},
                            preexec_fn=ctrl_c_reaches_it)
    said, deadline = b"", time.monotonic() + timeout_s
    while b"Ctrl-C to stop" not in b" ".join(said.split()):
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"capture with {how} did not start: {said.decode(errors='replace')}{proc.stderr.read().decode()}")
        if select.select([proc.stderr], [], [], 1.0)[0]:
            said += os.read(proc.stderr.fileno(), 65536)
    proc.said = said.decode(errors="replace")
    return proc


def finished(proc):
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, proc.said + err.decode(errors="replace")


def test_the_core_object_traces_real_lookups_as_bcc_does(default_lab, core_tracer_built, tmp_path):
    lab = default_lab
    outs = {how: tmp_path / f"{how}.parquet" for how in ("bcc", "core")}
    captures = {how: started_capture(lab, how, out) for how, out in outs.items()}
    names = [f"core-{uuid.uuid4().hex[:8]}.example.org.", "web.demo.svc.cluster.local.", "nosuch.demo.svc.cluster.local."]
    try:
        for name in names:
            dig(lab, "mypod", name)
        dig(lab, "mypod", "+tcp", names[0])
        time.sleep(0.3)  # the readers poll every 20 ms
    finally:
        ended = {how: finished(proc) for how, proc in captures.items()}
    for how, (code, said) in ended.items():
        assert code == 0 and "Traceback" not in said, f"{how}: {said}"
        assert ("(compile " if how == "bcc" else "(CO-RE object loaded in ") in said, f"{how}: {said}"
        assert "lost_samples=0" in said and "decode_errors=0" in said, f"{how}: {said}"
    frames = {how: pd.read_parquet(out) for how, out in outs.items()}
    seen = {how: frame[frame["qname"].isin(names)] for how, frame in frames.items()}
    rows = {how: sorted(map(tuple, frame[SAME].astype(str).values.tolist())) for how, frame in seen.items()}
    assert len(rows["core"]) >= 4 * len(names), rows["core"]  # each lookup at the pod, the node and CoreDNS, both ways
    assert rows["core"] == rows["bcc"]
    core = seen["core"]
    assert {"pod", "node", "coredns"} <= set(core["role"]) and set(core["proto"]) == {"udp", "tcp"}
    assert (core[core["qr"]]["latency_ns"] > 0).any() and core["decoded"].all()
    assert set(core[core["qname"] == names[2]]["rcode"].dropna()) >= {"NXDOMAIN"}


def test_the_core_object_loads_without_the_kernels_btf_or_headers(lab_ready, core_tracer_built, tmp_path):
    """The object relocates nothing against kernel types (it reads only __sk_buff, which the verifier rewrites):
    libbpf given a BTF file that does not exist still loads it, so a node without /sys/kernel/btf/vmlinux runs it.
    bcc (and with it the headers under /lib/modules) is never imported."""
    probe = ("import os, sys; from dnscorrelate.live import bpf; t = bpf.tracer('core'); "
             "print(t.loaded.source, t.counters()['lost'], 'bcc' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DNSCORRELATE_BTF": str(tmp_path / "no-such-vmlinux")})
    assert done.returncode == 0, done.stderr
    source, lost, imported_bcc = done.stdout.split()
    assert source == str(core_tracer_built) and lost == "0" and imported_bcc == "False"


def test_a_load_the_kernel_refuses_names_the_kernel_what_libbpf_said_and_what_the_tracer_needs(lab_ready, core_tracer_built):
    """The libbpf path as an unprivileged user (the kernel refuses bpf(2)): a CaptureError, not a traceback."""
    probe = ("from dnscorrelate.live import bpf\ntry:\n    bpf.load_with_libbpf()\nexcept bpf.CaptureError as err:\n"
             "    print(err)")
    readable = Path(tempfile.mkdtemp(prefix="dnsc-tracer-"))  # pytest's own temporary directories are root's alone
    try:
        readable.chmod(0o755)
        shutil.copy(core_tracer_built, readable)
        done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", probe],
                              capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "DNSCORRELATE_TRACER_DIR": str(readable)})
    finally:
        shutil.rmtree(readable)
    said = done.stdout
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert f"on kernel {os.uname().release} failed: Operation not permitted" in said
    assert "libbpf: " in said and "Linux 5.8 or later" in said and "no kernel headers" in said
