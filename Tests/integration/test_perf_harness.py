"""Smoke tests of perf/bench and perf/compare: every scenario, a short low-rate run on each target that can
run here, prints its result line and leaves no process and no run folder behind."""

import dataclasses
import importlib.machinery
import importlib.util
import os
import shutil
import subprocess

import harness as h
import pytest
from conftest import REPO, missing

WATCHED = ("sipp", "kamailio", "ringsipd", "opensips", "perf")
SCENARIOS = tuple(h.SCENARIO_SPECS)


def load_tool(name: str):
    loader = importlib.machinery.SourceFileLoader(name, str(REPO / "perf" / name))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader))
    loader.exec_module(module)
    return module


def started_under(folder) -> set[int]:
    """Live sipp/target/perf processes that belong to a run in `folder`: the harness starts each in its
    run folder (cwd) or names a file there (ringsipd -f, kamailio -Y). Others may be benchmarking on
    the same machine at the same time; their processes are not ours to count."""
    folder = str(folder)
    out = set()
    for pid in h.all_pids():
        f = h._stat_fields(pid)
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if f and f[0] != "Z" and comm in WATCHED and (cwd.startswith(folder) or folder in h.cmdline(pid)):
            out.add(pid)
    return out


def need(target: str, scenario: str | None = None) -> None:
    for exe in ("sipp",):
        if not shutil.which(exe):
            missing(f"{exe} not found: run `make test-deps`")
    why = h.target_available(target, h.SCENARIO_SPECS[scenario] if scenario else None)
    if why:
        missing(why)


def run_tool(argv: list[str], out, timeout: float) -> subprocess.CompletedProcess:
    """Run a perf/ tool whose run folders go under `out` (its --out), then check it left nothing running."""
    p = subprocess.run([*argv, "--out", str(out)], capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert h.wait_until(lambda: not started_under(out), 3), (
        "left behind: " + "; ".join(h.cmdline(pid) for pid in started_under(out)))
    return p


def fields_of(line: str) -> dict[str, str]:
    return dict(kv.split("=", 1) for kv in line.split()[1:])


def smoke_load(scenario: str) -> tuple[int, int]:
    """(calls/s, calls) of a smoke run: 100 and 200, or 40 and 120 where each INVITE waits 20 ms on a back-end
    (Kamailio's 2 blocking workers carry at most 2 / 20 ms = 100 calls/s)."""
    return (40, 120) if h.SCENARIO_SPECS[scenario].backend else (100, 200)


def need_backend(scenario: str) -> None:
    if h.SCENARIO_SPECS[scenario].backend == "mysql" and not h.mariadb_up():
        missing("no MariaDB on 127.0.0.1:3306: run `make test-deps` (scripts/ensure-mariadb)")


@pytest.mark.parametrize("scenario,target", [(s, t) for s in SCENARIOS for t in ("ringsip", "kamailio", *h.FLOOR_TARGETS)
                                             if h.SCENARIO_SPECS[s].runs(t)])
def test_bench_runs_each_scenario_prints_one_result_line_and_leaves_nothing_behind(scenario, target, tmp_path):
    need(target, scenario)
    need_backend(scenario)
    rate, calls = smoke_load(scenario)
    p = run_tool([str(REPO / "perf" / "bench"), scenario, "--target", target, "--rate", str(rate), "--calls", str(calls)],
                 tmp_path, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, p.stdout
    f = fields_of(lines[0])
    assert f["bench"] == scenario and f["target"] == target, lines[0]
    assert f["ok"] == str(calls) and f["failed"] == "0" and f["calls"] == str(calls), lines[0]
    assert float(f["cpu_us_per_call"]) > 0 and float(f["cpu_us_per_msg"]) > 0, lines[0]
    assert float(f["peak_rss_mb"]) > 0, lines[0]
    assert f["limit"] == "-", "sipp at 100 calls/s is nowhere near its limit: " + lines[0]
    if target == "ringsip":
        # Every datagram of the run was read by one of the two shards.
        assert sum(int(n) for n in f["shard_msgs"].split("/")) >= calls * h.SCENARIO_SPECS[scenario].messages, lines[0]
    else:
        assert f["shard_msgs"] == "na", lines[0]
    if h.SCENARIO_SPECS[scenario].uas_xml is None:
        assert f["uas_cpu_pct"] == "na", "no UAS runs for " + scenario
    if h.SCENARIO_SPECS[scenario].backend and h.SCENARIO_SPECS[scenario].delayed_backend:
        # Each INVITE waited on the 20 ms back-end, whose CPU is reported.
        assert float(f["rt_p50_ms"]) >= 20 and f["backend_cpu_pct"] != "na", lines[0]
        assert float(f["inflight"]) > 0, lines[0]
    elif h.SCENARIO_SPECS[scenario].backend:
        assert f["backend_cpu_pct"] != "na", lines[0]
    else:
        assert f["backend_cpu_pct"] == "na", lines[0]
    assert not list(tmp_path.iterdir()), "a clean run removes its run folder"


def test_a_scenario_without_a_script_for_the_target_is_refused_with_the_reason(tmp_path):
    scriptless = dataclasses.replace(h.SCENARIO_SPECS["async-db"], targets=("ringsip", "kamailio"),
                                     why_not="no opensips.cfg")
    group = h.ProcGroup(tmp_path / "run")
    with pytest.raises(RuntimeError, match="async-db has no opensips script: no opensips.cfg"):
        h.start_target(group, "opensips", scriptless, 5999, 5998, 1)
    assert not group.procs, "nothing was started"


def test_opensips_without_an_install_is_refused_before_anything_starts(tmp_path):
    need("ringsip")
    if h.opensips_path():
        pytest.skip("OpenSIPS is installed here")
    p = run_tool([str(REPO / "perf" / "bench"), "async-db", "--target", "opensips"], tmp_path, timeout=30)
    assert p.returncode == 2 and "no OpenSIPS install found" in p.stderr, p.stdout + p.stderr
    p = run_tool([str(REPO / "perf" / "compare"), "async-db", "--targets", "ringsip,opensips"], tmp_path, timeout=30)
    assert p.returncode == 2 and "no OpenSIPS install found" in p.stderr, p.stdout + p.stderr
    assert not list(tmp_path.iterdir()), "nothing was started, no run folder"


def test_kamailio_without_its_http_async_client_build_is_refused_with_how_to_build_it(tmp_path):
    need("kamailio")
    empty = tmp_path / "no-modules"
    empty.mkdir()
    out = tmp_path / "runs"
    p = subprocess.run([str(REPO / "perf" / "bench"), "async-rest", "--target", "kamailio", "--out", str(out)],
                       capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                       env={**os.environ, "KAMAILIO_MODULES": str(empty), "PYTHONDONTWRITEBYTECODE": "1"})
    assert p.returncode == 2, p.stdout + p.stderr
    assert "http_async_client (not packaged by Debian) is not built" in p.stderr, p.stderr
    assert "scripts/ensure-kamailio-http-async" in p.stderr, p.stderr
    assert not out.exists(), "nothing was started, no run folder"


def test_compare_prints_the_cpu_ratio_for_each_peer(tmp_path):
    need("ringsip")
    need("kamailio")
    p = run_tool([str(REPO / "perf" / "compare"), "register", "--rates", "100", "--rounds", "1", "--seconds", "1",
                  "--targets", "ringsip,kamailio"], tmp_path, timeout=90)
    assert p.returncode == 0, p.stdout + p.stderr
    results = [line for line in p.stdout.splitlines() if line.startswith("RESULT ")]
    assert sorted(fields_of(line)["target"] for line in results) == ["kamailio", "ringsip"], p.stdout
    compares = [line for line in p.stdout.splitlines() if line.startswith("COMPARE ")]
    assert len(compares) == 1, p.stdout
    f = fields_of(compares[0])
    assert f["bench"] == "register" and f["peer"] == "kamailio" and float(f["ratio"]) > 0, compares[0]


def test_bench_blames_the_load_generator_when_sipp_saturates_or_falls_behind():
    bench = load_tool("bench")
    base = {"offered_cps": 4000.0, "created_cps": 3990.0, "uac_cpu_pct_max": 40.0, "uas_cpu_pct": 30.0}
    assert bench.limit_of(base) == "-"
    assert bench.limit_of({**base, "uac_cpu_pct_max": 97.0}) == "generator"
    assert bench.limit_of({**base, "created_cps": 3100.0}) == "generator"
    # A target that fell behind stretches sipp's run: its lower creation rate is then not the generator's.
    assert bench.limit_of({**base, "created_cps": 3100.0, "failed": 0, "retrans": 40}) == "-"
    # So does one whose answers are slow for the length of the run (sipp's rate includes the wait for them).
    assert bench.limit_of({**base, "created_cps": 3100.0, "rt_p99_ms": 516.0, "duration_s": 3.1}) == "-"
    assert bench.limit_of({**base, "created_cps": 3100.0, "rt_p99_ms": 24.0, "duration_s": 3.1}) == "generator"
    assert bench.limit_of({**base, "backend_cpu_pct": 95.0}) == "backend"
    assert bench.limit_of({**base, "uas_cpu_pct": 95.0}) == "uas"
    assert bench.limit_of({**base, "uas_cpu_pct": None}) == "-"
    note = bench.limit_note({**base, "uac_cpu_pct_max": 97.0, "limit": "generator"})
    assert note.startswith("# limit: the load generator"), note


def test_scenario_templates_render_completely_and_refuse_a_missing_value(tmp_path):
    values = {"LISTEN": "127.0.0.1:5060", "UAS": "127.0.0.1:5070", "WORKERS": 2}
    for name, spec in h.SCENARIO_SPECS.items():
        for cfg in spec.config_files():
            assert (spec.folder / cfg).exists(), f"{name}/{cfg} missing"
        for cfg in ("ringsip.cfg", "kamailio.cfg", "opensips.cfg"):
            if cfg not in spec.config_files():
                assert not (spec.folder / cfg).exists(), f"{name}/{cfg} exists but {name}.targets omits it"
        for xml in (spec.uac_xml, spec.uas_xml):
            assert xml is None or (spec.folder / xml).exists(), f"{name}/{xml} missing"
        backend = {"HTTP": "127.0.0.1:8080", "DELAY_MS": 20, "ASYNC_TIMEOUT_MS": 2000} if spec.backend == "http" else {"DB_URL": h.DB_URL} if spec.backend else {}
        for cfg in ("ringsip.cfg", "opensips.cfg"):
            if cfg not in spec.config_files():
                continue
            text = h.render_config(spec.folder / cfg, tmp_path / f"{name}-{cfg}", {**values, **backend}).read_text()
            assert not h.TOKEN.search(text), text
    with pytest.raises(RuntimeError, match="no value for @UAS@"):
        h.render_config(h.SCENARIO_SPECS["stateless"].folder / "ringsip.cfg", tmp_path / "x.cfg",
                        {"LISTEN": "127.0.0.1:5060"})


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if "ringsip" in h.SCENARIO_SPECS[s].targets])
def test_each_scenarios_ringsip_script_passes_check_config(scenario, ringsipd, tmp_path):
    spec = h.SCENARIO_SPECS[scenario]
    cfg = h.render_config(spec.folder / "ringsip.cfg", tmp_path / "ringsip.cfg",
                          {"LISTEN": "127.0.0.1:5060", "UAS": "127.0.0.1:5070", "WORKERS": 2,
                           "HTTP": "127.0.0.1:8080", "DELAY_MS": 20, "ASYNC_TIMEOUT_MS": 2000, "DB_URL": h.DB_URL})
    p = subprocess.run([str(ringsipd), "--check-config", "-f", str(cfg)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stdout + p.stderr
