"""The compiled decode kernels (`block_linear.cpp`): built with the machine's C++ compiler on first use (~15 s),
kept in $XDG_CACHE_HOME/lamina/kernels (default ~/.cache/lamina/kernels: a machine's build, shared by every
LAMINA_HOME) under a name that hashes the source, the flags and the torch version, and loaded from there.

Where they cannot be built (no compiler, not x86-64 with AVX2), or LAMINA_TORCH_KERNELS=0, the decoder falls back
to ATen's int4 kernel, float16 copies and its own attention, and the sampler to numpy (`sampling._sample`): the same
answers up to rounding, about half the single-stream decode speed.
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
torch.library.define(
    "lamina_torch::sample", "(Tensor logits, float temperature, float top_p, float min_p, float uniform) -> int"
)

Q4_1_BYTES = 20  # per 32 weights: float16 scale, float16 offset, 16 bytes of 4-bit levels
Q8_0_BYTES = 34  # per 32 weights: float16 scale, 32 int8 levels
_WIDTH = 8  # output features `block_linear` takes interleaved (kWidth in block_linear.cpp)
_SOURCE = Path(__file__).with_name("block_linear.cpp")
# -fopenmp: at::parallel_for splits work with OpenMP; linked to libgomp.so.1, the soname of the OpenMP runtime torch
# ships, so the loader reuses torch's and the kernels' threads are torch's intra-op threads.
# CPU_CAPABILITY: ATen's vector types (exp) in their AVX2 form.
_FLAGS = ["-O3", "-mavx2", "-mfma", "-mf16c", "-fopenmp", "-shared", "-fPIC", "-std=c++17"]
_FLAGS += ["-DCPU_CAPABILITY=AVX2", "-DCPU_CAPABILITY_AVX2"]


def _cpu_flags() -> list[str]:
    """The compiler flags of the instructions this CPU adds to AVX2 that the kernels use: VNNI's fused int8 dot
    product (one instruction for maddubs + madd), as AVX-VNNI or as AVX-512 VNNI on 256-bit vectors. They are part of
    the library's name, so a kernel cache shared by unlike machines keeps one build per kind."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    if "avx_vnni" in flags:
        return ["-mavxvnni"]
    if "avx512_vnni" in flags and "avx512vl" in flags:
        return ["-mavx512vnni", "-mavx512vl"]
    return []


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
    flags = [*_FLAGS, *_cpu_flags()]
    identity = hashlib.sha256(_SOURCE.read_bytes())
    identity.update(" ".join([compiler, abi, *flags, torch.__version__, sys.version]).encode())
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
        command = [compiler, *flags, abi, *includes, str(_SOURCE), "-o", str(built), *libraries]
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


def interleave(blocks: torch.Tensor, in_features: int) -> torch.Tensor:
    """Row-per-feature blocks (`q4_1_blocks`, `q8_0_blocks`: the converted-weight cache's format) -> the layout
    `block_linear` reads (documented in `block_linear.cpp`): features in groups of 8, each group's blocks in turn,
    with the 4 inputs a maddubs takes of all 8 features side by side. Same shape and size."""
    out_features, row_bytes = blocks.shape
    full = out_features // _WIDTH * _WIDTH
    parts = []
    if full:
        parts.append(_interleave_groups(blocks[:full].reshape(full // _WIDTH, _WIDTH, row_bytes), in_features))
    if full < out_features:  # the last group, narrower
        parts.append(_interleave_groups(blocks[full:].unsqueeze(0), in_features))
    return torch.cat([part.reshape(-1) for part in parts]).reshape(blocks.shape)


def _interleave_groups(groups: torch.Tensor, in_features: int) -> torch.Tensor:
    """[groups, width, bytes per feature] -> [groups, bytes per group], each group laid out as `interleave` says."""
    count, width, _ = groups.shape
    n = in_features // 32

    def by_block(part: torch.Tensor) -> torch.Tensor:  # [count, width, n * size] -> [count, n, width * size]
        return part.reshape(count, width, n, -1).transpose(1, 2).reshape(count, n, -1)

    def by_chunk(levels: torch.Tensor) -> torch.Tensor:  # [count, width, n, 32] -> [count, n, 8 chunks, width, 4]
        return levels.reshape(count, width, n, 8, 4).permute(0, 2, 3, 1, 4)

    if groups.shape[-1] == n * Q4_1_BYTES:
        packed = groups[..., 4 * n :].reshape(count, width, n, 16)
        chunks = by_chunk(torch.cat([packed & 15, packed >> 4], -1))
        nibbles = (chunks[:, :, :4] | (chunks[:, :, 4:] << 4)).reshape(count, n, -1)
        parts = [by_block(groups[..., : 2 * n]), by_block(groups[..., 2 * n : 4 * n]), nibbles]
    else:
        levels = by_chunk(groups[..., 2 * n :].reshape(count, width, n, 32)).reshape(count, n, -1)
        parts = [by_block(groups[..., : 2 * n]), levels]
    return torch.cat(parts, -1).reshape(count, -1)
