"""A tiny random-weight FLUX.2 [klein] pipeline, built in code, for tests and the offline demo.

No weights can be downloaded everywhere modelapi runs, yet the engine must load through the real
``from_pretrained`` path. :func:`make_tiny` builds a ``Flux2KleinPipeline`` of the real classes
(``Flux2Transformer2DModel``, ``AutoencoderKLFlux2``, ``Qwen3ForCausalLM``,
``Qwen2TokenizerFast``, ``FlowMatchEulerDiscreteScheduler``) with a few thousand random
parameters, and saves it with ``save_pretrained``; the engine then loads the folder exactly as it
loads real weights. Its images are noise. The folder holds :data:`RANDOM_WEIGHTS_MARKER` so that
loaders can tell random weights apart and say so.

Sizes: the VAE keeps FLUX.2's 8x downsampling (four down/up blocks), so a 2560x1440 image is
~14k latent tokens (a few seconds on 2 CPU cores), not ~900k.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

RANDOM_WEIGHTS_MARKER = "modelapi_random_weights.json"
"""File name, inside a pipeline folder, that marks its weights as random (``{"random_weights": true}``)."""

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# A Qwen-style ChatML template; ``enable_thinking=False`` (what the pipeline passes) adds the empty
# think block the real Qwen3 template adds.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{ '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


def make_tokenizer():
    """A byte-level BPE tokenizer (256 byte symbols, no merges, 3 special tokens) as a
    ``Qwen2TokenizerFast`` with a ChatML chat template. ``len(tokenizer) == 259``."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import Qwen2TokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(BPE(vocab={symbol: i for i, symbol in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(token, special=True) for token in SPECIAL_TOKENS])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def make_scheduler():
    """A ``FlowMatchEulerDiscreteScheduler`` with dynamic shifting, as FLUX.2 uses (the pipeline
    passes ``mu`` from the image's token count)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000,
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
        time_shift_type="exponential",
    )


def build_tiny_pipeline(seed: int = 0):
    """The tiny ``Flux2KleinPipeline`` in memory (fp32, CPU), reproducible for a given ``seed``.

    Components: transformer 1 double + 1 single block, 2 heads x 16, ``in_channels=16``; VAE
    ``block_out_channels=(4, 4, 4, 4)`` (8x downsampling), 4 latent channels; Qwen3 text encoder
    with 2 layers of width 16 (so the prompt embedding uses hidden layer 1: 1 x 16 =
    ``joint_attention_dim``); no VAE mid-block attention (at 2560x1440 it attends over 57,600
    latent pixels and costs more than the whole denoising); ``is_distilled=True`` like FLUX.2-klein-4B (guidance ignored).
    """
    import torch
    from diffusers import (
        AutoencoderKLFlux2,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tokenizer = make_tokenizer()

    torch.manual_seed(seed)
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,
        timestep_guidance_channels=256,
        axes_dims_rope=[4, 4, 4, 4],
        guidance_embeds=False,
    )
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLFlux2(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
        mid_block_add_attention=False,  # full-resolution self-attention: seconds at 2560x1440
    )
    torch.manual_seed(seed + 2)
    text_encoder = Qwen3ForCausalLM(
        Qwen3Config(
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
            vocab_size=len(tokenizer),
            max_position_embeddings=1024,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return Flux2KleinPipeline(
        scheduler=make_scheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )


def make_tiny(path: Path, *, seed: int = 0) -> Path:
    """Build the tiny random-weight pipeline and save it to ``path`` with ``save_pretrained``.

    The folder is written next to ``path`` and renamed into place, so a half-written folder is
    never seen; if another process finishes first, its folder is kept. It holds
    :data:`RANDOM_WEIGHTS_MARKER`. Takes about a second.

    Args:
        path (`Path`): the folder to create; must not exist, or be empty.
        seed (`int`, default 0): seeds the random weights (same seed -> same files' weights).

    Returns:
        `Path`: ``path``.

    Raises:
        FileExistsError: ``path`` exists and is not empty.
    """
    path = Path(path).expanduser()
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} exists and is not empty; make_tiny writes a new folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        pipe = build_tiny_pipeline(seed)
        pipe.save_pretrained(staging)
        marker = {
            "random_weights": True,
            "note": "tiny random-weight FLUX.2 [klein] pipeline built by modelapi.engine.tiny; "
            "its images are noise",
            "seed": seed,
        }
        (staging / RANDOM_WEIGHTS_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        if path.exists():
            path.rmdir()  # empty (checked above)
        os.rename(staging, path)
    except OSError:
        if (path / "model_index.json").exists():  # another process built it first
            shutil.rmtree(staging, ignore_errors=True)
            return path
        shutil.rmtree(staging, ignore_errors=True)
        raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return path


def is_random_weights(folder: Path) -> bool:
    """True when ``folder`` holds :data:`RANDOM_WEIGHTS_MARKER` saying ``random_weights``."""
    marker = Path(folder) / RANDOM_WEIGHTS_MARKER
    if not marker.is_file():
        return False
    try:
        return bool(json.loads(marker.read_text()).get("random_weights", False))
    except (OSError, ValueError):
        return True  # a marker we cannot read still marks the folder as not real weights
