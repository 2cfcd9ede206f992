"""Shared helpers for the hand-run benchmarks: argument parsing, timing, machine info, results.

Timings are medians over ``--repeats`` runs after warm-up; when ours and the reference are
compared, their runs are interleaved (ours, ref, ours, ref, ...) so that a shared, loaded machine
slows both alike and the ratio stays meaningful.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "benchmarks.md"
for _p in (ROOT, ROOT / "tests"):  # the package and tests/reference.py (the reference on random weights)
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def parser(description: str, size: int = 1024, repeats: int = 3) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--size", type=int, nargs="+", default=[size], help="model image_size(s)")
    p.add_argument("--repeats", type=int, default=repeats, help="timed repeats (median reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    p.add_argument("--quick", action="store_true", help="smallest settings, for a smoke run")
    p.add_argument("--device", default=None, help="cpu / cuda / mps (default: cuda when present)")
    p.add_argument("--compile", action="store_true", help="torch.compile our model (CUDA)")
    p.add_argument("--no-reference", action="store_true", help="time ours only")
    p.add_argument("--no-save", action="store_true", help="print only, do not append to docs/benchmarks.md")
    return p


def setup(args: argparse.Namespace) -> torch.device:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    dev = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(dev)


def amp(device: torch.device):
    """bf16 autocast on CUDA (the official README's setting), a no-op elsewhere (fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1, device: torch.device | None = None) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    return interleaved({"fn": fn}, repeats, warmup, device)["fn"]


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                device: torch.device | None = None) -> dict[str, float]:
    """Median seconds per name, the candidates' runs interleaved round-robin."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            if device is not None:
                sync(device)
            t0 = time.perf_counter()
            fn()
            if device is not None:
                sync(device)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 GEMM rate (GFLOP/s) at the current thread count."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    t = median_time(lambda: a @ b, repeats, warmup=2)
    return 2 * n**3 / t / 1e9


def theoretical_peak_gflops(threads: int) -> tuple[float | None, str]:
    """fp32 peak = cores x GHz x FLOP/cycle (2 FMA units x vector lanes x 2). An upper bound:
    the clock is read from /proc/cpuinfo (or the model name) and 2 FMA ports are assumed."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.findall(r"^flags\s*:\s*(.*)$", info, re.M)[0].split()) if "flags" in info else set()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    fma = 2 if "fma" in flags else 1
    mhz = re.findall(r"cpu MHz\s*:\s*([\d.]+)", info)
    ghz = float(mhz[0]) / 1000 if mhz else None
    if ghz is None:
        return None, f"{lanes} fp32 lanes, clock unknown"
    per_cycle = 2 * lanes * fma  # two FMA ports, each lanes x (mul + add) when fma
    return threads * ghz * per_cycle, f"{threads} core(s) x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({lanes}-lane FMA x 2 ports)"


def machine_info(threads: int) -> str:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.findall(r"model name\s*:\s*(.*)", info)
    cpu = model[0] if model else platform.processor()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return (f"CPU {cpu}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
            f"threads {threads}, GPU {gpu}, load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def table(headers: list[str], rows: list[list[object]]) -> str:
    def fmt(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def report(title: str, headers: list[str], rows: list[list[object]], args: argparse.Namespace,
           notes: list[str] | None = None) -> str:
    """Print the table; append it with the command, date and machine to docs/benchmarks.md."""
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    text = "\n".join([
        f"### {title}", "",
        f"- command: `{cmd}`",
        f"- date: {when}",
        f"- machine: {machine_info(args.threads)}",
        *(f"- {n}" for n in (notes or [])),
        "", table(headers, rows), "", "",
    ])
    print(text)
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmarks\n\nAppended by the `bench/` scripts (see bench/README.md).\n\n")
        with RESULTS.open("a") as f:
            f.write(text)
    return text


def random_checkpoint(name: str, image_size: int, folder: Path, score_bias: float = 2.0) -> tuple[Path, torch.nn.Module]:
    """The reference ``SAM2Base`` on random weights and the same weights saved as Meta's .pt.

    ``score_bias`` is added to the object-score head so that tracked objects stay "present"
    (on random weights they would otherwise vanish and the video paths skip most work).
    """
    from reference import reference_sam2

    ref = reference_sam2(name, image_size)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    sd["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += score_bias
    path = Path(folder) / f"{name}_{image_size}.pt"
    torch.save({"model": sd}, path)
    return path, ref


def mosaic(h: int, w: int, n: int = 6, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 image: an n x n grid of flat rectangles and ellipses in random colours."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 40, np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n):
        for j in range(n):
            cy, cx = (i + 0.5) * h / n, (j + 0.5) * w / n
            dy = (yy - cy) / (rng.uniform(0.25, 0.45) * h / n)
            dx = (xx - cx) / (rng.uniform(0.25, 0.45) * w / n)
            inside = dx**2 + dy**2 < 1 if (i + j) % 2 else (abs(dx) < 1) & (abs(dy) < 1)
            img[inside] = rng.integers(60, 255, 3)
    return img


def ratio(ours: float, ref: float | None) -> float | str:
    return ours / ref if ref else "-"


def reference_image_predictor(model: torch.nn.Module, **kwargs):
    """Meta's ``SAM2ImagePredictor``; its backbone feature sizes are hard-coded for 1024 px."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(model, **kwargs)
    s = model.image_size
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
    return pred
