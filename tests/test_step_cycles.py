"""benchmarks/step_cycles.py's sorting of perf samples, on a hand-made process map."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from step_cycles import KINDS, classify, parse_maps, summarize  # noqa: E402

MAPS = """\
7f0000000000-7f0000001000 r-xp 00000000 00:00 0 
7f0000100000-7f0000200000 rwxp 00000000 00:00 0 
7f0000300000-7f0000400000 rw-p 00000000 00:00 0 
7f1000000000-7f1000900000 r-xp 00100000 08:01 1234    /site-packages/jaxlib/libjax_common.so
7f2000000000-7f2000100000 r-xp 00028000 08:01 99      /usr/lib/x86_64-linux-gnu/libc.so.6
7f3000000000-7f3000100000 r-xp 00000000 08:01 77      /usr/lib/libpython3.11.so.1.0
7f4000000000-7f4000100000 r-xp 00000000 08:01 55      /usr/lib/libm.so.6
"""


@pytest.mark.parametrize("ip, symbol, kind", [
    (0x7F0000000800, "", "xla_compiled_kernels"),  # anonymous r-x: XLA's compiled code
    (0x7F0000150000, "", "onednn_jit_gemm"),  # anonymous rwx: oneDNN's generated kernels
    (0x7F0000350000, "", "other"),  # not executable
    (0x7F1000000010, "Eigen::internal::gemm_pack_colmajor_block<..., TensorImagePatchOp<...>>", "convolution_library"),
    (0x7F1000000010, "xla::cpu::internal::Pack2DPatches<float>", "convolution_library"),
    (0x7F1000000010, "Eigen::RunQueue<...>::PopBack", "jaxlib_other"),
    (0x7F2000000010, "_int_malloc", "libc"),
    (0x7F3000000010, "_PyEval_EvalFrameDefault", "python"),
    (0x7F4000000010, "__expf", "other"),
    (0xFFFFFFFF81000000, "exc_page_fault", "kernel"),
    (0x7F0000001000, "", "other"),  # one past the end of a mapping
    (0x1000, "", "other"),  # below every mapping
])
def test_classify(ip, symbol, kind):
    assert classify(ip, symbol, parse_maps(MAPS)) == kind


def test_summarize_splits_cpu_time_in_sample_proportions():
    regions = parse_maps(MAPS)
    samples = [(0x7F0000150000, "")] * 6 + [(0x7F1000000010, "Pack2DPatches")] * 2 + [(0x7F0000000800, "")] * 2
    out = summarize(samples, regions, cpu_seconds=4.0, steps=20)  # 200 core-ms per step
    assert out["samples"] == 10
    assert out["fraction"]["onednn_jit_gemm"] == pytest.approx(0.6)
    assert out["core_ms_per_step"]["onednn_jit_gemm"] == pytest.approx(120.0)
    assert out["core_ms_per_step"]["convolution_library"] == pytest.approx(40.0)
    assert out["core_ms_per_step"]["xla_compiled_kernels"] == pytest.approx(40.0)
    assert out["convolution_core_ms_per_step"] == pytest.approx(160.0)
    assert sum(out["fraction"][k] for k in KINDS) == pytest.approx(1.0)
