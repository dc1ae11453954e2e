"""Command line of the test kit: `python -m revise_core.testing write-tiny-models DIR`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..cli import add_debug_flag
from ..cli import run as run_cli
from . import write_tiny_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m revise_core.testing", description="Tiny random models built from the real diffusers / transformers classes.")
    sub = parser.add_subparsers(dest="command", required=True)
    write = sub.add_parser("write-tiny-models", help="write a complete tiny model set in every supported layout")
    write.add_argument("out_dir", type=Path, help="folder to write (created if missing)")
    write.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    add_debug_flag(write)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    manifest = write_tiny_models(args.out_dir, seed=args.seed)
    print(f"wrote {len(manifest['files'])} files; manifest: {args.out_dir / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
