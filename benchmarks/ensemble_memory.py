"""How many networks fit in one ensemble on this device.

For the 5-task network (seg, depth, normals, keypoints, edges), batch 32, at
32, 64 and 128 pixels: one member's training step measured by XLA's memory
analysis (`mtl.ensemble.member_memory_bytes`, without running it), the
device's free memory (`free_memory_bytes`) and the members an ensemble chunk
may hold (`MEMORY_FRACTION` of it). Writes
benchmarks/results/ensemble_memory_<platform>.json.

    python benchmarks/ensemble_memory.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from mtl.ensemble import MEMORY_FRACTION, free_memory_bytes, member_memory_bytes  # noqa: E402
from mtl.train import TrainConfig  # noqa: E402
from tasks.registry import MODALITIES, modalities_for, resolve_tasks  # noqa: E402

TASKS = "seg,depth,normals,keypoints,edges"


def main() -> None:
    tasks = resolve_tasks(TASKS)
    device = jax.devices()[0]
    free = free_memory_bytes(device)
    rows = []
    for res in (32, 64, 128):
        data = {}
        for m in modalities_for(tasks):  # abstract training data: 4,000 images in the stored encodings
            dtype, channels = MODALITIES[m]
            data[m] = jax.ShapeDtypeStruct((4000, res, res, *((channels,) if channels else ())), np.dtype(dtype))
        per = member_memory_bytes([tasks], TrainConfig(batch_size=32), data, "auto")
        rows.append({"resolution": res, "member_mib": per / 2**20, "members_that_fit": int(MEMORY_FRACTION * free // per)})
        print(f"{res:>4} px: {per / 2**20:6.1f} MiB per member -> {rows[-1]['members_that_fit']} members "
              f"in {free / 2**30:.1f} GiB free ({MEMORY_FRACTION:.0%} planned)")
    out = ROOT / "benchmarks" / "results" / f"ensemble_memory_{device.platform}.json"
    out.write_text(json.dumps({"device": {"platform": device.platform, "kind": device.device_kind},
                               "tasks": TASKS, "batch_size": 32, "free_bytes": free, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
