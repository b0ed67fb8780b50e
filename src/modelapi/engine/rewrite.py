"""Prompt rewriting (``optimize_prompt_options="standard"``) with a FLUX.2 pipeline's own text
encoder, used as a causal language model through its tokenizer's chat template.

:meth:`Flux2Engine.rewrite_prompts <modelapi.engine.flux2.Flux2Engine.rewrite_prompts>` calls
:func:`rewrite_prompts` under the engine's lock; the instruction comes from
:func:`~modelapi.series.planner.rewrite_instruction`.
"""

from __future__ import annotations

import re
from typing import Any

from modelapi.engine.errors import EngineError

REWRITE_MAX_NEW_TOKENS = 60
"""Most tokens :func:`rewrite_prompts` generates per prompt."""

REWRITE_MAX_TIME_S = 20.0
"""Most time :func:`rewrite_prompts` spends generating one prompt, seconds."""


def rewrite_prompts(
    pipe: Any, prompts: list[str], instruction: str, *, random_weights: bool, processor: bool
) -> list[str]:
    """Rewrite each prompt with ``pipe.text_encoder`` used as a causal LM, in the prompt's own
    language as ``instruction`` asks (:func:`~modelapi.series.planner.rewrite_instruction`
    says why).

    Each prompt is sent as ``[system: instruction, user: prompt]`` through the tokenizer's
    chat template (thinking off) and answered greedily, at most
    :data:`REWRITE_MAX_NEW_TOKENS` tokens and :data:`REWRITE_MAX_TIME_S` seconds per prompt
    (:func:`chat`). An empty answer keeps that prompt unchanged. With random weights the
    answer is garbage: generation runs once (for the first prompt, so the path is exercised)
    and ``prompts`` are returned unchanged.

    Args:
        pipe: a loaded FLUX.2 pipeline (``text_encoder``, ``tokenizer``).
        prompts (`list[str]`): the per-image prompts.
        instruction (`str`): the system message.
        random_weights (`bool`): the weights are random (see above).
        processor (`bool`): ``pipe.tokenizer`` is a processor whose messages hold lists of
            parts (FLUX.2 [dev]'s ``PixtralProcessor``), not a plain tokenizer (klein's Qwen).

    Returns:
        list of str, ``len == len(prompts)``.

    Raises:
        EngineError: the language model failed.
    """
    if not prompts:
        return []
    try:
        if random_weights:
            chat(pipe, instruction, prompts[0], processor=processor)
            return list(prompts)
        return [chat(pipe, instruction, p, processor=processor) or p for p in prompts]
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(f"prompt rewriting failed ({type(exc).__name__}: {exc})") from exc


def chat(pipe: Any, instruction: str, prompt: str, *, processor: bool) -> str:
    """``pipe.text_encoder``'s greedy answer to ``[system: instruction, user: prompt]``,
    whitespace-collapsed, without any ``<think>`` block; may be empty.

    The chat template makes ``input_ids`` and ``attention_mask`` of shape ``(1, T)``;
    ``generate`` returns ``(1, T + new)`` token ids, of which the ``new`` ones are decoded.
    ``processor``: see :func:`rewrite_prompts`.
    """
    import torch

    tokenizer = pipe.tokenizer
    if processor:  # a PixtralProcessor: content is a list of parts
        messages = [
            {"role": "system", "content": [{"type": "text", "text": instruction}]},
            {"role": "user", "content": [{"type": "text", "text": prompt}]},
        ]
        inputs = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        text_tokenizer = tokenizer.tokenizer
    else:
        messages = [{"role": "system", "content": instruction}, {"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
        inputs = tokenizer(text, return_tensors="pt")
        text_tokenizer = tokenizer
    model = pipe.text_encoder
    inputs = {k: v.to(model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        output = model.generate(
            **inputs,
            max_new_tokens=REWRITE_MAX_NEW_TOKENS,
            max_time=REWRITE_MAX_TIME_S,
            do_sample=False,
            pad_token_id=text_tokenizer.pad_token_id,
            eos_token_id=text_tokenizer.eos_token_id,
        )
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    answer = text_tokenizer.decode(new_tokens, skip_special_tokens=True)
    answer = re.sub(r"<think>.*?(</think>|$)", "", answer, flags=re.DOTALL)
    return " ".join(answer.split())
