"""Engine benchmark: seconds per image for a series made by reference chaining (two pipeline
calls) vs the same images made by separate pipeline calls (one each), and peak GPU memory.

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

    python benchmarks/engine.py                                   # CPU: tiny, 512x512, series 4
    python benchmarks/engine.py --device cuda --sizes 1024x1024,2048x2048 --steps 4
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from modelapi.engine.base import GenerationSpec
from modelapi.engine.flux2 import Flux2Engine
from modelapi.engine.tiny import make_scheduler, make_tiny, make_tokenizer

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
            engine.generate(spec, lambda fraction: None, lambda: False)
        if cuda:
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return best, peak


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cuda, mps or cpu")
    parser.add_argument("--arch", choices=["auto", "tiny", "klein-4b"], default="auto",
                        help="auto: klein-4b on cuda, else tiny")
    parser.add_argument("--sizes", default=None,
                        help="comma-separated WxH (multiples of 16); default 512x512 (tiny) or "
                        "1024x1024,2048x2048 (klein-4b)")
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per pass (default 4)")
    parser.add_argument("--series", type=int, default=4, help="images per series (default 4)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed runs per mode and size; the fastest is reported (default 2)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up runs")
    args = parser.parse_args(argv)
    if not 2 <= args.series <= len(PROMPTS):
        parser.error(f"--series must be 2..{len(PROMPTS)}")

    if args.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    else:
        device = args.device
    arch = args.arch if args.arch != "auto" else ("klein-4b" if device.startswith("cuda") else "tiny")
    sizes_text = args.sizes or ("1024x1024,2048x2048" if arch == "klein-4b" else "512x512")
    sizes = [parse_size(s) for s in sizes_text.split(",") if s.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        if arch == "tiny":
            engine = Flux2Engine(str(make_tiny(Path(tmp) / "tiny")), device=device)
        else:
            pipe = build_klein_4b_random(torch.device(device))
            engine = Flux2Engine.from_pipeline(
                pipe, weights="FLUX.2-klein-4B architecture, random bf16 weights", random_weights=True
            )
        build_s = time.perf_counter() - started

        gpu = torch.cuda.get_device_name(engine.device) if engine.device.type == "cuda" else None
        print(f"# engine benchmark: {arch} on {engine.info['device']} ({engine.info['dtype']})\n")
        print(f"- torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
              f"{platform.processor() or platform.machine()}" + (f", GPU {gpu}" if gpu else ""))
        print(f"- build + load: {build_s:.1f} s; steps per pass: {args.steps}; series: {args.series}; "
              f"best of {args.repeats} timed runs")
        print("- chained: 2 pipeline calls (image 1; then images 2..N batched, image 1 as reference)")
        print("- separate: N pipeline calls of 1 image each, no reference\n")
        print("| size | chained s/image | separate s/image | chained / separate | "
              "peak GPU GiB chained | peak GPU GiB separate |")
        print("|---|---:|---:|---:|---:|---:|")
        for width, height in sizes:
            prompts = PROMPTS[: args.series]
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
