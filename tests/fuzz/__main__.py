"""`make fuzz`: the contract fuzzer for a while (FUZZ_SECONDS) against a fresh deployment.

The schemathesis command line with every check and ours (`tests/support/contract.py`), as the
admin (every operation), a fixed seed; prints its summary (operations, cases, failures by
check) and exits with its code: 0 when it found nothing.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.support import contract
from tests.support.api import running_api
from tests.support.broker import TEST_PORT, running_broker
from tests.support.environment import TOKENS
from tests.support.processes import ROOT

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
GRACE_S = 600  # after --max-time: the phase under way ends, failures are shrunk


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)))
    parser.add_argument("--role", choices=sorted(TOKENS), default="admin")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-examples", type=int, default=1000, help="per operation and phase")
    return parser.parse_args(argv)


def command(base: str, config: Path, args: argparse.Namespace) -> list[str]:
    return [str(SCHEMATHESIS), "--config-file", str(config), "run", f"{base}/openapi.json",
            "--checks", "all", "--max-time", str(args.seconds), "--workers", str(args.workers),
            "--exclude-path-regex", contract.NOT_FUZZED, "--no-color"]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    with (
        running_broker(ROOT / "var", port=TEST_PORT) as bootstrap,
        tempfile.TemporaryDirectory(prefix="fuzz-") as scratch,
        running_api(bootstrap, Path(scratch)) as api,
    ):
        config = Path(scratch) / "schemathesis.toml"
        config.write_text(contract.toml(TOKENS[args.role], args.max_examples))
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.support.contract",
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        run = subprocess.run(command(api.base, config, args), cwd=scratch, env=env,
                             timeout=args.seconds + GRACE_S)  # fmt: skip
        return run.returncode


if __name__ == "__main__":
    raise SystemExit(main())
