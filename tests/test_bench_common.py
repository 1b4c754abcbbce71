"""benchmarks/_common.py: the machine description every benchmark writes next to its figures."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _common import machine, simd_flags  # noqa: E402

CPUINFO = """processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512_bf16 bmi2 amx_tile
processor\t: 1
flags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512_bf16 bmi2 amx_tile
"""


def test_simd_flags_keep_only_vector_units_sorted():
    assert simd_flags(CPUINFO) == ["amx_tile", "avx", "avx2", "avx512_bf16", "avx512f", "f16c", "fma"]


def test_simd_flags_without_a_flags_line_is_empty():
    assert simd_flags("processor\t: 0\n") == []


def test_machine_records_the_flags():
    assert isinstance(machine()["cpu_flags"], list)
