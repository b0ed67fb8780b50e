"""The spec-driven input rules: JSON Schema keywords and each image rule at its boundaries,
with the schema's own messages (schema: validations)."""

from __future__ import annotations

import pytest

from modelapi import catalog
from modelapi.validation import BYTES_PER_MB, check_image, check_input, image_fields

SEQ = catalog.get("bytedance/seedream-4-0/sequential")
EDIT = catalog.get("bytedance/seedream-4-0/edit-sequential")
DREAMINA = catalog.get("bytedance/dreamina-4-0/edit")
EDIT_RULES = image_fields(EDIT.input_schema)["images"]
DREAMINA_RULES = image_fields(DREAMINA.input_schema)["image_urls"]
LOC = ["body", "images", 0]

E_SIZE = "File size must be less than 10 MB."
E_RATIO = "The aspect ratio range should be 1:3 to 3:1."
E_MIN = "The uploaded image width and height must exceed 14 pixels."
E_MAX = "The uploaded image width and height must not exceed 6000 pixels."
D_SIZE = "Each image file must be ≤ 15 MB."
D_RES = "Maximum resolution is 4096x4096."
D_RATIO = "The input image aspect ratio must be within [1/3, 3]."


def msgs(rules, *, mb=1.0, w=1000, h=1000):
    return [d["msg"] for d in check_image(rules, file_bytes=int(mb * BYTES_PER_MB), width=w, height=h, loc=LOC)]


@pytest.mark.parametrize("mb,w,h,expected", [
    (1, 1000, 1000, []),
    (9.999, 1000, 1000, []),
    (10, 1000, 1000, [E_SIZE]),                 # file_size_mb< 10: 10 MB itself fails
    (1, 15, 15, []),
    (1, 14, 20, [E_MIN]),                       # width_pixels> 14: 14 fails
    (1, 20, 14, [E_MIN]),
    (1, 5999, 5999, []),
    (1, 6000, 5999, [E_MAX]),                   # width_pixels< 6000: 6000 fails
    (1, 5999, 6000, [E_MAX]),
    (1, 6000, 6000, [E_MAX]),                   # one entry per message, not two
    (1, 331, 1000, []),                         # 0.331 > 0.33
    (1, 330, 1000, [E_RATIO]),                  # 0.33 itself fails (strict >)
    (1, 2999, 1000, []),
    (1, 3000, 1000, [E_RATIO]),                 # 3 itself fails (strict <)
    (11, 14, 100, [E_SIZE, E_RATIO, E_MIN]),    # several problems, all reported, in rule order
])
def test_edit_sequential_image_rules(mb, w, h, expected):
    assert msgs(EDIT_RULES, mb=mb, w=w, h=h) == expected


@pytest.mark.parametrize("mb,w,h,expected", [
    (15, 1000, 1000, []),                       # file_size_mb<= 15: 15 MB passes
    (15.001, 1000, 1000, [D_SIZE]),
    (1, 4096, 4096, []),
    (1, 4097, 4096, [D_RES]),
    (1, 4096, 4097, [D_RES]),
    (1, 330, 1000, []),                         # 0.33 passes (≥, value given as the string "0.33")
    (1, 329, 1000, [D_RATIO]),
    (1, 3000, 1000, []),                        # 3 passes (≤)
    (1, 3001, 1000, [D_RATIO]),
    (1, 1, 1, []),                              # dreamina sets no minimum size
])
def test_dreamina_image_rules(mb, w, h, expected):
    assert msgs(DREAMINA_RULES, mb=mb, w=w, h=h) == expected


def test_image_rule_detail_shape():
    [detail] = check_image(EDIT_RULES, file_bytes=100, width=10, height=20, loc=["body", "images", 3])
    assert detail == {"loc": ["body", "images", 3], "msg": E_MIN, "type": "image_rule"}


def test_unknown_rule_is_a_spec_error():
    with pytest.raises(ValueError, match="unknown validation rule"):
        check_image([{"validation_rule": "depth>", "validation_value": 1, "validation_error": "x"}], file_bytes=1, width=1, height=1, loc=[])


def test_defaults_are_applied():
    inputs, problems = check_input(SEQ.input_schema, {"text": "a fox"})
    assert problems == []
    assert inputs == {"text": "a fox", "sequential_image_generation_options": 3, "image_size": "2560:1440 (16:9)",
                      "optimize_prompt_options": "fast", "sequential_image_generation": "auto"}
    inputs, _ = check_input(DREAMINA.input_schema, {"image_urls": ["https://x/a.png"], "prompt": "p"})
    assert inputs["scale"] == 0.5 and inputs["force_single"] is False and inputs["width×height"] == "2048x2048(1:1)"


def test_edit_sequential_accepts_sequential_image_generation():
    # The Portuguese page omits it; accepted everywhere, default "auto" (the other languages' pages).
    inputs, problems = check_input(EDIT.input_schema, {"images": ["https://x/a.png"], "text": "t", "sequential_image_generation": "disabled"})
    assert problems == [] and inputs["sequential_image_generation"] == "disabled"


@pytest.mark.parametrize("schema,body,loc,msg,kind", [
    (SEQ, {}, ["body", "text"], "Field required", "missing"),
    (SEQ, {"text": 5}, ["body", "text"], "Input should be of type string", "type"),
    (SEQ, {"text": "x" * 600}, None, None, None),
    (SEQ, {"text": "x" * 601}, ["body", "text"], "String should have at most 600 characters", "max_length"),
    (SEQ, {"text": "t", "sequential_image_generation_options": 0}, ["body", "sequential_image_generation_options"], None, "enum"),
    (SEQ, {"text": "t", "sequential_image_generation_options": 16}, ["body", "sequential_image_generation_options"], None, "enum"),
    (SEQ, {"text": "t", "sequential_image_generation_options": 15}, None, None, None),
    (SEQ, {"text": "t", "sequential_image_generation_options": "3"}, ["body", "sequential_image_generation_options"], "Input should be of type integer", "type"),
    (SEQ, {"text": "t", "image_size": "2560x1440"}, ["body", "image_size"], None, "enum"),
    (SEQ, {"text": "t", "seed": 1.5}, ["body", "seed"], "Input should be of type integer", "type"),
    (SEQ, {"text": "t", "optimize_prompt_options": "slow"}, ["body", "optimize_prompt_options"], "Input should be one of: 'fast', 'standard'", "enum"),
    (SEQ, {"text": "t", "colour": "red"}, ["body", "colour"], "Unknown field: not in the model's input schema", "extra_forbidden"),
    (EDIT, {"text": "t", "images": []}, ["body", "images"], "List should have at least 1 item", "min_items"),
    (EDIT, {"text": "t", "images": ["https://x/a.png"] * 10}, None, None, None),
    (EDIT, {"text": "t", "images": ["https://x/a.png"] * 11}, ["body", "images"], "List should have at most 10 items", "max_items"),
    (EDIT, {"text": "t", "images": [5]}, ["body", "images", 0], "Input should be of type string", "type"),
    (DREAMINA, {"image_urls": ["u"], "prompt": "x" * 801}, ["body", "prompt"], "String should have at most 800 characters", "max_length"),
    (DREAMINA, {"image_urls": ["u"], "prompt": "p", "scale": 1.01}, ["body", "scale"], "Input should be less than or equal to 1", "maximum"),
    (DREAMINA, {"image_urls": ["u"], "prompt": "p", "scale": -0.01}, ["body", "scale"], "Input should be greater than or equal to 0", "minimum"),
    (DREAMINA, {"image_urls": ["u"], "prompt": "p", "scale": 1}, None, None, None),    # "float" means JSON number
    (DREAMINA, {"image_urls": ["u"], "prompt": "p", "scale": "0.5"}, ["body", "scale"], "Input should be of type number", "type"),
    (DREAMINA, {"image_urls": ["u"], "prompt": "p", "force_single": "yes"}, ["body", "force_single"], "Input should be of type boolean", "type"),
    (DREAMINA, {"image_urls": ["u"], "prompt": "p", "width×height": "2048x2048"}, ["body", "width×height"], None, "enum"),
])
def test_schema_keywords(schema, body, loc, msg, kind):
    _, problems = check_input(schema.input_schema, body)
    if loc is None:
        assert problems == []
        return
    assert len(problems) == 1, problems
    assert problems[0]["loc"] == loc and problems[0]["type"] == kind
    if msg is not None:
        assert problems[0]["msg"] == msg


def test_every_problem_is_reported_once():
    _, problems = check_input(DREAMINA.input_schema, {"prompt": 1, "scale": 2, "extra": 1})
    assert sorted(tuple(p["loc"]) for p in problems) == [("body", "extra"), ("body", "image_urls"), ("body", "prompt"), ("body", "scale")]
