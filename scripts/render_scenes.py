"""Render the embedded scenes to disk in the Taskonomy layout.

    python scripts/render_scenes.py --out /tmp/scenes --count 100 --resolution 64 --seed 0

writes /tmp/scenes/{rgb,depth_zbuffer,...}/point_{i}_view_0_domain_{modality}.png
for images i = start .. start+count-1, which `tasks.datasets.load_split` (or any
Taskonomy reader) reads back. The logic lives in `tasks.taskonomy`.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

if importlib.util.find_spec("tasks") is None:  # run from a checkout, not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tqdm import tqdm  # noqa: E402

from mtl.options import HelpFormatter  # noqa: E402
from tasks import taskonomy  # noqa: E402
from tasks.scene_data import SCENE_RESOLUTIONS  # noqa: E402
from tasks.registry import MODALITIES  # noqa: E402


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer >= {low}, got {value}")
        return value

    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--out", required=True, help="directory to write (created; must be empty if it exists)")
    parser.add_argument("--count", type=_int_at_least(1), required=True, help="number of images")
    parser.add_argument(
        "--resolution", type=_int_at_least(1), default=64,
        help=f"image size in pixels, {SCENE_RESOLUTIONS[0]}..{SCENE_RESOLUTIONS[1]}",
    )
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="scene seed")
    parser.add_argument("--start", type=_int_at_least(0), default=0, help="index of the first image")
    parser.add_argument(
        "--layout", choices=["taskonomy"], default="taskonomy", help="on-disk layout"
    )
    args = parser.parse_args(argv)

    lo, hi = SCENE_RESOLUTIONS
    if not lo <= args.resolution <= hi:
        parser.error(f"--resolution must be in {lo}..{hi}, got {args.resolution}")
    if os.path.exists(args.out) and (not os.path.isdir(args.out) or os.listdir(args.out)):
        parser.error(f"--out {args.out} exists and is not an empty directory; choose a new one")

    t0 = time.perf_counter()
    try:
        with tqdm(total=args.count, unit="image", desc="rendering", file=sys.stderr) as bar:
            taskonomy.render_to_taskonomy(
                args.out, count=args.count, resolution=args.resolution, seed=args.seed, start=args.start,
                progress=bar.update,
            )
    except OSError as e:
        print(f"error: cannot write {args.out}: {e}", file=sys.stderr)
        return 1
    print(
        f"wrote {args.count} scenes (seed {args.seed}, images {args.start}..{args.start + args.count - 1}, "
        f"{args.resolution}x{args.resolution}, {len(MODALITIES)} modalities) to {args.out} "
        f"in {time.perf_counter() - t0:.1f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
