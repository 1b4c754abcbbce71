"""The paper's multimodal recipes: each config validates, and its data section reads a small fixture in the
reference's own on-disk format (SAT's JSON array, CV-Bench and the R1-V / Visual-RFT Hugging Face datasets, R1-V's
GEOQA test JSONL, Visual-RFT's LISA conversations), renders through a Qwen2-VL processor, and its rewards pay the
gold answer in full."""

import json
from pathlib import Path

import datasets
import pytest
from PIL import Image

from gpgrl.config import load_config
from gpgrl.data import load_splits
from gpgrl.models import load_policy
from gpgrl.rewards import RewardSet
from gpgrl.rollout import make_encoder

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "multimodal"


def _png(path: Path, color: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), color).save(path)
    return str(path)


def _hub_dir(root: Path, split: str, rows: dict[str, list]) -> Path:
    """A local Hugging Face dataset directory (data/<split>-00000-of-00001.parquet) with an Image feature."""
    table = datasets.Dataset.from_dict(rows).cast_column("image", datasets.Image())
    (root / "data").mkdir(parents=True, exist_ok=True)
    table.to_parquet(root / "data" / f"{split}-00000-of-00001.parquet")
    return root


def sat(tmp) -> Path:
    rows = []
    for i, (question, options, answer) in enumerate([
            ("Is the lamp to the left or right of the sofa?", "right or left", "left"),
            ("Which object is closer to the camera?", "chair or table", "chair"),
            ("If the camera moves forward, will the door get closer?", "yes or no", "yes")]):
        _png(tmp / "SAT_images_train" / f"{i}_0.png", "red")
        rows.append({"messages": [{"role": "user", "content": f"<image> Answer in natural language. {question} Choose "
                                   f"between the following options: {options}"},
                                  {"role": "assistant", "content": answer}],
                     "images": [f"SAT_images_train/{i}_0.png"]})
    (tmp / "SAT_train_15000.json").write_text(json.dumps(rows, indent=2))
    return tmp / "SAT_train_15000.json"


def cvbench(tmp) -> Path:
    images = [_png(tmp / "img" / f"{i}.png", c) for i, c in enumerate(["red", "green", "blue"])]
    return _hub_dir(tmp / "cvbench", "test", {
        "idx": [0, 1, 2], "type": ["2D", "2D", "3D"], "task": ["Count", "Relation", "Depth"], "image": images,
        "question": ["How many cars?", "Where is the cup?", "Which is closer?"],
        "choices": [["3", "2", "1", "0"], ["left", "right"], ["lamp", "chair"]], "answer": ["(B)", "(A)", "(B)"],
        "prompt": ["How many cars? Select from the following choices.\n(A) 3\n(B) 2\n(C) 1\n(D) 0",
                   "Where is the cup? Select from the following choices.\n(A) left\n(B) right",
                   "Which is closer? Select from the following choices.\n(A) lamp\n(B) chair"]})


def geoqa(tmp) -> Path:
    images = [_png(tmp / "img" / f"g{i}.png", "white") for i in range(3)]
    return _hub_dir(tmp / "geoqa", "train", {
        "image": images, "problem": ["In triangle ABC, angle A = 80.0, angle B = 60.0, then angle CED is ()",
                                     "AB parallel CD, angle 1 = 50.0, then angle 2 is equal to ()",
                                     "BD bisects angle ABC, angle BCD = 70.0, then angle CDB is ()"],
        "solution": ["<answer>140</answer>", "<answer>65</answer>", "<answer>55</answer>"]})


def geoqa_test(tmp) -> Path:
    rows = [{"image_path": f"images/test/{i}.png", "question": q, "ground_truth": g}
            for i, (q, g) in enumerate([("angle A = 80.0, angle B = 60.0; angle CED is ()", "140°"),
                                        ("angle 1 = 50.0; angle 2 is ()", "65°"),
                                        ("angle BCD = 70.0; CDB is ()", "55°")])]
    for row in rows:
        _png(tmp / "prompts" / row["image_path"], "white")
    path = tmp / "prompts" / "geoqa_test_prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def virft_cls(tmp) -> Path:
    problem = ("This is an image containing a plant. Please identify the species of the plant based on the image.\n"
               "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags.The "
               "output answer format should be as follows:\n<think> ... </think> <answer>species name</answer>\n"
               "Please strictly follow the format.")
    images = [_png(tmp / "img" / f"f{i}.png", c) for i, c in enumerate(["pink", "purple", "yellow"])]
    return _hub_dir(tmp / "cls", "train", {"image": images, "problem": [problem] * 3,
                                           "solution": ["<answer>pink primrose</answer>", "<answer>sweet pea</answer>",
                                                        "<answer>sunflower</answer>"]})


def lisa(tmp) -> Path:
    rows = []
    for i, (instruction, box) in enumerate([("the object used to keep food cold", "(120,85),(430,910)"),
                                            ("something you open to get a drink", "(120,85),(430,910)"),
                                            ("the animal that can climb trees", "(512,300),(780,655)")]):
        _png(tmp / "images" / f"lisa_{i // 2}.jpg", "gray")
        rows.append({"id": f"lisa_{i}", "conversations": [
            {"from": "user", "value": f"<img>images/lisa_{i // 2}.jpg</img>\n Output the bounding box in the image "
                                      f"corresponding to the instruction: {instruction}"},
            {"from": "assistant", "value": box}]})
    (tmp / "lisa_train_sft.json").write_text(json.dumps(rows))
    return tmp / "lisa_train_sft.json"


CASES = {  # recipe -> (fixture, split read, gold answers, text the rendered prompt must hold)
    "sat-qwen2-vl-2b-gpg": (sat, 0, ["left", "chair", "yes"], "Let me solve this step by step.\n<think>"),
    "cvbench-eval": (cvbench, 1, ["(B)", "(A)", "(B)"], "(A) 3\n(B) 2"),
    "geoqa-qwen2.5-vl-3b-gpg": (geoqa, 0, ["140", "65", "55"], ")  Output the thinking process"),
    "geoqa-eval": (geoqa_test, 1, ["140°", "65°", "55°"], ") Output the thinking process"),
    "virft-cls-4shot-qwen2-vl-2b-gpg": (virft_cls, 0, ["pink primrose", "sweet pea", "sunflower"],
                                        "identify the species of the plant"),
    "lisa-grounding-qwen2-vl-2b-gpg": (lisa, 0, ["(120,85),(430,910)", "(120,85),(430,910)", "(512,300),(780,655)"],
                                       "instruction: the object used to keep food cold Output the thinking"),
}


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    model, processor = load_policy(load_config(overrides=["model.name=tiny-random-qwen2-vl",
                                                          f"model.cache_dir={tmp_path_factory.mktemp('c')}"]).model, 0)
    return model, processor


def test_every_multimodal_recipe_is_covered():
    assert {p.stem for p in RECIPES.glob("*.yaml")} == set(CASES)


@pytest.mark.parametrize("recipe", sorted(CASES))
def test_a_recipe_reads_its_reference_format_and_pays_the_gold(tmp_path, vlm, recipe):
    make, split, golds, rendered_text = CASES[recipe]
    cfg = load_config(RECIPES / f"{recipe}.yaml", [f"data.path={make(tmp_path)}"])
    examples = load_splits(cfg.data)[split]
    assert [ex.answer for ex in examples] == golds
    assert all(len(ex.images) == 1 and ex.images[0].load().size == (40, 30) for ex in examples)
    model, processor = vlm
    encoder = make_encoder(processor, model, cfg.data.system_prompt, cfg.data.prompt_template)
    assert rendered_text in encoder.render(examples[0])
    prompt = encoder.encode(examples[0])
    assert prompt.vision is not None and int((prompt.ids == model.config.image_token_id).sum()) > 0
    rewards = RewardSet.from_config(cfg.reward)
    best = {"giou": 2.0}
    completions = [f"<think>I look at the image.</think><answer>{ex.answer}</answer>" for ex in examples]
    columns = {"answer": [ex.answer for ex in examples],
               **{k: [ex.columns[k] for ex in examples] for k in examples[0].columns}}
    out = rewards([ex.question for ex in examples], completions, columns)
    for name, values in out.per_function.items():
        assert values == [best.get(name, 1.0)] * len(examples), name
