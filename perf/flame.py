#!/usr/bin/env python3
"""Stack collapse, flame graph SVG and top-functions report from `perf script` output; standard library only.

Debian packages no flame graph tool, so this is the small part of Brendan Gregg's FlameGraph that
perf/profile needs, rewritten: `perf script` text → folded stacks (`root;caller;callee count`) → an SVG
(one rectangle per frame, width by samples, a <title> tooltip each, a colour fixed by the function name)
and a text report (self and children per function, user vs kernel).

    perf script -F comm,tid,period,ip,sym,dso --no-inline -i perf.data > script.txt
    perf/flame.py collapse script.txt > stacks.folded        # demangles Swift names (swift demangle)
    perf/flame.py svg stacks.folded --title T > flame.svg
    perf/flame.py report stacks.folded > report.txt

Frames are written `name` for the executable, `name (libc.so.6)` for other DSOs, `name [k]` for the
kernel, `[dso]` for an unsymbolised frame; the root of each stack is the thread name. perf/profile runs
all three steps.
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import zlib
from collections import Counter

KERNEL_MARK = " [k]"
# A frame line of `perf script`: address, symbol (may contain spaces and parentheses), then (dso).
FRAME = re.compile(r"^\s+([0-9a-fA-F]+)\s+(.*?)\s+\(([^()]*)\)\s*$")
SWIFT_MANGLED = re.compile(r"^_?\$[sSe]|^_T0|^\$S")


# --------------------------------------------------------------------------------------------
# perf script → stacks


def parse_perf_script(lines) -> Counter:
    """Counter of raw stacks by samples: (comm, (sym, dso), ...) root → leaf. The root of every stack
    is the thread's comm (e.g. `ringsipd`); `frames()` turns the rest into names."""
    stacks: Counter = Counter()
    comm, frames = None, []

    def flush():
        if comm is not None:
            stacks[(comm, *reversed(frames))] += 1

    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            flush()
            comm, frames = None, []
            continue
        if not line[0].isspace():
            flush()
            # "comm  tid  period": comm may contain spaces; the last two fields are numbers.
            parts = line.split()
            comm = " ".join(parts[:-2]) if len(parts) >= 3 else (parts[0] if parts else "?")
            frames = []
            continue
        m = FRAME.match(line)
        if m:
            _addr, sym, dso = m.groups()
            frames.append((sym.split("+0x")[0], dso))
    flush()
    return stacks


def frames(raw: Counter, main_dsos: set[str] | None = None, demangle: bool = True) -> Counter:
    """Raw stacks → stacks of names: `name` for the main executable (a DSO whose basename is in
    `main_dsos`, by default the thread's comm), `name (libfoo.so.1)` for other DSOs, `name [k]` for
    the kernel, `[dso]` for an unsymbolised frame. Swift symbols are demangled (one `swift demangle
    --simplified` batch) unless `demangle` is false or `swift` is missing."""
    table = demangle_table({sym for st in raw for sym, _ in st[1:]}) if demangle else {}
    out: Counter = Counter()
    for st, n in raw.items():
        comm, names = st[0], [st[0]]
        mains = main_dsos or {comm}
        for sym, dso in st[1:]:
            base = os.path.basename(dso)
            if sym in ("", "[unknown]"):
                names.append(f"[{base or 'unknown'}]")
                continue
            name = table.get(sym, sym)
            if dso.startswith("[kernel") or dso.startswith("[guest.kernel"):
                names.append(name + KERNEL_MARK)
            elif base in mains:
                names.append(name)
            else:
                names.append(f"{name} ({base})")
        out[tuple(names)] += n
    return out


def demangle_table(symbols: set[str], swift: str | None = None) -> dict[str, str]:
    """Mangled Swift symbol → `swift demangle --simplified` output, in one batch; {} without `swift`."""
    swift = swift or shutil.which("swift")
    names = sorted(s for s in symbols if SWIFT_MANGLED.match(s))
    if not names or not swift:
        return {}
    try:
        out = subprocess.run([swift, "demangle", "--simplified"], input="\n".join(names) + "\n",
                             capture_output=True, text=True, timeout=120).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if len(out) < len(names):
        return {}
    return {n: (d.strip() or n) for n, d in zip(names, out)}


def write_folded(stacks: Counter, out) -> None:
    for st, n in sorted(stacks.items()):
        out.write(";".join(f.replace(";", ":") for f in st) + f" {n}\n")


def read_folded(lines) -> Counter:
    stacks: Counter = Counter()
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, n = line.rpartition(" ")
        try:
            stacks[tuple(stack.split(";"))] += int(n)
        except ValueError:
            continue
    return stacks


# --------------------------------------------------------------------------------------------
# SVG


class Node:
    __slots__ = ("name", "value", "children")

    def __init__(self, name: str):
        self.name, self.value, self.children = name, 0, {}


def build_tree(stacks: Counter) -> Node:
    root = Node("all")
    for st, n in stacks.items():
        root.value += n
        node = root
        for f in st:
            node = node.children.setdefault(f, Node(f))
            node.value += n
    return root


LIBRARY = re.compile(r" \((lib[^()]*|[^()]*\.so[^()]*)\)$")


def kind_of(name: str) -> str:
    """`kernel`, `lib` (another DSO, or an unsymbolised frame) or `user` (the executable itself)."""
    if name.endswith(KERNEL_MARK):
        return "kernel"
    if name.startswith("[") or LIBRARY.search(name):
        return "lib"
    return "user"


def colour(name: str) -> str:
    """A colour fixed by the name (crc32, not Python's salted hash): the kernel blue, libraries and
    unsymbolised frames green, the executable's own code red to yellow (flame colours)."""
    v1 = zlib.crc32(name.encode()) / 0xFFFFFFFF
    v2 = zlib.crc32(name[::-1].encode()) / 0xFFFFFFFF
    kind = kind_of(name)
    if kind == "kernel":
        r, g, b = 70 + 60 * v1, 150 + 60 * v2, 215 + 40 * v1
    elif kind == "lib":
        r, g, b = 120 + 60 * v1, 195 + 45 * v2, 70 + 40 * v1
    else:
        r, g, b = 205 + 50 * v2, 230 * v1, 55 * v2
    return f"rgb({int(r)},{int(g)},{int(b)})"


def render_svg(stacks: Counter, title: str = "Flame graph", subtitle: str = "", width: int = 1200,
               frame_height: int = 16, font_size: int = 11, min_width_px: float = 0.2) -> str:
    """A static flame graph: root at the bottom, callees above, siblings in alphabetical order,
    width proportional to samples. Every frame has a <title> (name, samples, share of all)."""
    root = build_tree(stacks)
    total = max(root.value, 1)
    xpad, top, bottom = 10, 50, 24
    scale = (width - 2 * xpad) / total

    def depth_of(node: Node, d: int = 0) -> int:
        kids = [c for c in node.children.values() if c.value * scale >= min_width_px]
        return max([d] + [depth_of(c, d + 1) for c in kids])

    depth = depth_of(root) + 1
    height = top + depth * frame_height + bottom
    char_w = font_size * 0.59
    out = [
        '<?xml version="1.0" standalone="no"?>',
        f'<svg version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<style>text {{ font-family: Verdana, sans-serif; font-size: {font_size}px; fill: rgb(0,0,0); }} '
        'rect:hover { stroke: black; stroke-width: 0.5; }</style>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="rgb(248,248,248)"/>',
        f'<text x="{width / 2:.0f}" y="20" text-anchor="middle" style="font-size:16px">{html.escape(title)}</text>',
        f'<text x="{width / 2:.0f}" y="38" text-anchor="middle">{html.escape(subtitle)}</text>',
        f'<text x="{xpad}" y="{height - 8}">{total} samples. Colours: red to yellow the executable, '
        'green libraries and unsymbolised frames, blue the kernel ([k]). Hover a frame for its figures.'
        '</text>',
    ]

    def draw(node: Node, x: float, d: int) -> None:
        w = node.value * scale
        if w < min_width_px:
            return
        y = height - bottom - (d + 1) * frame_height
        pct = 100.0 * node.value / total
        label = html.escape(node.name)
        out.append(f'<g><title>{label} ({node.value} samples, {pct:.2f}%)</title>'
                   f'<rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{frame_height - 1}" '
                   f'fill="{colour(node.name)}" rx="2" ry="2"/>')
        fit = int((w - 6) / char_w)
        if fit >= 3:
            text = node.name if len(node.name) <= fit else node.name[: fit - 2] + ".."
            out.append(f'<text x="{x + 3:.2f}" y="{y + frame_height - 4}">{html.escape(text)}</text>')
        out.append("</g>")
        cx = x
        for name in sorted(node.children):
            child = node.children[name]
            draw(child, cx, d + 1)
            cx += child.value * scale

    draw(root, xpad, 0)
    out.append("</svg>")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------
# Report


def report(stacks: Counter, top: int = 30, header: str = "") -> str:
    """Self and children (inclusive) samples per function, and the user/kernel split. A stack's root
    (the thread name) is not a function and is left out of the tables."""
    total = sum(stacks.values())
    if not total:
        return header + "no samples\n"
    self_c: Counter = Counter()
    children_c: Counter = Counter()
    kernel = 0
    kernel_entry: Counter = Counter()  # kernel samples by the executable's frame that made the syscall
    kernel_path: Counter = Counter()   # kernel samples by the first frame below the syscall's entry
    by_kind: Counter = Counter()
    for st, n in stacks.items():
        frames = st[1:] or st
        leaf = frames[-1]
        self_c[leaf] += n
        by_kind[kind_of(leaf)] += n
        for f in set(frames):
            children_c[f] += n
        if leaf.endswith(KERNEL_MARK):
            kernel += n
            own = [f for f in frames if kind_of(f) == "user"]
            kernel_entry[own[-1] if own else "(no frame of the executable)"] += n
            kernel_path[syscall_path(frames)] += n

    def pct(n: int) -> str:
        return f"{100.0 * n / total:6.2f}%"

    lines = [header.rstrip("\n")] if header else []
    lines += [
        f"samples: {total}",
        f"user:    {pct(total - kernel)}  ({total - kernel} samples; the executable "
        f"{pct(by_kind['user']).strip()}, libraries/unsymbolised {pct(by_kind['lib']).strip()})",
        f"kernel:  {pct(kernel)}  ({kernel} samples)",
        "",
        f"Top {top} by self (samples whose innermost frame is the function):",
        f"{'self':>8} {'children':>9}  function",
    ]
    for name, n in self_c.most_common(top):
        lines.append(f"{pct(n):>8} {pct(children_c[name]):>9}  {name}")
    lines += ["", f"Top {top} by children (samples with the function anywhere on the stack):",
              f"{'children':>9} {'self':>8}  function"]
    for name, n in children_c.most_common(top):
        lines.append(f"{pct(n):>9} {pct(self_c[name]):>8}  {name}")
    if kernel:
        lines += ["", "Kernel samples by the executable's frame that entered the kernel:", f"{'share':>8}  frame"]
        for name, n in kernel_entry.most_common(10):
            lines.append(f"{pct(n):>8}  {name}")
        lines += ["", "Kernel samples by path below the system call (e.g. io_submit_sqes = sends submitted, "
                  "io_cqring_wait = waiting/receiving):", f"{'share':>8}  frame"]
        for name, n in kernel_path.most_common(12):
            lines.append(f"{pct(n):>8}  {name}")
    return "\n".join(lines) + "\n"


def syscall_path(frames) -> str:
    """For a kernel sample: the frame just below the system call's handler (`__do_sys_*`,
    `__x64_sys_*`), else below `do_syscall_64`, else the outermost kernel frame."""
    kern = [f[: -len(KERNEL_MARK)] for f in frames if f.endswith(KERNEL_MARK)]
    for i, f in enumerate(kern):
        if f.startswith(("__do_sys_", "__x64_sys_", "__se_sys_")) and i + 1 < len(kern):
            return f"{f} > {kern[i + 1]}"
    for i, f in enumerate(kern):
        if f == "do_syscall_64" and i + 1 < len(kern):
            return f"do_syscall_64 > {kern[i + 1]}"
    return kern[0] if kern else "?"


def top_self(stacks: Counter, n: int = 5) -> list[tuple[str, float]]:
    total = sum(stacks.values()) or 1
    c: Counter = Counter()
    for st, k in stacks.items():
        c[st[-1]] += k
    return [(name, 100.0 * k / total) for name, k in c.most_common(n)]


def user_kernel_split(stacks: Counter) -> tuple[float, float]:
    total = sum(stacks.values()) or 1
    k = sum(n for st, n in stacks.items() if st[-1].endswith(KERNEL_MARK))
    return 100.0 * (total - k) / total, 100.0 * k / total


# --------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="perf/flame.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collapse", help="perf script output → folded stacks")
    c.add_argument("input", nargs="?", default="-")
    c.add_argument("--no-demangle", action="store_true")
    c.add_argument("--main", action="append", metavar="NAME",
                   help="basename of the executable (repeatable; default: each thread's comm)")
    s = sub.add_parser("svg", help="folded stacks → flame graph SVG")
    s.add_argument("input", nargs="?", default="-")
    s.add_argument("--title", default="Flame graph")
    s.add_argument("--subtitle", default="")
    s.add_argument("--width", type=int, default=1200)
    r = sub.add_parser("report", help="folded stacks → top functions (self, children, user/kernel)")
    r.add_argument("input", nargs="?", default="-")
    r.add_argument("--top", type=int, default=30)
    args = p.parse_args(argv)
    src = sys.stdin if args.input == "-" else open(args.input, errors="replace")
    with src:
        if args.cmd == "collapse":
            stacks = frames(parse_perf_script(src), set(args.main or ()), demangle=not args.no_demangle)
            write_folded(stacks, sys.stdout)
        elif args.cmd == "svg":
            sys.stdout.write(render_svg(read_folded(src), args.title, args.subtitle, args.width))
        else:
            sys.stdout.write(report(read_folded(src), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
