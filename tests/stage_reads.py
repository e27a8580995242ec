"""Run one DVC stage's entry point and record every ``params.yaml`` key it reads (for `test_dvc_stages`).

    python tests/stage_reads.py STAGE OUT.json [--fake-office31 ARCHIVE]

Run in the repository the stage should run in. Every config dataclass records the reads of its fields on the
configuration `tada.config.load_config` returned (the params, not a checkpoint's stored config); serialising it
whole (``to_dict``, ``digest``: provenance) is not a read. ``--fake-office31`` points the registry's Office-31
entry at a local archive (its checksum), so the benchmark path of ``fetch`` runs offline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import runpy
import sys
from pathlib import Path


def serialising() -> bool:
    """Called from `tada.config_schema.to_plain` (directly or from its comprehension)."""
    caller = sys._getframe(2)
    return "to_plain" in (caller.f_code.co_name, caller.f_back.f_code.co_name)


def record_reads() -> set[str]:
    from tada import config

    tracked: dict[int, str] = {}  # id of each node of the params' config tree -> its dotted prefix
    reads: set[str] = set()
    real_load = config.load_config

    def load_config(*args, **kwargs):
        loaded = real_load(*args, **kwargs)

        def walk(node, prefix: str) -> None:
            tracked[id(node)] = prefix
            for f in dataclasses.fields(node):
                value = object.__getattribute__(node, f.name)
                if dataclasses.is_dataclass(value):
                    walk(value, f"{prefix}{f.name}.")

        walk(loaded, "")
        return loaded

    sections = [v for v in vars(config).values() if isinstance(v, type) and dataclasses.is_dataclass(v)]
    for cls in sections:
        names = {f.name for f in dataclasses.fields(cls)}

        def getattribute(self, name, _names=names, _get=cls.__getattribute__):
            value = _get(self, name)
            prefix = tracked.get(id(self))
            if prefix is not None and name in _names and not dataclasses.is_dataclass(value) and not serialising():
                reads.add(prefix + name)
            return value

        cls.__getattribute__ = getattribute
    config.load_config = load_config
    return reads


def fake_office31(archive: Path) -> None:
    from tada.data import registry

    spec = registry.get_dataset("office31")
    [real] = spec.archives("amazon")
    fake = dataclasses.replace(real, urls=("http://127.0.0.1:9/unreachable",), md5=None,
                               sha256=hashlib.sha256(archive.read_bytes()).hexdigest())
    registry.DATASETS["office31"] = dataclasses.replace(spec, archives=lambda domain: (fake,))


def main(argv: list[str]) -> int:
    stage, out = argv[0], Path(argv[1])
    reads = record_reads()
    if "--fake-office31" in argv:
        fake_office31(Path(argv[argv.index("--fake-office31") + 1]))
    sys.argv = [f"pipelines/{stage}.py"]
    try:
        runpy.run_module(f"pipelines.{stage}", run_name="__main__")
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    out.write_text(json.dumps({"exit": code, "reads": sorted(reads)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
