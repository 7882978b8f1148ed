"""What the start-up check of Puppet's trees costs (docs/security.md: `Manifest.of` walks
--modulepath, --puppet-environment and the manifest's own environment, one lstat per entry).

A control repository (manifests/site.pp, hiera.yaml, modules/ with --modules copies of
Debian's puppetlabs-mount-core, ~70 entries each) is made in a scratch directory; each tree
(this one, then --against's, interleaved over --rounds) runs `Manifest.of` --count times in
a fresh interpreter with --modulepath /usr/share/puppet/modules, and the median and spread
are printed. Once per `mgmt run`/`mgmt check` start, against a Puppet compile of 1-2 s.

    .venv/bin/python bench/puppet_trees.py [--modules 20] [--count 31] [--rounds 3] \
        [--against /tmp/base_k]
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import ROOT, Parser, whole

MODULE = Path("/usr/share/puppet/modules.available/puppetlabs-mount-core")

PROBE = """
import statistics, sys, time
from pathlib import Path
from mgmt.config import Config
from mgmt.puppet.compile import Manifest
config = Config(file=Path(sys.argv[1]), modulepath="/usr/share/puppet/modules")
times = []
for _ in range(int(sys.argv[2])):
    start = time.perf_counter()
    Manifest.of(config)
    times.append((time.perf_counter() - start) * 1e3)
print(f"{statistics.median(times):.2f} {min(times):.2f} {max(times):.2f}")
"""


def repository(top: Path, modules: int) -> Path:
    """A control repository with `modules` modules; its manifest."""
    (top / "manifests").mkdir()
    (top / "manifests" / "site.pp").write_text("notice(1)\n")
    (top / "hiera.yaml").write_text("---\nversion: 5\n")
    (top / "modules").mkdir()
    for index in range(modules):
        shutil.copytree(MODULE, top / "modules" / f"m{index}", symlinks=True)
    return top / "manifests" / "site.pp"


def main() -> None:
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", type=whole(0), default=20)
    parser.add_argument("--count", type=whole(1), default=31)
    parser.add_argument("--rounds", type=whole(1), default=3)
    parser.add_argument("--against", type=Path, help="another checkout (its .venv)")
    args = parser.parse_args()
    if not MODULE.is_dir():
        parser.error(f"{MODULE}: missing (Debian's puppet-module-puppetlabs-mount-core)")
    trees = [ROOT, *([args.against.resolve()] if args.against else [])]
    for tree in trees:
        if not (tree / ".venv" / "bin" / "python").exists():
            parser.error(f"{tree}: no .venv (scripts/install.sh --test)")
    with tempfile.TemporaryDirectory(prefix="puppet-trees-") as scratch:
        manifest = repository(Path(scratch), args.modules)
        entries = sum(1 for _ in Path(scratch).rglob("*"))
        print(f"{entries} entries; ms per Manifest.of: median min max")
        for round_ in range(args.rounds):
            for tree in trees:
                python = str(tree / ".venv" / "bin" / "python")
                done = subprocess.run(
                    [python, "-c", PROBE, str(manifest), str(args.count)],
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                    env={"PYTHONDONTWRITEBYTECODE": "1", "PATH": "/usr/bin:/bin"},
                )
                said = done.stdout.strip() or done.stderr.strip().splitlines()[-1]
                print(f"round {round_ + 1} {tree}: {said}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
