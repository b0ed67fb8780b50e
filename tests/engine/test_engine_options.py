"""The FLUX.2 engine's start-up options on the tiny random-weight pipeline, on CPU: warm-up,
``compile`` (regional torch.compile), ``offload`` and ``attention_backend``, and load_engine
passing them from the settings. The GPU options do nothing on CPU (said in the log); the compiled
path is exercised with torch.compile's graph capture and a recording backend, which needs no GPU
and no C++ compiler."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
from PIL import Image

from modelapi.core.config import Settings
from modelapi.engine import load_engine
from modelapi.engine.base import GenerationSpec
from modelapi.engine.errors import EngineError
from modelapi.engine.flux2 import Flux2Engine, compile_transformer
from modelapi.engine.tiny import build_tiny_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _restore_attention_backend() -> Iterator[None]:
    """set_attention_backend also sets diffusers' process-wide active backend."""
    active, _ = _AttentionBackendRegistry.get_active_backend()
    yield
    _AttentionBackendRegistry.set_active_backend(active)


def spec_for(prompts: list[str], width: int = 96, height: int = 64, references: int = 0, steps: int = 2) -> GenerationSpec:
    return GenerationSpec(
        model_id="bytedance/seedream-4-0/sequential",
        prompts=prompts,
        width=width,
        height=height,
        requested_size=(width, height),
        seed=3,
        references=[Image.new("RGB", (100, 80), (40, 90, 200))] * references,
        num_inference_steps=steps,
    )


def run(engine: Flux2Engine, spec: GenerationSpec) -> list[np.ndarray]:
    return [np.asarray(image) for image in engine.generate(spec, lambda fraction: None, lambda: False)]


def test_start_up_runs_one_light_warm_up_generation(tiny_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    specs: list[GenerationSpec] = []
    generate = Flux2Engine.generate

    def spy(self: Flux2Engine, spec: GenerationSpec, *args, **kwargs) -> list[Image.Image]:  # noqa: ANN002, ANN003
        specs.append(spec)
        return generate(self, spec, *args, **kwargs)

    monkeypatch.setattr(Flux2Engine, "generate", spy)
    Flux2Engine.from_pretrained(str(tiny_path), device="cpu")
    # On CPU: one image, one step, 64 px, with one reference (the VAE's encoder runs too).
    assert [(s.count, s.width, s.height, len(s.references), s.num_inference_steps) for s in specs] == [(1, 64, 64, 1, 1)]
    specs.clear()
    Flux2Engine.from_pretrained(str(tiny_path), device="cpu", warmup=False)
    assert specs == []


def test_a_compiled_transformer_compiles_nothing_after_the_full_warm_up() -> None:
    graphs: list[torch.fx.GraphModule] = []

    def recording_backend(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(gm)
        return gm.forward

    plain = Flux2Engine(build_tiny_pipeline(), weights="tiny", random_weights=True, warmup=False)
    engine = Flux2Engine(build_tiny_pipeline(), weights="tiny", random_weights=True, warmup=False)
    assert compile_transformer(engine.pipe.transformer, backend=recording_backend, fullgraph=True, dynamic=True) == "regional"
    blocks = [*engine.pipe.transformer.transformer_blocks, *engine.pipe.transformer.single_transformer_blocks]
    assert all(block._compiled_call_impl is not None for block in blocks)
    assert engine.pipe.transformer._compiled_call_impl is None  # regional: the blocks only

    engine.warm_up(full=True)  # what an accelerator runs at start
    compiled_at_start = len(graphs)
    assert compiled_at_start > 0
    # Other sizes, batch sizes and reference counts than the warm-up's: no new graph.
    for spec in (spec_for(["a", "b", "c"]), spec_for(["a"], 128, 128), spec_for(["a", "b", "c", "d"], 128, 64, references=2)):
        ours, theirs = run(engine, spec), run(plain, spec)
        assert all(np.array_equal(x, y) for x, y in zip(ours, theirs, strict=True))
    assert len(graphs) == compiled_at_start


@pytest.mark.parametrize("offload", ["model", "sequential"])
def test_gpu_options_do_nothing_on_cpu_and_say_so(
    tiny_path: Path, offload: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("INFO", logger="modelapi.engine"):
        engine = Flux2Engine.from_pretrained(str(tiny_path), device="cpu", compile=True, offload=offload)  # type: ignore[arg-type]
    assert f"--offload {offload} does nothing on cpu" in caplog.text
    assert "--compile does nothing on cpu" in caplog.text
    assert engine.compiled is None and engine.pipe.transformer.transformer_blocks[0]._compiled_call_impl is None
    assert not hasattr(engine.pipe.transformer, "_hf_hook")  # no accelerate offload hooks
    plain = Flux2Engine.from_pretrained(str(tiny_path), device="cpu", warmup=False)
    spec = spec_for(["a", "b"])
    assert all(np.array_equal(x, y) for x, y in zip(run(engine, spec), run(plain, spec), strict=True))


def test_an_unknown_offload_mode_is_a_clear_error(tiny_path: Path) -> None:
    with pytest.raises(EngineError, match="unknown offload mode 'disk'.*none, model, sequential"):
        Flux2Engine.from_pretrained(str(tiny_path), device="cpu", offload="disk")  # type: ignore[arg-type]


def test_an_attention_backend_runs_the_transformer(tiny_path: Path) -> None:
    engine = Flux2Engine.from_pretrained(str(tiny_path), device="cpu", attention_backend="_native_math")
    processors = [m.processor for m in engine.pipe.transformer.modules() if hasattr(m, "processor")]
    assert processors and all(p._attention_backend == AttentionBackendName._NATIVE_MATH for p in processors)
    plain = Flux2Engine.from_pretrained(str(tiny_path), device="cpu", warmup=False)
    spec = spec_for(["a", "b"])
    for x, y in zip(run(engine, spec), run(plain, spec), strict=True):
        assert np.abs(x.astype(int) - y).max() <= 1  # the math kernel vs SDPA's fused one


@pytest.mark.parametrize(
    ("backend", "message"),
    [
        ("flash_attention_9", "unknown attention backend 'flash_attention_9': diffusers knows .*_native_math"),
        ("flash", "'flash' cannot be used here: .*flash-attn"),  # its package is not installed
        # Known and installed, but no CUDA: the warm-up finds out at start, not a request.
        ("_native_cudnn", "the warm-up generation failed: .*scaled_dot_product_attention"),
    ],
)
def test_an_attention_backend_that_cannot_run_is_a_clear_error_at_start(tiny_path: Path, backend: str, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        Flux2Engine.from_pretrained(str(tiny_path), device="cpu", attention_backend=backend)


def test_load_engine_passes_the_options_from_the_settings(tiny_path: Path, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, engine="flux2", model=str(tiny_path), device="cpu", vae_tiling_pixels=123_456,
        compile=True, offload="model", attention_backend="_native_math",
    )
    engine = load_engine(settings)
    assert isinstance(engine, Flux2Engine)
    assert engine.vae_tiling_pixels == 123_456
    assert engine.pipe.transformer.transformer_blocks[0].attn.processor._attention_backend == AttentionBackendName._NATIVE_MATH
    assert engine.compiled is None  # on CPU
