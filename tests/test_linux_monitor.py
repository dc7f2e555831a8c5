"""The Linux hardware monitor on this machine's /proc and /sys, and on files
recorded from other machines (tests/fixtures/linux, sources in its README)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import impetus_linux
from impetusd.toolkit.nvidia import parse as parse_gpus
from impetus_linux import nvidia, sysfs

FIXTURES = Path(__file__).parent / "fixtures" / "linux"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads this machine's /proc and /sys")


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


def recorded_zone(name: str) -> dict[str, str]:
    """A thermal zone's files from a recorded ``file:value`` listing."""
    pairs = [line.split(":", 1) for line in (FIXTURES / name).read_text().splitlines() if line]
    return {key: value for key, value in pairs}


@linux_only
def test_this_machine() -> None:
    snap = impetus_linux.snapshot()
    assert snap["available"] is True
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    named = [line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name:")]
    if named:  # lscpu reads the same kernel facts its own way
        assert snap["cpu_model"] == named[0]
    cg = snap["cgroup"]
    assert cg is not None and cg["version"] in (1, 2) and cg["memory_usage_bytes"] > 0
    if cg["limited"]:
        assert 0 < cg["memory_limit_bytes"]
    else:
        assert cg["memory_limit_bytes"] is None
    zones = list(Path("/sys/class/thermal").glob("thermal_zone*"))
    assert len(snap["thermal_zones"]) == len(zones)
    if not zones and not list(Path("/sys/class/hwmon").glob("hwmon*/temp*_input")):
        assert snap["thermal_state"] == "unknown" and impetus_linux.thermal() is None
    assert snap["nvidia_gpus"] is None if shutil.which("nvidia-smi") is None else isinstance(snap["nvidia_gpus"], list)


def test_cpuinfo_of_recorded_machines(tmp_path: Path) -> None:
    def read(name: str) -> dict[str, str | None]:
        root = tmp_path / name
        (root / "proc").mkdir(parents=True)
        shutil.copy(FIXTURES / name, root / "proc" / "cpuinfo")
        return sysfs.cpuinfo(root)

    assert read("cpuinfo-xeon-x86_64") == {"cpu_model": "Intel(R) Xeon(R) Processor", "board": None}
    assert read("cpuinfo-rpi4-armv7l") == {"cpu_model": "ARMv7 Processor rev 3 (v7l)", "board": "Raspberry Pi Compute Module 4 Rev 1.0"}
    # a 64-bit ARM kernel names no CPU: unknown, not the board and not a guess
    assert read("cpuinfo-rpi4-aarch64") == {"cpu_model": None, "board": "Raspberry Pi 4 Model B Rev 1.5"}
    assert sysfs.cpuinfo(tmp_path / "nothing") == {"cpu_model": None, "board": None}


@pytest.mark.parametrize(
    ("temp_mc", "level"),
    [(45000, "nominal"), (85050, "serious"), (97000, "critical"), (130000, "critical")],
)
def test_thermal_level_from_recorded_trip_points(tmp_path: Path, temp_mc: int, level: str) -> None:
    zone = "sys/class/thermal/thermal_zone5"
    files = {f"{zone}/{k}": v for k, v in recorded_zone("thermal-zone-sen1.txt").items()}
    files[f"{zone}/temp"] = str(temp_mc)
    root = write_tree(tmp_path, files)
    [z] = sysfs.thermal_zones(root)
    assert z["type"] == "SEN1" and z["temp_c"] == temp_mc / 1000
    assert {t["type"] for t in z["trips"]} == {"critical", "hot", "passive", "active"}
    assert sysfs.pressure_level([z], []) == level
    assert impetus_linux.thermal(root) == level


def test_unset_trip_points_are_ignored(tmp_path: Path) -> None:
    """A firmware that leaves trips at 0 and -273.25 °C (recorded on an HP
    Spectre) must not read as critical."""
    zone = "sys/class/thermal/thermal_zone2"
    files = {f"{zone}/{k}": v for k, v in recorded_zone("thermal-zone-hp-spectre.txt").items()}
    root = write_tree(tmp_path, {**files, f"{zone}/type": "TSR0", f"{zone}/temp": "52000"})
    [z] = sysfs.thermal_zones(root)
    assert z["trips"] == [{"type": "passive", "temp_c": 71.05}]
    assert sysfs.pressure_level([z], []) == "nominal"
    (root / zone / "temp").write_text("72000\n")
    assert sysfs.pressure_level(sysfs.thermal_zones(root), []) == "serious"


def test_hwmon_sensors_with_labels_and_limits(tmp_path: Path) -> None:
    chip = "sys/class/hwmon/hwmon3"
    root = write_tree(tmp_path, {
        f"{chip}/name": "coretemp",
        f"{chip}/temp1_label": "Package id 0", f"{chip}/temp1_input": "48000",
        f"{chip}/temp1_max": "80000", f"{chip}/temp1_crit": "100000",
        f"{chip}/temp2_label": "Core 0", f"{chip}/temp2_input": "46000",
        "sys/class/hwmon/hwmon0/name": "nvme", "sys/class/hwmon/hwmon0/temp1_input": "38850",
    })
    sensors = sysfs.hwmon_sensors(root)
    assert [(s["chip"], s["label"], s["temp_c"]) for s in sensors] == [
        ("nvme", None, 38.85), ("coretemp", "Package id 0", 48.0), ("coretemp", "Core 0", 46.0),
    ]
    assert sensors[1]["max_c"] == 80.0 and sensors[1]["crit_c"] == 100.0 and "max_c" not in sensors[0]
    assert sysfs.pressure_level([], sensors) == "nominal"
    (root / chip / "temp1_input").write_text("85000\n")
    assert sysfs.pressure_level([], sysfs.hwmon_sensors(root)) == "serious"
    (root / chip / "temp1_input").write_text("100000\n")
    assert sysfs.pressure_level([], sysfs.hwmon_sensors(root)) == "critical"
    assert sysfs.pressure_level([], [sensors[0]]) is None  # no limits: unknown, not nominal


def test_cgroup_v2_limit_is_the_smallest_up_the_tree(tmp_path: Path) -> None:
    base = "sys/fs/cgroup"
    root = write_tree(tmp_path, {
        "proc/self/cgroup": "0::/user.slice/user-1000.slice/impetus.service",
        f"{base}/user.slice/user-1000.slice/impetus.service/memory.max": "max",
        f"{base}/user.slice/user-1000.slice/impetus.service/memory.current": "52428800",
        f"{base}/user.slice/user-1000.slice/memory.max": "4294967296",
        f"{base}/user.slice/memory.max": "max",
    })
    assert sysfs.cgroup_memory(root) == {
        "version": 2, "path": "/user.slice/user-1000.slice/impetus.service",
        "memory_limit_bytes": 4294967296, "limited": True, "memory_usage_bytes": 52428800,
    }


def test_cgroup_v1_unlimited_and_container_root(tmp_path: Path) -> None:
    # this machine's own layout: a v1 memory controller beside a v2 mount with no controllers
    mine = (FIXTURES / "proc-self-cgroup-v1").read_text()
    path = [line.split(":", 2)[2] for line in mine.splitlines() if ":memory:" in line][0]
    root = write_tree(tmp_path, {
        "proc/self/cgroup": mine.strip(),
        f"sys/fs/cgroup/memory{path}/memory.limit_in_bytes": "9223372036854771712",
        f"sys/fs/cgroup/memory{path}/memory.usage_in_bytes": "256618496",
    })
    got = sysfs.cgroup_memory(root)
    assert got is not None and got["version"] == 1 and got["limited"] is False and got["memory_limit_bytes"] is None
    # inside a container the process's path is not under the mount; the mount's own files are
    container = write_tree(tmp_path / "c", {
        "proc/self/cgroup": "4:memory:/docker/0123abcd",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "2147483648",
        "sys/fs/cgroup/memory/memory.usage_in_bytes": "1048576",
    })
    got = sysfs.cgroup_memory(container)
    assert got is not None and got["memory_limit_bytes"] == 2147483648 and got["memory_usage_bytes"] == 1048576
    assert sysfs.cgroup_memory(tmp_path / "none") is None


def test_nvidia_smi_output() -> None:
    """The one nvidia-smi reader (impetusd.toolkit.nvidia), as the Linux monitor's snapshot shows it."""
    [gpu] = parse_gpus((FIXTURES / "nvidia-smi-rtx2060.csv").read_text())
    assert nvidia.describe(gpu) == {
        "index": 0, "name": "GeForce RTX 2060", "memory_total_bytes": 5934 * 2**20, "memory_free_bytes": 5252 * 2**20,
        "memory_used_bytes": 682 * 2**20, "temp_c": 36.0, "utilization_percent": 20.0,
    }
    [odd] = parse_gpus("1, Tesla K80, 11441, 11441, 0, [N/A], [Not Supported]\n")
    assert odd.temp_c is None and odd.utilization_percent is None and odd.total_bytes == 11441 * 2**20
    assert parse_gpus("") == [] and parse_gpus("0, NVIDIA H200, [N/A], [N/A], [N/A], 30, 0\n") == []
