"""The compiled decode kernels (`block_linear.cpp`): built with the machine's C++ compiler on first use (~15 s),
kept in $XDG_CACHE_HOME/lamina/kernels (default ~/.cache/lamina/kernels: a machine's build, shared by every
LAMINA_HOME) under a name that hashes the source, the flags and the torch version, and loaded from there.

Where they cannot be built (no compiler, not x86-64 with AVX2), or LAMINA_TORCH_KERNELS=0, the decoder falls back
to ATen's int4 kernel, float16 copies and its own attention: the same answers up to rounding, about half the
single-stream decode speed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

log = logging.getLogger("lamina.torch")

# Defined here, in Python, so the TorchScript decode step compiles whether or not the kernels could be built; the
# C++ library only supplies their CPU implementations.
torch.library.define("lamina_torch::block_linear", "(Tensor x, Tensor blocks) -> Tensor")
torch.library.define(
    "lamina_torch::decode_attention",
    "(Tensor qkv, Tensor cos, Tensor sin_signed, Tensor(a!) cache_k, Tensor(b!) cache_v, Tensor positions, "
    "int n_heads, int n_kv_heads) -> Tensor",
)
torch.library.define(
    "lamina_torch::add_rms_norm", "(Tensor h, Tensor? delta, Tensor weight, Tensor hidden_eps) -> (Tensor, Tensor)"
)
torch.library.define("lamina_torch::silu_mul", "(Tensor gate_up) -> Tensor")

Q4_1_BYTES = 20  # per 32 weights: float16 scale, float16 offset, 16 bytes of 4-bit levels
Q8_0_BYTES = 34  # per 32 weights: float16 scale, 32 int8 levels
_SOURCE = Path(__file__).with_name("block_linear.cpp")
# -fopenmp: at::parallel_for splits work with OpenMP; linked to libgomp.so.1, the soname of the OpenMP runtime torch
# ships, so the loader reuses torch's and the kernels' threads are torch's intra-op threads.
# CPU_CAPABILITY: ATen's vector types (exp) in their AVX2 form.
_FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
_FLAGS += ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]


def available() -> bool:
    """Whether the compiled kernels serve decoding: not where LAMINA_TORCH_KERNELS=0 turns them off, nor where they
    cannot be built (`_build`)."""
    return os.environ.get("LAMINA_TORCH_KERNELS", "1") != "0" and _build()


@functools.cache
def _build() -> bool:
    """Build (first time on this machine) and load the kernels; False, with one warning, where that fails."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        log.warning("inline::torch: no compiled decode kernels for %s; using ATen's kernels", platform.machine())
        return False
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        log.warning("inline::torch: this CPU lacks AVX2; decoding with ATen's kernels")
        return False
    try:
        library = _compiled_library()
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        log.warning(
            "inline::torch: could not build the decode kernels (%s); decoding with ATen's kernels, about half as "
            "fast. Install a C++ compiler (g++) and restart to build them.",
            error,
        )
        return False
    return True


def _compiled_library() -> Path:
    from torch.utils import cpp_extension

    compiler = os.environ.get("CXX", "c++")
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    libraries = [f"-L{path}" for path in cpp_extension.library_paths()] + ["-lc10", "-ltorch_cpu", "-lgomp"]
    identity = hashlib.sha256(_SOURCE.read_bytes())
    identity.update(" ".join([compiler, abi, *_FLAGS, torch.__version__, sys.version]).encode())
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lamina" / "kernels"
    library = folder / f"lamina_torch_kernels-{identity.hexdigest()[:16]}.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    log.info("inline::torch: building the decode kernels (once, ~15 s) into %s", library)
    started = time.perf_counter()
    # Built under a name of its own and renamed into place: a concurrent build or a crash never leaves a partial file,
    # and no lock can go stale.
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        built = Path(scratch) / library.name
        command = [compiler, *_FLAGS, abi, *includes, str(_SOURCE), "-o", str(built), *libraries]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            errors = [line for line in lines if "error" in line] or lines
            raise RuntimeError(f"{compiler} failed: {errors[0] if errors else result.returncode}")
        built.replace(library)
    log.info("inline::torch: decode kernels built in %.1f s", time.perf_counter() - started)
    return library


def q4_1_blocks(weight: torch.Tensor) -> torch.Tensor:
    """float [out, in] -> uint8 [out, in / 32 * 20] (the layout `block_linear.cpp` documents): per 32 inputs,
    scale = (max - min) / 15 and offset = min, as GGUF's Q4_1, which this reproduces exactly from its dequantized
    weights."""
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // 32, 32)
    low = groups.amin(-1)
    scale = ((groups.amax(-1) - low) / 15).half()
    offset = low.half()
    step = scale.float().clamp(min=1e-12)[..., None]
    levels = torch.round((groups - offset.float()[..., None]) / step).clamp(0, 15).to(torch.uint8)
    packed = (levels[..., :16] | (levels[..., 16:] << 4)).reshape(out_features, -1)
    return torch.cat([scale.view(torch.uint8), offset.view(torch.uint8), packed], -1)


def q8_0_blocks(weight: torch.Tensor) -> torch.Tensor:
    """float [out, in] -> uint8 [out, in / 32 * 34]: per 32 inputs, scale = max |w| / 127 and int8 levels."""
    out_features, in_features = weight.shape
    groups = weight.float().reshape(out_features, in_features // 32, 32)
    scale = (groups.abs().amax(-1) / 127).half()
    levels = torch.round(groups / scale.float().clamp(min=1e-12)[..., None]).clamp(-127, 127).to(torch.int8)
    return torch.cat([scale.view(torch.uint8), levels.view(torch.uint8).reshape(out_features, -1)], -1)
