"""How the tracer is found and what a failed load says (live/bpf.py), without loading anything into a kernel."""

from pathlib import Path

import pytest

from dnscorrelate.errors import CaptureError
from dnscorrelate.live import bpf


def test_the_object_is_named_for_the_source_it_was_compiled_from(tmp_path):
    source = tmp_path / "dns_trace.c"
    source.write_text("int x;\n")
    first = bpf.object_name(source)
    source.write_text("int y;\n")
    assert first != bpf.object_name(source) and first.startswith("dns_trace-") and first.endswith(".bpf.o")
    assert bpf.object_name() == bpf.object_name(bpf.BPF_SOURCE)


def test_the_object_is_found_in_the_directory_named_first(tmp_path, monkeypatch):
    monkeypatch.setenv(bpf.TRACER_DIR_ENV, str(tmp_path))
    assert bpf.object_dirs()[0] == tmp_path and Path("/opt/dnscorrelate/tracer") in bpf.object_dirs()
    (tmp_path / bpf.object_name()).write_bytes(b"\x7fELF")
    assert bpf.core_object() == tmp_path / bpf.object_name()


def test_a_missing_object_says_which_one_where_it_was_looked_for_and_how_to_build_it(tmp_path, monkeypatch):
    monkeypatch.setenv(bpf.TRACER_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("DNSCORRELATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bpf, "BPF_SOURCE", bpf.BPF_SOURCE)
    if any((d / bpf.object_name()).exists() for d in bpf.object_dirs()[1:]):
        pytest.skip("this machine has the object in a default place (an agent image's /opt/dnscorrelate/tracer)")
    with pytest.raises(CaptureError) as err:
        bpf.core_object()
    message = str(err.value)
    assert bpf.object_name() in message and str(tmp_path) in message and "bpf/build.sh" in message


def test_a_kernel_without_btf_is_named_with_what_to_do():
    said = bpf.load_failure(Path("/x/dns_trace-abc.bpf.o"), "No such process", "5.4.0-acme", btf_present=False,
                            btf_file=None, said=["libbpf: failed to find valid kernel BTF", ""])
    assert said.startswith("loading the tracer dns_trace-abc.bpf.o on kernel 5.4.0-acme failed: No such process")
    assert "libbpf: failed to find valid kernel BTF" in said
    assert "kernel 5.4.0-acme has no BTF (/sys/kernel/btf/vmlinux is absent)" in said
    assert "CONFIG_DEBUG_INFO_BTF=y" in said and bpf.BTF_ENV in said


def test_a_kernel_with_btf_gets_the_failure_and_the_kernel_requirement_only():
    said = bpf.load_failure(Path("dns_trace-abc.bpf.o"), "Invalid argument", "5.4.0-acme", btf_present=True,
                            btf_file=None, said=["unknown func bpf_ringbuf_reserve#131"])
    assert "no BTF" not in said and "bpf_ringbuf_reserve" in said and "Linux 5.8 or later" in said
    given = bpf.load_failure(Path("o"), "Invalid argument", "k", btf_present=False, btf_file="/b/vmlinux", said=[])
    assert "no BTF" not in given  # a BTF file was given: libbpf's own message says what was wrong with it
