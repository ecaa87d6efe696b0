"""perf/profile and perf/flame.py: the stack collapse, SVG and report on canned `perf script` text, and a short
real profile of ringsipd (skipped where `perf record` cannot sample, e.g. perf_event_paranoid as a user)."""

import importlib.machinery
import importlib.util
import shutil
import xml.etree.ElementTree as ET

import flame
import pytest
from conftest import REPO
from test_perf_harness import fields_of, need, run_tool

SVG = "{http://www.w3.org/2000/svg}"

# Two samples in `perf script -F comm,tid,period,ip,sym,dso --no-inline` form: a Swift frame (mangled), a
# libc frame, an unsymbolised liburing frame and kernel frames.
CANNED = """\
ringsipd  9888    1001001 
\t          f1933 $s3SIP6SIPURIV9isEscapedySbSW_S2iAA9ByteClassVtFZTf4nnnnd_nTf4xnnn_n (/x/release/ringsipd)
\t          c21f1 $s6Engine5ShardC3runyyF (/x/release/ringsipd)
\t          891f4 start_thread (/usr/lib/x86_64-linux-gnu/libc.so.6)

ringsipd  9888    1001001 
\tffffffff82044d98 __skb_recv_udp ([kernel.kallsyms])
\tffffffff81b48646 __do_sys_io_uring_enter ([kernel.kallsyms])
\tffffffff821ef691 do_syscall_64 ([kernel.kallsyms])
\t            2b95 [unknown] (/usr/lib/x86_64-linux-gnu/liburing.so.2.3)
\t          c2169 $s6Engine5ShardC3runyyF (/x/release/ringsipd)
\t          891f4 start_thread (/usr/lib/x86_64-linux-gnu/libc.so.6)

"""


def test_collapse_names_frames_by_dso_and_kernel_and_demangles_swift():
    raw = flame.parse_perf_script(CANNED.splitlines())
    stacks = flame.frames(raw, {"ringsipd"}, demangle=bool(shutil.which("swift")))
    assert sum(stacks.values()) == 2
    kernel = [st for st in stacks if st[-1].endswith(" [k]")]
    assert kernel == [("ringsipd", "start_thread (libc.so.6)", kernel[0][2], "[liburing.so.2.3]",
                       "do_syscall_64 [k]", "__do_sys_io_uring_enter [k]", "__skb_recv_udp [k]")]
    if shutil.which("swift"):
        assert kernel[0][2] == "Shard.run()", kernel
        assert ("ringsipd", "start_thread (libc.so.6)", "Shard.run()",
                "specialized static SIPURI.isEscaped(_:_:_:_:)") in stacks, stacks
    assert flame.user_kernel_split(stacks) == (50.0, 50.0)


def test_svg_has_a_titled_rectangle_per_frame_and_the_report_splits_user_and_kernel(tmp_path):
    stacks = flame.frames(flame.parse_perf_script(CANNED.splitlines()), {"ringsipd"}, demangle=False)
    svg = flame.render_svg(stacks, "t", "s")
    root = ET.fromstring(svg)
    titles = [g.find(f"{SVG}title").text for g in root.iter(f"{SVG}g")]
    assert titles[0] == "all (2 samples, 100.00%)", titles
    assert any(t.startswith("__skb_recv_udp [k] (1 samples, 50.00%)") for t in titles), titles
    # all, the comm, start_thread, Shard.run (merged), then isEscaped and the 4 frames of the other sample.
    assert len(titles) == 9, titles
    # The same function gets the same colour in every graph.
    assert flame.colour("Shard.run()") == "rgb(218,40,15)", flame.colour("Shard.run()")
    assert flame.colour("x [k]") == "rgb(91,165,229)", flame.colour("x [k]")
    assert flame.colour("x [k]") != flame.colour("x")
    text = flame.report(stacks, top=5)
    assert "samples: 2" in text and "kernel:   50.00%" in text and "user:     50.00%" in text, text
    assert "__do_sys_io_uring_enter > __skb_recv_udp" in text, text
    folded = tmp_path / "s.folded"
    with open(folded, "w") as f:
        flame.write_folded(stacks, f)
    assert flame.read_folded(folded.read_text().splitlines()) == stacks


def _load(name):
    loader = importlib.machinery.SourceFileLoader(name, str(REPO / "perf" / name))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


def test_profile_of_ringsip_writes_a_flame_graph_and_a_report(tmp_path):
    need("ringsip")
    why = _load("profile").perf_usable()
    if why:
        pytest.skip(why)  # a machine that forbids sampling is not a failure of the toolkit
    out = tmp_path / "prof"
    p = run_tool([str(REPO / "perf" / "profile"), "stateless", "--rate", "400", "--seconds", "3"], out, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("PROFILE ")]
    assert len(lines) == 1, p.stdout
    f = fields_of(lines[0])
    assert int(f["samples"]) > 0 and abs(float(f["user_pct"]) + float(f["kernel_pct"]) - 100) < 0.2, lines[0]
    svg = out / "flame.svg"
    assert svg.stat().st_size > 0
    frames = [g for g in ET.parse(svg).getroot().iter(f"{SVG}g") if g.find(f"{SVG}rect") is not None]
    assert len(frames) >= 5, f"only {len(frames)} frames in {svg}"
    report = (out / "report.txt").read_text()
    assert "Top 30 by self" in report and "Top 30 by children" in report and "kernel:" in report, report
    assert (out / "stacks.folded").stat().st_size > 0
    assert not (out / "perf.data").exists(), "perf.data is removed unless --keep-data"
    assert "Shard.run()" in (out / "stacks.folded").read_text(), "ringsipd's frames are symbolised and demangled"
