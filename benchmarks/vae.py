"""VAE decode benchmark: the full-size FLUX.2 VAE decoding large images in one piece vs tile by
tile (what the engine does above ``--vae-tiling-pixels``): peak memory and seconds.

The VAE is the real architecture, built from FLUX.2's ``vae/config.json`` (:data:`FLUX2_VAE_CONFIG`,
the same for klein and dev: 84 M parameters) with random weights: memory and time do not depend
on the weights' values. Latents are random, of the shape the pipeline hands the VAE for the
generated size (:func:`~modelapi.series.params.generation_size`: 6198x2656 is generated at
6208x2656). Tiling uses the engine's own settings (:func:`~modelapi.engine.flux2.configure_vae_tiling`:
1024-px tiles, a quarter overlapping).

Each case runs in a fresh subprocess, so its peak resident memory (``VmHWM`` in
``/proc/self/status``: weights, activations and the output, everything torch allocated) is its
own, under an address-space cap (``RLIMIT_AS``; a case that needs more fails with an allocation
error and is reported as out of memory above the cap), and a time limit: a case still running
when it passes is stopped and reported with what it got through (tiles or decoder stages done,
the peak so far, and for tiled cases the total estimated from the tiles' area).

Usage::

    python benchmarks/vae.py                      # the default cases, fp32 on CPU
    python benchmarks/vae.py --cases 1024x1024:whole,2048x2048:tiled --timeout-s 600
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import selectors
import subprocess
import sys
import time

FLUX2_VAE_CONFIG = {
    "_class_name": "AutoencoderKLFlux2",
    "act_fn": "silu",
    "batch_norm_eps": 0.0001,
    "batch_norm_momentum": 0.1,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 32,
    "layers_per_block": 2,
    "mid_block_add_attention": True,
    "norm_num_groups": 32,
    "patch_size": [2, 2],
    "sample_size": 1024,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
}
"""``vae/config.json`` of black-forest-labs/FLUX.2-dev (FLUX.2 [klein] ships the same VAE)."""

DEFAULT_CASES = "1024x1024:whole,2048x2048:whole,2048x2048:tiled,6198x2656:tiled,6198x2656:whole"


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _gib(kib: float) -> float:
    return kib / 2**20


def child(width: int, height: int, tiled: bool, cap_gib: float, dtype_name: str) -> None:
    """One case, in this (fresh) process; one JSON line per event on stdout."""
    if cap_gib > 0:
        cap = int(cap_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    def say(**event: object) -> None:
        print(json.dumps({"t": round(time.perf_counter() - started, 2), "peak_gib": round(_gib(_status_kib("VmHWM")), 3),
                          **event}), flush=True)

    started = time.perf_counter()
    import torch
    from diffusers import AutoencoderKLFlux2

    from modelapi.engine.flux2 import configure_vae_tiling
    from modelapi.series.params import generation_size

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    config = {k: v for k, v in FLUX2_VAE_CONFIG.items() if not k.startswith("_") and k != "force_upcast"}
    vae = AutoencoderKLFlux2(**config).to(dtype).eval()
    configure_vae_tiling(vae)
    if tiled:
        vae.enable_tiling()
    gw, gh = generation_size(width, height)
    factor = 2 ** (len(FLUX2_VAE_CONFIG["block_out_channels"]) - 1)
    latents = torch.randn(1, FLUX2_VAE_CONFIG["latent_channels"], gh // factor, gw // factor, dtype=dtype)
    tiles = 0

    def on_decoder(module: object, args: tuple, output: object) -> None:
        nonlocal tiles
        tiles += 1
        h, w = args[0].shape[-2:]
        say(event="tile" if tiled else "decoder", n=tiles, latent=[int(h), int(w)])

    def on_stage(name: str):  # noqa: ANN202
        return lambda module, args, output: say(event="stage", stage=name)

    vae.decoder.register_forward_hook(on_decoder)
    if not tiled:
        vae.decoder.mid_block.register_forward_hook(on_stage("mid_block (attention over every latent pixel)"))
        for i, block in enumerate(vae.decoder.up_blocks):
            block.register_forward_hook(on_stage(f"up_block {i}"))
    say(event="ready", latents=list(latents.shape), generated=[gw, gh], params=sum(p.numel() for p in vae.parameters()))
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            image = vae.decode(latents, return_dict=False)[0]
    except (RuntimeError, MemoryError) as exc:  # the allocator refusing past RLIMIT_AS
        say(event="oom", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        return
    say(event="done", decode_s=round(time.perf_counter() - t0, 2), shape=list(image.shape))


def tile_areas(latent_h: int, latent_w: int, tile: int = 128, overlap: float = 0.25) -> list[int]:
    """Latent area of each tile diffusers' tiled_decode decodes, in order (rows, then columns)."""
    step = int(tile * (1 - overlap))
    return [min(tile, latent_h - i) * min(tile, latent_w - j)
            for i in range(0, latent_h, step) for j in range(0, latent_w, step)]


def run_case(width: int, height: int, tiled: bool, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child", f"{width}x{height}", "tiled" if tiled else "whole",
               str(args.mem_cap_gib), args.dtype]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    events: list[dict] = []
    selector = selectors.DefaultSelector()
    assert proc.stdout is not None
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + args.timeout_s
    timed_out = False
    sampled_kib = 0  # the child's VmHWM read from outside, between its own reports

    def sample() -> None:
        nonlocal sampled_kib
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        sampled_kib = max(sampled_kib, int(line.split()[1]))
        except (OSError, ValueError):
            pass

    while True:
        sample()
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            sample()
            proc.kill()
            break
        if not selector.select(timeout=min(left, 5.0)):
            if proc.poll() is not None:
                break
            continue
        line = proc.stdout.readline()
        if not line:
            break
        try:
            event = json.loads(line)
        except ValueError:
            continue
        events.append(event)
        print(f"    {event}", file=sys.stderr, flush=True)
    proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    return {"events": events, "timed_out": timed_out, "returncode": proc.returncode, "stderr": stderr[-2000:],
            "sampled_peak_gib": _gib(sampled_kib)}


def summarize(width: int, height: int, tiled: bool, result: dict, args: argparse.Namespace) -> str:
    events = result["events"]
    ready = next((e for e in events if e.get("event") == "ready"), None)
    last = events[-1] if events else {}
    peak = max([e["peak_gib"] for e in events] + [result["sampled_peak_gib"]], default=float("nan"))
    mode = "tiled" if tiled else "whole"
    if ready is None:
        return f"| {width}x{height} | {mode} | — | — | failed to start (rc {result['returncode']}): {result['stderr'][-300:]} |"
    base = ready["peak_gib"]
    done = next((e for e in events if e.get("event") == "done"), None)
    oom = next((e for e in events if e.get("event") == "oom"), None)
    if done is not None:
        return f"| {width}x{height} | {mode} | {done['decode_s']:.1f} | {peak:.2f} | completed (model + latents before decoding: {base:.2f} GiB) |"
    if oom is not None:
        seconds = oom["t"] - ready["t"]
        return (f"| {width}x{height} | {mode} | — | > {args.mem_cap_gib:.0f} (cap) | out of memory above the "
                f"{args.mem_cap_gib:.0f} GiB address-space cap after {seconds:.0f} s ({last.get('error', '')[:80]}) |")
    elapsed = args.timeout_s - ready["t"] if result["timed_out"] else last.get("t", 0) - ready["t"]
    if not result["timed_out"]:
        return (f"| {width}x{height} | {mode} | — | ≥ {peak:.2f} | died (rc {result['returncode']}) after {elapsed:.0f} s: "
                f"{result['stderr'][-200:]!r} |")
    if tiled:
        lh, lw = ready["latents"][-2:]
        areas = tile_areas(lh, lw)
        tiles = [e for e in events if e.get("event") == "tile"]
        done_area = sum(areas[: len(tiles)])
        if tiles:
            decode_so_far = tiles[-1]["t"] - ready["t"]
            estimate = decode_so_far * sum(areas) / done_area
            return (f"| {width}x{height} | {mode} | ~{estimate:.0f} (est.) | {peak:.2f} during {len(tiles)} of {len(areas)} tiles | "
                    f"stopped at the {args.timeout_s:.0f} s limit after {len(tiles)} of {len(areas)} tiles "
                    f"({decode_so_far:.0f} s); seconds estimated from the tiles' latent area |")
        return f"| {width}x{height} | {mode} | > {elapsed:.0f} | ≥ {peak:.2f} | no tile finished within the {args.timeout_s:.0f} s limit |"
    stages = [e["stage"] for e in events if e.get("event") == "stage"]
    where = f"last finished stage: {stages[-1]}" if stages else "still in the decoder's mid-block attention (no stage finished)"
    return (f"| {width}x{height} | {mode} | > {elapsed:.0f} | ≥ {peak:.2f} (so far) | stopped at the {args.timeout_s:.0f} s "
            f"limit; {where} |")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        size, mode, cap, dtype = argv[1:5]
        w, _, h = size.partition("x")
        child(int(w), int(h), mode == "tiled", float(cap), dtype)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES, help=f"comma-separated WxH:whole|tiled (default {DEFAULT_CASES})")
    parser.add_argument("--timeout-s", type=float, default=420.0, help="time limit per case, seconds (default 420)")
    parser.add_argument("--mem-cap-gib", type=float, default=20.0,
                        help="address-space cap per case (RLIMIT_AS), GiB; 0 = none (default 20)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="default float32")
    args = parser.parse_args(argv)

    import torch

    cases = []
    for text in args.cases.split(","):
        size, _, mode = text.strip().partition(":")
        w, _, h = size.lower().partition("x")
        cases.append((int(w), int(h), mode == "tiled"))
    print("# FLUX.2 VAE decode: whole vs tiled\n")
    print(f"- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"{_gib(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024):.0f} GiB RAM; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.dtype} on CPU")
    print(f"- AutoencoderKLFlux2 from FLUX.2's config (random weights), tiles of 1024 px (128 latent px), "
          f"overlap 1/4; per case: a fresh process, cap {args.mem_cap_gib:g} GiB address space, "
          f"limit {args.timeout_s:.0f} s")
    print("- peak = the process's peak resident memory (VmHWM): Python, torch, the VAE's weights, the "
          "latents, activations and the output image; load average = the machine's 1-minute load (2 cores: "
          "above ~2, other processes were competing for the CPU and the seconds are inflated)\n")
    print("| size | decode | seconds | peak GiB | note |")
    print("|---|---|---:|---:|---|", flush=True)
    for w, h, tiled in cases:
        print(f"  case {w}x{h} {'tiled' if tiled else 'whole'} ...", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        result = run_case(w, h, tiled, args)
        line = summarize(w, h, tiled, result, args)
        print(f"{line[:-2]}; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} |", flush=True)
    print(f"\n(latent tiles per size: 2048x2048 -> {len(tile_areas(256, 256))}, "
          f"6208x2656 -> {len(tile_areas(332, 776))}; a 1024x1024 decode is one tile's work)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
