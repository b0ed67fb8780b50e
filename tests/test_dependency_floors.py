"""The dependency floors of pyproject.toml exclude versions with known advisories, and what is
installed here (from constraints.txt) is at or above every floor."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).parent.parent
ADVISORY_FLOORS = {"starlette": "0.40", "python-multipart": "0.0.18", "h11": "0.16"}
"""The first versions without the known advisories (Starlette < 0.40: multipart form DoS;
python-multipart < 0.0.18: multipart parsing DoS; h11 < 0.16: request smuggling)."""


def requirements() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    return {req.name.lower(): req for req in map(Requirement, every)}


def test_the_floors_exclude_the_versions_with_advisories():
    reqs = requirements()
    for name, first_fixed in ADVISORY_FLOORS.items():
        spec = reqs[name].specifier
        below = Version(first_fixed).release
        older = Version(".".join(map(str, below[:-1] + (below[-1] - 1,))))  # e.g. 0.39, 0.0.17, 0.15
        assert not spec.contains(older) and spec.contains(first_fixed), (name, str(spec))


def test_the_pins_and_the_installed_versions_meet_every_floor():
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", (ROOT / "constraints.txt").read_text(), re.M))
    pins = {k.lower(): v for k, v in pins.items()}
    reqs = requirements()
    for name in ADVISORY_FLOORS:
        spec = reqs[name].specifier
        assert spec.contains(pins[name]), (name, pins[name], str(spec))
        assert spec.contains(metadata.version(name)), (name, metadata.version(name), str(spec))
