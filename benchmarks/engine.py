"""Engine benchmark: the engine wrapper vs bare diffusers pipeline calls with the same inputs;
time to the first image (``on_image``) vs the last of a series; seconds per image for a series
made by reference chaining (two pipeline calls) vs separate pipeline calls (one each), and peak
GPU memory.

1. Wrapper vs bare: ``Flux2Engine.generate`` against ``pipe(...)`` called directly with the same
   prompts, size, steps, guidance, seeded generators and text-encoder layers, in the same process
   on the same pipeline object (for a series: the two calls reference chaining makes, image 1 as
   the second call's reference). Runs alternate, the median of each is reported; ratio =
   bare / engine (1.0 = no overhead; target >= 0.98).
2. First vs last: a series of 4 through ``generate(..., on_image=...)``: seconds from the call to
   image 1 being handed over (after pass 1) and to the last (after pass 2); medians.
3. Chained vs separate, as before.

What runs where (no weights are needed anywhere; cost does not depend on the weights' values):

- ``--arch tiny`` (the default off cuda): the tiny random-weight pipeline of
  :mod:`modelapi.engine.tiny`, saved and loaded with ``from_pretrained`` like real weights. It
  measures the engine's own overhead and how chaining's extra reference tokens cost, not
  FLUX.2's speed.
- ``--arch klein-4b`` (the default on cuda): the full FLUX.2 [klein] 4B architecture built with
  random bf16 weights on the GPU: ``Flux2Transformer2DModel`` (5 double + 20 single blocks, 24
  heads x 128, ``joint_attention_dim=7680``; 3.88 B parameters), the FLUX.2 VAE
  (``AutoencoderKLFlux2`` defaults, 84 M) and a Qwen3-4B text encoder (36 layers x 2560; layers
  9, 18, 27 -> 7680-wide prompt embeddings of 512 tokens), run through ``Flux2Engine``.

Usage::

    python benchmarks/engine.py                                   # CPU: tiny pipeline
    python benchmarks/engine.py --device cuda --sizes 1024x1024,2048x2048 --steps 4 [--compile]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from modelapi.engine.base import GenerationSpec
from modelapi.engine.flux2 import Flux2Engine, text_encoder_out_layers
from modelapi.engine.tiny import make_scheduler, make_tiny, make_tokenizer

NOOP_PROGRESS = (lambda fraction: None)
NEVER_STOP = (lambda: False)

PROMPTS = [
    "a red fox in a snowy birch forest, morning light, photograph",
    "the same fox leaping over a frozen stream",
    "the same fox curled up asleep under a fallen tree",
    "the same fox watching the moon rise over the forest",
    "the same fox drinking from a stream at dusk",
    "the same fox trotting along a ridge in the wind",
]


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.lower().partition("x")
    return int(width), int(height)


def build_klein_4b_random(device: torch.device):
    """The FLUX.2 [klein] 4B pipeline architecture with random bf16 weights on ``device``."""
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        transformer = Flux2Transformer2DModel(
            patch_size=1,
            in_channels=128,
            num_layers=5,
            num_single_layers=20,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=7680,
            timestep_guidance_channels=256,
            axes_dims_rope=(32, 32, 32, 32),
            guidance_embeds=False,
        ).to(torch.bfloat16)
        vae = AutoencoderKLFlux2().to(torch.bfloat16)
        tokenizer = make_tokenizer()
        text_encoder = Qwen3ForCausalLM(
            Qwen3Config(
                hidden_size=2560,
                intermediate_size=9728,
                num_hidden_layers=36,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                vocab_size=151936,
                max_position_embeddings=40960,
                rope_theta=1_000_000.0,
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        ).to(torch.bfloat16)
    return Flux2KleinPipeline(
        scheduler=make_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def spec_for(prompts: list[str], width: int, height: int, steps: int, seed: int) -> GenerationSpec:
    return GenerationSpec(
        model_id="benchmark",
        prompts=prompts,
        width=width,
        height=height,
        requested_size=(width, height),
        seed=seed,
        num_inference_steps=steps,
    )


def _sync(engine: Flux2Engine) -> None:
    if engine.device.type == "cuda":
        torch.cuda.synchronize()


def bare_series(engine: Flux2Engine, spec: GenerationSpec, steps: int) -> list:
    """``spec``'s images made by calling the pipeline directly, as reference chaining does: image
    1, then images 2..N in one call with image 1 as the reference (the same inputs the engine
    passes, decoded by the pipeline itself)."""
    pipe = engine.pipe
    generator_device = engine.device if engine.device.type == "cuda" else torch.device("cpu")
    layers = text_encoder_out_layers(pipe)

    def call(prompts: list[str], seeds: list[int], image: list | None) -> list:
        return pipe(
            image=image, prompt=prompts, height=spec.height, width=spec.width, num_inference_steps=steps,
            guidance_scale=engine.guidance_for(spec), text_encoder_out_layers=layers,
            generator=[torch.Generator(device=generator_device).manual_seed(s) for s in seeds],
        ).images

    first = call(spec.prompts[:1], [spec.seed], None)
    if spec.count == 1:
        return first
    return first + call(spec.prompts[1:], [spec.seed + i for i in range(1, spec.count)], first)


def wrapper_vs_bare(engine: Flux2Engine, spec: GenerationSpec, steps: int, repeats: int) -> dict[str, float]:
    """``engine.generate(spec)`` vs :func:`bare_series`, runs alternating: median wall seconds
    and median CPU seconds (this process, all threads: less disturbed by other processes on a
    shared machine) of each, and the median of the paired wall ratios (bare / engine of
    neighbouring runs, which cancels slow drifts in the machine's load)."""
    runs: dict[str, list[tuple[float, float]]] = {"engine": [], "bare": []}
    for _ in range(repeats):
        for name, make in (("engine", lambda: engine.generate(spec, NOOP_PROGRESS, NEVER_STOP)),
                           ("bare", lambda: bare_series(engine, spec, steps))):
            _sync(engine)
            wall, cpu = time.perf_counter(), time.process_time()
            make()
            _sync(engine)
            runs[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        "engine_s": statistics.median(w for w, _ in runs["engine"]),
        "bare_s": statistics.median(w for w, _ in runs["bare"]),
        "engine_cpu_s": statistics.median(c for _, c in runs["engine"]),
        "bare_cpu_s": statistics.median(c for _, c in runs["bare"]),
        "paired": statistics.median(b[0] / e[0] for e, b in zip(runs["engine"], runs["bare"])),
    }


def first_vs_last(engine: Flux2Engine, spec: GenerationSpec, repeats: int) -> tuple[float, float]:
    """Median seconds from the call to the first ``on_image`` and to the last."""
    firsts, lasts = [], []
    for _ in range(repeats):
        handed: list[float] = []
        started = time.perf_counter()
        engine.generate(spec, NOOP_PROGRESS, NEVER_STOP, on_image=lambda i, image: handed.append(time.perf_counter() - started))
        firsts.append(handed[0])
        lasts.append(handed[-1])
    return statistics.median(firsts), statistics.median(lasts)


def timed(engine: Flux2Engine, specs: list[GenerationSpec], repeats: int = 1) -> tuple[float, float | None]:
    """Seconds to run ``specs`` one after another (the best of ``repeats`` runs), and peak GPU
    memory (GiB) over all runs, or None off cuda."""
    cuda = engine.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for spec in specs:
            engine.generate(spec, NOOP_PROGRESS, NEVER_STOP)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return best, peak


def _sizes(text: str) -> list[tuple[int, int]]:
    return [parse_size(s) for s in text.split(",") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, mps or cpu")
    parser.add_argument("--arch", choices=["auto", "tiny", "klein-4b"], default="auto",
                        help="auto: klein-4b on cuda, else tiny")
    parser.add_argument("--sizes", default=None,
                        help="chained vs separate: comma-separated WxH (multiples of 16); default 512x512,2560x1440 "
                        "(tiny) or 1024x1024,2048x2048 (klein-4b)")
    parser.add_argument("--ratio-sizes", default=None,
                        help="wrapper vs bare: WxH list; default 512x512,1024x1024,2560x1440 (tiny) or 1024x1024,2048x2048")
    parser.add_argument("--first-sizes", default=None,
                        help="first vs last image: WxH list; default 1024x1024,2560x1440 (tiny) or 2048x2048")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per pass (default 4)")
    parser.add_argument("--series", type=int, default=4, help="images per series (default 4)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="chained vs separate: timed runs per mode and size; the fastest is reported (default 2)")
    parser.add_argument("--ratio-repeats", type=int, default=7,
                        help="wrapper vs bare and first vs last: runs of each, medians reported (default 7)")
    parser.add_argument("--compile", action="store_true", help="the engine's --compile (GPU only)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: ratio, first, chained")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    args = parser.parse_args(argv)
    if not 2 <= args.series <= len(PROMPTS):
        parser.error(f"--series must be 2..{len(PROMPTS)}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    else:
        device = args.device
    arch = args.arch if args.arch != "auto" else ("klein-4b" if device.startswith("cuda") else "tiny")
    tiny = arch == "tiny"
    sizes = _sizes(args.sizes or ("512x512,2560x1440" if tiny else "1024x1024,2048x2048"))
    ratio_sizes = _sizes(args.ratio_sizes or ("512x512,1024x1024,2560x1440" if tiny else "1024x1024,2048x2048"))
    first_sizes = _sizes(args.first_sizes or ("1024x1024,2560x1440" if tiny else "2048x2048"))
    prompts = PROMPTS[: args.series]

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if tiny:
            engine = Flux2Engine.from_pretrained(str(make_tiny(Path(tmp) / "tiny")), device=device, compile=args.compile)
        else:
            pipe = build_klein_4b_random(torch.device(device))
            engine = Flux2Engine(
                pipe, weights="FLUX.2-klein-4B architecture, random bf16 weights", random_weights=True,
                compile=args.compile,
            )
        build_s = time.perf_counter() - started

        gpu = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else None
        print(f"# engine benchmark: {arch} on {engine.info.device} ({engine.info.dtype})\n")
        print(f"- torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
              f"{platform.processor() or platform.machine()}" + (f", GPU {gpu}" if gpu else ""))
        print(f"- build + load + warm-up: {build_s:.1f} s; steps per pass: {args.steps}; series: {args.series}; "
              f"compiled: {engine.compiled or 'no'}; load average at start: {os.getloadavg()[0]:.2f}\n")

        if "ratio" not in skip:
            print(f"## Engine wrapper vs bare pipeline calls (same inputs, alternating, medians of {args.ratio_repeats})\n")
            print("| size | images | engine s | bare s | bare / engine (wall) | paired | engine CPU s | bare CPU s | "
                  "bare / engine (CPU) |")
            print("|---|---:|---:|---:|---:|---:|---:|---:|---:|", flush=True)
            for width, height in ratio_sizes:
                for count in (1, args.series):
                    spec = spec_for(prompts[:count], width, height, args.steps, seed=0)
                    if not args.no_warmup:
                        wrapper_vs_bare(engine, spec_for(prompts[:count], width, height, 1, seed=0), 1, 1)
                    r = wrapper_vs_bare(engine, spec, args.steps, args.ratio_repeats)
                    print(f"| {width}x{height} | {count} | {r['engine_s']:.3f} | {r['bare_s']:.3f} | "
                          f"{r['bare_s'] / r['engine_s']:.3f} | {r['paired']:.3f} | {r['engine_cpu_s']:.3f} | "
                          f"{r['bare_cpu_s']:.3f} | {r['bare_cpu_s'] / r['engine_cpu_s']:.3f} |", flush=True)
            print()

        if "first" not in skip:
            print(f"## Time to the first image (on_image) vs the last, series of {args.series} (median of {args.ratio_repeats})\n")
            print("| size | first image s | last image s | first / last |")
            print("|---|---:|---:|---:|", flush=True)
            for width, height in first_sizes:
                spec = spec_for(prompts, width, height, args.steps, seed=0)
                if not args.no_warmup:
                    first_vs_last(engine, spec_for(prompts, width, height, 1, seed=0), 1)
                first_s, last_s = first_vs_last(engine, spec, args.ratio_repeats)
                print(f"| {width}x{height} | {first_s:.2f} | {last_s:.2f} | {first_s / last_s:.2f} |", flush=True)
            print()

        if "chained" not in skip:
            print(f"## Chained vs separate (best of {args.repeats})\n")
            print("- chained: 2 pipeline calls (image 1; then images 2..N batched, image 1 as reference)")
            print("- separate: N pipeline calls of 1 image each, no reference\n")
            print("| size | chained s/image | separate s/image | chained / separate | "
                  "peak GPU GiB chained | peak GPU GiB separate |")
            print("|---|---:|---:|---:|---:|---:|")
            for width, height in sizes:
                chained = [spec_for(prompts, width, height, args.steps, seed=0)]
                separate = [spec_for([p], width, height, args.steps, seed=i) for i, p in enumerate(prompts)]
                if not args.no_warmup:
                    timed(engine, [spec_for(prompts, width, height, 1, seed=0)])
                chained_s, chained_peak = timed(engine, chained, args.repeats)
                separate_s, separate_peak = timed(engine, separate, args.repeats)
                n = args.series

                def gib(value: float | None) -> str:
                    return "n/a" if value is None else f"{value:.1f}"

                print(f"| {width}x{height} | {chained_s / n:.2f} | {separate_s / n:.2f} | "
                      f"{chained_s / separate_s:.2f} | {gib(chained_peak)} | {gib(separate_peak)} |",
                      flush=True)
        print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
