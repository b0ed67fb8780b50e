"""The FLUX.2 engine end to end on the tiny random-weight pipeline (real diffusers classes,
saved with save_pretrained and loaded with from_pretrained), on CPU."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dataclasses

import huggingface_hub
import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from modelapi.catalog import models
from modelapi.engine.base import EngineInfo, GenerationSpec
from modelapi.engine.errors import EngineError, GenerationStopped
from modelapi.engine.flux2 import Flux2Engine
from modelapi.engine.weights import DEFAULT_MODEL_ID, resolve_default_model
from modelapi.series.params import prepare
from modelapi.engine.tiny import RANDOM_WEIGHTS_MARKER, build_tiny_pipeline, make_tiny

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def engine(tiny_path: Path) -> Flux2Engine:
    return Flux2Engine.from_pretrained(str(tiny_path), device="cpu")


@pytest.fixture
def hub_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty Hugging Face hub cache, offline (huggingface_hub's documented settings)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def put_in_hub_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Lay ``folder`` out as the hub cache's snapshot of ``repo_id`` at revision main."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def spec_for(
    prompts: list[str], *, width: int = 64, height: int = 64, seed: int = 1,
    requested: tuple[int, int] | None = None, **kw,
) -> GenerationSpec:
    return GenerationSpec(
        model_id="bytedance/seedream-4-0/sequential",
        prompts=prompts,
        width=width,
        height=height,
        requested_size=requested or (width, height),
        seed=seed,
        **kw,
    )


def run(engine: Flux2Engine, spec: GenerationSpec) -> list[Image.Image]:
    return engine.generate(spec, lambda fraction: None, lambda: False)


def pixels(images: list[Image.Image]) -> list[np.ndarray]:
    return [np.asarray(image) for image in images]


def test_make_tiny_writes_a_marked_pipeline_folder(tiny_path: Path) -> None:
    index = json.loads((tiny_path / "model_index.json").read_text())
    assert index["_class_name"] == "Flux2KleinPipeline"
    assert json.loads((tiny_path / RANDOM_WEIGHTS_MARKER).read_text())["random_weights"] is True
    with pytest.raises(FileExistsError):
        make_tiny(tiny_path)


def test_make_tiny_is_reproducible(tiny_path: Path, tmp_path: Path) -> None:
    again = make_tiny(tmp_path / "again")
    for name in ("transformer/diffusion_pytorch_model.safetensors", "vae/diffusion_pytorch_model.safetensors",
                 "text_encoder/model.safetensors", "tokenizer/tokenizer.json"):
        assert (again / name).read_bytes() == (tiny_path / name).read_bytes(), name


def test_loads_with_from_pretrained_and_reports_random_weights(engine: Flux2Engine, tiny_path: Path) -> None:
    assert engine.info == EngineInfo(engine="flux2-klein", weights=str(tiny_path), random_weights=True, device="cpu",
                                     dtype="float32", default_steps=4, default_guidance=1.0)


def test_series_has_count_images_of_the_exact_size(engine: Flux2Engine) -> None:
    images = run(engine, spec_for(["a fox", "the fox runs", "the fox sleeps"], width=128, height=96))
    assert len(images) == 3
    assert all(image.size == (128, 96) and image.mode == "RGB" for image in images)


def test_one_image_at_256(engine: Flux2Engine) -> None:
    (image,) = run(engine, spec_for(["a lighthouse"], width=256, height=256))
    assert image.size == (256, 256)


def test_same_spec_same_pixels_other_seed_other_pixels(engine: Flux2Engine) -> None:
    first = pixels(run(engine, spec_for(["a", "b"], seed=5)))
    again = pixels(run(engine, spec_for(["a", "b"], seed=5)))
    other = pixels(run(engine, spec_for(["a", "b"], seed=6)))
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(first, other, strict=True))


def test_image_i_uses_seed_plus_i(engine: Flux2Engine) -> None:
    # Image 1 of a series seeded 10 is made exactly like a single image seeded 10.
    series = pixels(run(engine, spec_for(["a", "b", "c"], seed=10)))
    single = pixels(run(engine, spec_for(["a"], seed=10)))
    assert np.array_equal(series[0], single[0])


def test_references_make_count_images(engine: Flux2Engine) -> None:
    references = [Image.fromarray(skimage.data.astronaut()), Image.fromarray(skimage.data.chelsea())]
    spec = spec_for(["the astronaut", "with the cat", "on the moon"], width=96, height=64, references=references)
    images = run(engine, spec)
    assert [image.size for image in images] == [(96, 64)] * 3
    plain = pixels(run(engine, spec_for(spec.prompts, width=96, height=64)))
    assert not np.array_equal(pixels(images)[0], plain[0])  # the references were used


def test_on_image_hands_over_each_final_image_as_soon_as_it_exists(engine: Flux2Engine) -> None:
    events: list[tuple] = []
    spec = spec_for(["a", "b", "c"], width=80, height=64, requested=(70, 50), num_inference_steps=2)
    images = engine.generate(
        spec,
        lambda fraction: events.append(("progress", fraction)),
        lambda: False,
        on_image=lambda i, image: events.append(("image", i, image)),
    )
    handed = [e for e in events if e[0] == "image"]
    assert [e[1] for e in handed] == [0, 1, 2]
    assert all(e[2] is image for e, image in zip(handed, images, strict=True))  # the returned objects
    assert all(image.size == (70, 50) for image in images)  # final: cropped
    # Image 1 comes right after pass 1's two steps, before pass 2 starts; 2 and 3 after pass 2.
    assert [e[:2] for e in events] == [
        ("progress", 0.25), ("progress", 0.5), ("image", 0),
        ("progress", 0.75), ("progress", 1.0), ("image", 1), ("image", 2),
    ]


def test_an_on_image_error_stops_the_series_and_the_engine_goes_on(engine: Flux2Engine) -> None:
    class StoreFailed(Exception):
        pass

    def fail(index: int, image: Image.Image) -> None:
        raise StoreFailed(index)

    steps: list[float] = []
    with pytest.raises(StoreFailed):
        engine.generate(spec_for(["a", "b"], num_inference_steps=1), steps.append, lambda: False, on_image=fail)
    assert steps == [0.5]  # pass 2 never ran
    assert len(run(engine, spec_for(["a", "b"]))) == 2


def test_the_engine_makes_what_bare_pipeline_calls_make(engine: Flux2Engine) -> None:
    # Same inputs: image 1 from prompt 1 (seed), then images 2..3 in one call with image 1 as
    # the reference (seeds + 1, + 2). The engine decodes the latents itself, one by one.
    spec = spec_for(["a fox", "the fox runs", "the fox sleeps"], width=96, height=64, seed=4)
    images = run(engine, spec)

    def bare(prompts: list[str], seeds: list[int], image: list[Image.Image] | None = None) -> list[Image.Image]:
        return engine.pipe(
            image=image, prompt=prompts, height=64, width=96, num_inference_steps=4, guidance_scale=1.0,
            generator=[torch.Generator().manual_seed(s) for s in seeds], text_encoder_out_layers=(1,),
        ).images

    (first,) = bare(["a fox"], [4])
    rest = bare(["the fox runs", "the fox sleeps"], [5, 6], image=[first])
    for ours, theirs in zip(pixels(images), pixels([first, *rest]), strict=True):
        assert np.abs(ours.astype(int) - theirs).max() <= 1  # batched vs one-by-one decoding


def test_dreamina_scale_reaches_the_default_family_as_reference_detail(
    engine: Flux2Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Through prepare() as the server does: scale 1 gives each reference a quarter of the
    # pipeline's 1 MP (half its side), dreamina's default 0.5 leaves it whole; distilled klein
    # always gets guidance 1.0.
    seen: list[tuple[list[tuple[int, int]], float]] = []
    pipeline_call = type(engine.pipe).__call__

    def spy(pipe, *args, **kwargs):  # noqa: ANN001, ANN202
        seen.append(([im.size for im in kwargs["image"] or []], kwargs["guidance_scale"]))
        return pipeline_call(pipe, *args, **kwargs)

    monkeypatch.setattr(type(engine.pipe), "__call__", spy)
    model = models()["bytedance/dreamina-4-0/edit"]
    reference = Image.fromarray(skimage.data.astronaut()).resize((1024, 1024))
    for scale in (1.0, 0.5):
        inputs = {"prompt": "the astronaut on the moon", "width×height": "1024x1024(1:1)", "scale": scale}
        spec = dataclasses.replace(prepare(model, inputs, [reference], seed=1), num_inference_steps=1)
        assert spec.scale == scale and spec.guidance_scale is None
        (image,) = run(engine, spec)
        assert image.size == (1024, 1024)
    assert seen == [([(512, 512)], 1.0), ([(1024, 1024)], 1.0)]
    assert engine.reference_area_for(spec_for(["x"], scale=0.75)) == 1024 * 1024 // 2
    assert engine.reference_area_for(spec_for(["x"], scale=0.0)) == 1024 * 1024
    with pytest.raises(EngineError, match="scale"):
        run(engine, spec_for(["x"], scale=1.5))


def test_scale_multiplies_guidance_where_the_family_uses_it() -> None:
    pipe = build_tiny_pipeline()
    pipe.register_to_config(is_distilled=False)  # klein "base": real classifier-free guidance
    base = Flux2Engine(pipe, weights="tiny klein base", random_weights=True, warmup=False)
    assert base.info.default_guidance == 4.0
    assert [base.guidance_for(spec_for(["x"], scale=s)) for s in (0.0, 0.5, 1.0)] == [2.0, 4.0, 8.0]
    assert base.guidance_for(spec_for(["x"])) == 4.0  # seedream: no scale
    assert base.guidance_for(spec_for(["x"], scale=1.0, guidance_scale=3.0)) == 3.0  # explicit wins
    assert base.reference_area_for(spec_for(["x"], scale=1.0)) == 1024 * 1024 // 4  # same mapping


def test_above_the_threshold_the_vae_decodes_tiled_to_the_same_size(
    tiny_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Flux2Engine.from_pretrained(str(tiny_path), device="cpu", vae_tiling_pixels=1024 * 1024)
    vae = engine.pipe.vae
    tiled: list[tuple[int, ...]] = []
    tiled_decode = vae.tiled_decode
    monkeypatch.setattr(vae, "tiled_decode", lambda z, **kw: tiled.append(tuple(z.shape)) or tiled_decode(z, **kw))
    decoder_inputs: list[tuple[int, ...]] = []
    vae.decoder.register_forward_pre_hook(lambda module, args: decoder_inputs.append(tuple(args[0].shape)))
    tiled_encodes: list[tuple[int, ...]] = []
    tiled_encode = vae._tiled_encode
    monkeypatch.setattr(vae, "_tiled_encode", lambda x: tiled_encodes.append(tuple(x.shape)) or tiled_encode(x))

    spec = spec_for(["a", "b"], width=1280, height=1040, requested=(1275, 1030), num_inference_steps=1)
    assert engine.tiled_for(spec)  # 1280 x 1040 > 1024 x 1024
    images = run(engine, spec)
    assert [image.size for image in images] == [(1275, 1030)] * 2
    assert tiled == [(1, 4, 130, 160)] * 2  # each image's latents (1/8 of its size), one at a time
    # Tiles of 128 latent px (1024 px), a quarter overlapping: rows at 0 and 96, columns at 0 and 96.
    assert decoder_inputs == [(1, 4, 128, 128), (1, 4, 128, 64), (1, 4, 34, 128), (1, 4, 34, 64)] * 2
    # Only decoding tiles: pass 2 encodes image 1 as its reference (resized by the pipeline to
    # 1136x912, wider than one tile) in one piece.
    assert tiled_encodes == [] and vae.use_tiling is False

    decoder_inputs.clear()
    (small,) = run(engine, spec_for(["a"], width=1024, height=1024, num_inference_steps=1))
    assert small.size == (1024, 1024) and len(tiled) == 2  # 1 MP is not above: one piece
    assert decoder_inputs == [(1, 4, 128, 128)]


def test_progress_is_monotonic_over_both_passes_and_ends_at_one(engine: Flux2Engine) -> None:
    seen: list[float] = []
    engine.generate(spec_for(["a", "b", "c"], num_inference_steps=3), seen.append, lambda: False)
    assert len(seen) == 6  # 3 steps x 2 passes
    assert seen == sorted(seen) and 0 < seen[0] and seen[-1] == 1.0


def test_should_stop_raises_generation_stopped_between_steps(engine: Flux2Engine) -> None:
    seen: list[float] = []
    with pytest.raises(GenerationStopped):
        engine.generate(spec_for(["a", "b"]), seen.append, lambda: len(seen) >= 2)
    assert seen == [0.125, 0.25]
    assert len(run(engine, spec_for(["a"]))) == 1  # the engine still works afterwards


def test_references_smaller_than_64_px_are_upscaled(engine: Flux2Engine) -> None:
    tiny_ref = Image.new("RGB", (20, 16), (200, 30, 30))  # the edit-sequential schema accepts > 14 px
    images = run(engine, spec_for(["a", "b"], references=[tiny_ref]))
    assert [im.size for im in images] == [(64, 64), (64, 64)]


def test_size_not_a_multiple_of_16_is_refused(engine: Flux2Engine) -> None:
    with pytest.raises(EngineError, match="multiple of 16"):
        run(engine, spec_for(["a"], width=72))


def test_exact_size_is_the_central_crop_of_the_generated_one(engine: Flux2Engine) -> None:
    # 70x50 is generated at 80x64 (the nearest multiples of 16 at or above) and cropped
    # centrally: left (80-70)//2 = 5, top (64-50)//2 = 7; both passes of a series.
    cropped = run(engine, spec_for(["a", "b"], width=80, height=64, requested=(70, 50), seed=3))
    full = run(engine, spec_for(["a", "b"], width=80, height=64, seed=3))
    assert [im.size for im in cropped] == [(70, 50)] * 2
    for small, big in zip(pixels(cropped), pixels(full), strict=True):
        assert np.array_equal(small, big[7:57, 5:75])


@pytest.mark.parametrize("requested", [(64, 64), (48, 64), (81, 64)])
def test_requested_size_must_be_just_below_the_generated_one(engine: Flux2Engine, requested) -> None:
    # 64 in 80 would be a 16-px margin: not the nearest accepted size; 81 does not fit in 80.
    with pytest.raises(EngineError, match="requested_size"):
        run(engine, spec_for(["a"], width=80, height=64, requested=requested))


def test_missing_folder_is_a_clear_error() -> None:
    with pytest.raises(EngineError, match="make-tiny"):
        Flux2Engine.from_pretrained("/nonexistent/path")


def test_folder_without_a_pipeline_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no model_index.json"):
        Flux2Engine.from_pretrained(str(tmp_path))


def test_uncached_hub_id_offline_is_a_clear_error(hub_cache: Path) -> None:
    with pytest.raises(EngineError) as caught:
        Flux2Engine.from_pretrained(DEFAULT_MODEL_ID)
    message = str(caught.value)
    assert "not found locally" in message and "HF_HUB_OFFLINE" in message
    assert f"hf download {DEFAULT_MODEL_ID}" in message and "--model PATH" in message


def test_hub_id_in_the_local_cache_loads_offline(hub_cache: Path, tiny_path: Path, tmp_path: Path) -> None:
    put_in_hub_cache(hub_cache, DEFAULT_MODEL_ID, tiny_path)
    assert resolve_default_model(tmp_path / "data") == (DEFAULT_MODEL_ID, True)  # marker seen
    engine = Flux2Engine.from_pretrained(DEFAULT_MODEL_ID, device="cpu")
    assert engine.info.weights == DEFAULT_MODEL_ID and engine.info.random_weights is True
    assert len(run(engine, spec_for(["a"]))) == 1
    assert not (tmp_path / "data").exists()  # no tiny pipeline was built


def test_resolve_default_model_falls_back_to_tiny(
    hub_cache: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="modelapi.engine"):
        model, is_random = resolve_default_model(tmp_path / "data")
    assert (model, is_random) == (str(tmp_path / "data" / "tiny-flux2-klein"), True)
    assert "RANDOM-WEIGHT" in caplog.text
    assert resolve_default_model(tmp_path / "data") == (model, True)  # built once, reused


def test_rewrite_prompts_keeps_the_count(engine: Flux2Engine) -> None:
    prompts = ["a fox in snow", "the fox at dusk", "the fox asleep"]
    assert engine.rewrite_prompts(prompts, "Make each prompt more vivid.") == prompts
    assert engine.rewrite_prompts([], "anything") == []
