"""The Apple Silicon monitor's parsers on output recorded from real M1–M4
machines (tests/fixtures/apple, sources in its README), and the plugin itself
on this machine, where it must register and say it is unavailable."""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import pytest

import impetus_apple
from impetus_apple import parse

FIXTURES = Path(__file__).parent / "fixtures" / "apple"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


@pytest.mark.parametrize(
    ("name", "chip", "performance", "efficiency", "memory_gib", "level_names"),
    [
        ("sysctl-m1pro-monterey.txt", "Apple M1 Pro", 6, 2, 16, [None, None]),
        ("sysctl-m2-monterey.txt", "Apple M2", 4, 4, 16, [None, None]),
        ("sysctl-m3max-sequoia.txt", "Apple M3 Max", 10, 4, 36, ["Performance", "Efficiency"]),
        ("sysctl-m4max-sequoia.txt", "Apple M4 Max", 12, 4, 64, ["Performance", "Efficiency"]),
    ],
)
def test_sysctl_of_m1_to_m4(name: str, chip: str, performance: int, efficiency: int, memory_gib: int, level_names: list[str | None]) -> None:
    facts = parse.cpu(parse.sysctl(fixture(name)))
    assert facts["chip"] == chip
    assert (facts["performance_cores"], facts["efficiency_cores"]) == (performance, efficiency)
    assert facts["cpu_cores"] == performance + efficiency
    assert facts["memory_bytes"] == memory_gib * 2**30
    assert [lv["name"] for lv in facts["perf_levels"]] == level_names


def test_perflevels_listed_out_of_order_without_a_chip_name() -> None:
    """``sysctl -a`` lines as an M1 Pro owner pasted them: level 1 first, no
    brand string and no memory in the paste, so those are unknown."""
    facts = parse.cpu(parse.sysctl(fixture("sysctl-m1pro-cpufetch.txt")))
    assert (facts["performance_cores"], facts["efficiency_cores"]) == (8, 2)
    assert facts["chip"] is None and facts["memory_bytes"] is None and facts["cpu_cores"] == 10


def test_first_macos_11_named_no_chip() -> None:
    """macOS 11.0 on an M1 said ``Apple processor`` and had no perflevels."""
    alone = parse.machine(fixture("sysctl-m1-bigsur.txt"), "")
    assert alone["chip"] is None and alone["chip_source"] is None
    assert alone["performance_cores"] is None and alone["efficiency_cores"] is None and alone["perf_levels"] == []
    assert alone["gpu_cores"] is None and alone["memory_bytes"] is None
    # with system_profiler's answer, the GPU entry names the chip
    both = parse.machine(fixture("sysctl-m1-bigsur.txt"), fixture("system_profiler-displays-m1.json"))
    assert both["chip"] == "Apple M1" and both["chip_source"] == "system_profiler" and both["gpu_cores"] == 7


def test_gpu_cores_from_json_and_text() -> None:
    assert parse.displays(fixture("system_profiler-displays-m1.json")) == {"gpu": "Apple M1", "gpu_cores": 7}
    assert parse.displays(fixture("system_profiler-displays-m3.txt")) == {"gpu": "Apple M3", "gpu_cores": 10}
    # an Intel iMac's discrete GPU: named, but no core count printed
    assert parse.displays(fixture("system_profiler-displays-intel-imacpro.txt")) == {"gpu": "Radeon Pro Vega 64", "gpu_cores": None}
    assert parse.displays("") == {"gpu": None, "gpu_cores": None}
    assert parse.displays('{"SPDisplaysDataType": []}') == {"gpu": None, "gpu_cores": None}
    m3 = parse.machine(fixture("sysctl-m3max-sequoia.txt"), fixture("system_profiler-displays-m3.txt"))
    assert m3["chip"] == "Apple M3 Max" and m3["chip_source"] == "sysctl"  # sysctl wins when it names the chip


def test_thermal_pressure_and_speed_limit() -> None:
    levels = [parse.pressure(f"com.apple.system.thermalpressurelevel {n}\n") for n in range(5)]
    assert levels == ["nominal", "fair", "serious", "critical", "critical"]
    assert parse.pressure("") is None and parse.pressure("com.apple.system.thermalpressurelevel ?") is None
    assert parse.pressure("com.apple.system.thermalpressurelevel 9") is None  # a level macOS does not define: unknown
    # Apple Silicon prints only notes: no speed limit to report
    assert parse.speed_limit(fixture("pmset-therm-m1pro.txt")) is None
    assert parse.speed_limit(fixture("pmset-thermlog-intel-throttled.txt")) == 28


def test_thermal_pressure_reports_apples_name_beside_impetus_level() -> None:
    # OSThermalNotification.h: kOSThermalPressureLevelNominal, Moderate, Heavy, Trapping, Sleeping
    reports = [parse.pressure_report(f"com.apple.system.thermalpressurelevel {n}\n") for n in range(5)]
    assert [(r["value"], r["apple"], r["level"]) for r in reports if r] == [
        (0, "nominal", "nominal"),
        (1, "moderate", "fair"),
        (2, "heavy", "serious"),  # the default thermal_backoff_level starts at Apple's "heavy"
        (3, "trapping", "critical"),
        (4, "sleeping", "critical"),
    ]
    assert parse.pressure_report("com.apple.system.thermalpressurelevel 9") is None and parse.pressure_report("") is None


@pytest.mark.skipif(sys.platform == "darwin" and platform.machine() == "arm64", reason="this is an Apple Silicon Mac")
def test_registers_but_is_unavailable_elsewhere() -> None:
    from impetusd.plugin.manager import build_registries, make_plugin_manager

    monitor = build_registries(make_plugin_manager()).monitors.get("apple")
    assert monitor is not None and monitor.thermal is not None  # registered through the entry point
    snap = monitor.snapshot()
    assert snap["available"] is False and sys.platform in snap["reason"]
    assert monitor.thermal() is None


def test_mlx_probe_runs_in_a_subprocess() -> None:
    """The probe the monitor runs (never mlx in the daemon): real MLX here."""
    info = parse.mlx_info(impetus_apple.run([sys.executable, "-c", impetus_apple.MLX_PROBE], timeout=120) or "")
    assert info is not None and "default_device" in info and isinstance(info["metal"], bool)
    assert parse.mlx_info("Traceback ...\nImportError: no mlx") is None
