"""The environment is the locked one: every package of requirements.lock is installed at its
locked version (make setup installs them with --require-hashes), and each run records the
lock it ran under."""
import re
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", (ROOT / "requirements.lock").read_text(), re.M)
    return {re.sub(r"[-_.]+", "-", name).lower(): version for name, version in pins}


def test_installed_packages_match_the_lock():
    pins = locked()
    assert len(pins) > 100 and "torch" in pins and "lm-eval" in pins
    wrong = {}
    for name, version in pins.items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed != version:
            wrong[name] = (version, installed)
    assert not wrong, f"installed packages differ from requirements.lock (locked, installed): {wrong}"


def test_setup_installs_the_lock_with_hashes():
    make = (ROOT / "Makefile").read_text()
    setup = make.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    assert "--require-hashes" in setup and "-r requirements.lock" in setup and "requirements.txt" not in setup


def test_every_direct_requirement_is_locked_at_its_pin():
    pins = locked()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(==\s*([^\s#]+))?", line.strip())
        if not m or line.startswith("#"):
            continue
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        assert name in pins, f"{name} (requirements.txt) is not in requirements.lock: run make lock"
        if m.group(4):
            assert pins[name] == m.group(4), f"{name}: requirements.txt pins {m.group(4)}, the lock {pins[name]}"


def test_conda_environment_installs_the_same_lock():
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements.lock" in pip and "--require-hashes" in pip
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    assert python.split("=")[1].startswith("3.11.")
