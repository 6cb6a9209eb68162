"""Build the three ShapeWorld benchmarks' item files, deterministically.

    python -m reca_eval.benchmarks.shapes.build            # (re)write benchmarks/shapes-*/
    python -m reca_eval.benchmarks.shapes.build --check    # exit 1 if the files on disk differ

Every folder gets its item file(s), ``benchmark.yaml`` (the registry's spec: what the benchmark is and
how it is scored, plus a manifest of counts per category, sha256 of each file, generator command and
seed) and a README.md. Nothing depends on time or the machine: the same code and
seed give byte-identical files.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import itertools
import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from reca_eval.benchmarks.dpg.rules import QUESTION_COLUMNS
from reca_eval.core.paths import PROJECT_ROOT
from reca_eval.core.records import atomic_write_text
from reca_eval.scorers.shapes import score_edit
from reca_eval.shapeworld.captions import caption
from reca_eval.shapeworld.edits import EDIT_TYPES, EditNotPossible, make_edit
from reca_eval.shapeworld.palette import BACKGROUNDS, COLOURS, NUMBER_WORDS, SHAPES, SIZES, STYLES, plural
from reca_eval.shapeworld.questions import scene_questions
from reca_eval.shapeworld.render import render_scene
from reca_eval.shapeworld.scene import Scene, place_objects
from reca_eval.shapeworld.splits import SPLITS, combo_split, combos_in, most_held_out, sample_combo

# A benchmark's version changes whenever its items or its scoring change, so that records of the two are
# never set side by side (the leaderboard groups by version). 1.1: shapes-geneval orders equal detection
# scores as the official GenEval does. shapes-edit 1.2: every source scene comes with two different
# instructions (counterfactual twins), and the headline counts an edit only when its twin is followed too.
VERSIONS = {"shapes-geneval": "1.1", "shapes-dpg": "1.0", "shapes-edit": "1.2"}
SEED = 20250909
GENERATOR = "python -m reca_eval.benchmarks.shapes.build"
BENCHMARKS_DIR = PROJECT_ROOT / "benchmarks"


def _options(images_per_prompt: int, mode: str | None = None) -> dict[str, dict[str, Any]]:
    """The `-o KEY=VALUE` options of a ShapeWorld benchmark, as its benchmark.yaml declares them."""
    options: dict[str, dict[str, Any]] = {
        "resolution": {
            "type": "int",
            "default": 64,
            "min": 8,
            "max": 4096,
            "help": "Side in pixels every image must have (an image of another size is a skip).",
        },
        "images_per_prompt": {
            "type": "int",
            "default": images_per_prompt,
            "min": 1,
            "max": 64,
            "help": "Samples per item the folder holds; missing ones below it are skips.",
        },
    }
    if mode is not None:
        options["mode"] = {
            "type": "choice",
            "choices": ["official", "fixed"],
            "default": mode,
            "help": "DPG's gating: official (as the script is published) or fixed (its defects corrected).",
        }
    return options


# What each benchmark.yaml declares besides its version and manifest.
SPECS: dict[str, dict[str, Any]] = {
    "shapes-geneval": {
        "description": "GenEval's six tasks and exact schema on ShapeWorld; the exact parser is the detector.",
        "task": "t2i",
        "layout": "geneval",
        "scorer": "exact parser",
        "extra": None,
        "images_per_prompt": 4,
        "resolution": 64,
        "categories": ["single_object", "two_object", "counting", "colors", "position", "color_attr"],
        "check_tolerance": 0.01,  # `reca-eval check`: allowed drop, in the benchmark's units
        "implementation": "reca_eval.benchmarks.shapes.benchmark:build_geneval",
        "items": "items.jsonl",
        "options": _options(4),
    },
    "shapes-dpg": {
        "description": "Dense ShapeWorld prompts with a DPG-style question graph, answered exactly, gated like DPG.",
        "task": "t2i",
        "layout": "dpg",
        "scorer": "exact parser (VQA)",
        "extra": None,
        "images_per_prompt": 4,
        "resolution": 64,
        "categories": ["entity", "attribute", "relation", "count", "global"],
        "check_tolerance": 1.0,  # `reca-eval check`: allowed drop, in the benchmark's units
        "implementation": "reca_eval.benchmarks.shapes.benchmark:build_dpg",
        "items": "questions.csv",
        "options": _options(4, mode="fixed"),
    },
    "shapes-edit": {
        "description": "ShapeWorld edits (recolour, remove, add, replace, move, resize, restyle, background, two-step) in counterfactual pairs (one source, two instructions): success counted only when both twins are followed, with preservation and quality, aggregated GEdit- and ImgEdit-style.",
        "task": "edit",
        "layout": "edit",
        "scorer": "exact parser (edit)",
        "extra": None,
        "images_per_prompt": 1,
        "resolution": 64,
        "categories": [
            "recolour",
            "remove",
            "add",
            "replace",
            "move",
            "resize",
            "restyle",
            "background",
            "two-step",
        ],
        "check_tolerance": 0.1,  # `reca-eval check`: allowed drop, in the benchmark's units
        "implementation": "reca_eval.benchmarks.shapes.benchmark:build_edit",
        "items": "items.jsonl",
        "options": _options(1),
    },
}
RELATIONS = ("left of", "right of", "above", "below")
DPG_ITEMS = 150
EDITS_PER_TYPE = 20  # = 10 counterfactual pairs per type
# Resolutions at which each twin's exact reference must pass its own instruction and fail its twin's:
# the world's training renders (32 px) and the benchmark's (64 px).
TWIN_CHECK_RESOLUTIONS = (32, 64)
TWIN_TRIES = 50
# Items per most-held-out split; only 10 prompts pair two typical combinations.
COLOR_ATTR_PER_SPLIT = {"typical": 10, "common": 30, "rare": 20, "uncaptioned": 20, "unrendered": 20}


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _plain_colour(shape: str, rng: random.Random) -> str:
    """A colour for objects whose prompt names none: never a held-out combination."""
    return rng.choice([c for c in COLOURS if combo_split(shape, c) in ("typical", "common")])


def _scene(rng: random.Random, specs, relations=()) -> Scene:
    seed = rng.randrange(2**31)
    local = random.Random(seed)
    return Scene(local.choice(tuple(BACKGROUNDS)), place_objects(specs, local, list(relations)), seed)


def _spec(shape: str, colour: str, rng: random.Random, sizes=tuple(SIZES)) -> tuple[str, str, str, str]:
    return (shape, colour, rng.choice(sizes), rng.choice(STYLES))


def _geneval_item(tag: str, include: list[dict], prompt: str, scene: Scene, exclude=None) -> dict[str, Any]:
    item: dict[str, Any] = {"tag": tag, "include": include}
    if exclude:
        item["exclude"] = exclude
    combos = [(c["class"], c["color"]) for c in include if "color" in c]
    item.update(prompt=prompt, reference_scene=scene.to_json(), split=most_held_out(combos))
    return item


def build_geneval(rng: random.Random) -> list[dict[str, Any]]:
    """GenEval's six tags over ShapeWorld's shapes: every distinct prompt for the small tags."""
    items = []
    for shape in SHAPES:
        scene = _scene(rng, [_spec(shape, _plain_colour(shape, rng), rng)])
        items.append(
            _geneval_item(
                "single_object", [{"class": shape, "count": 1}], f"a photo of {_a(shape)} {shape}", scene
            )
        )
    for a, b in itertools.permutations(SHAPES, 2):
        scene = _scene(rng, [_spec(a, _plain_colour(a, rng), rng), _spec(b, _plain_colour(b, rng), rng)])
        include = [{"class": a, "count": 1}, {"class": b, "count": 1}]
        items.append(_geneval_item("two_object", include, f"a photo of {_a(a)} {a} and {_a(b)} {b}", scene))
    for shape, n in itertools.product(SHAPES, (2, 3, 4)):
        colour = _plain_colour(shape, rng)
        scene = _scene(rng, [_spec(shape, colour, rng, ("small", "medium")) for _ in range(n)])
        items.append(
            _geneval_item(
                "counting",
                [{"class": shape, "count": n}],
                f"a photo of {NUMBER_WORDS[n]} {plural(shape)}",
                scene,
                exclude=[{"class": shape, "count": n + 1}],
            )
        )
    for shape, colour in itertools.product(SHAPES, COLOURS):
        scene = _scene(rng, [_spec(shape, colour, rng)])
        include = [{"class": shape, "count": 1, "color": colour}]
        items.append(_geneval_item("colors", include, f"a photo of {_a(colour)} {colour} {shape}", scene))
    for (a, b), relation in itertools.product(itertools.permutations(SHAPES, 2), RELATIONS):
        # Object 0 is the target group (b), object 1 the positioned one (a), as GenEval orders them.
        specs = [
            _spec(b, _plain_colour(b, rng), rng, ("small", "medium")),
            _spec(a, _plain_colour(a, rng), rng, ("small", "medium")),
        ]
        scene = _scene(rng, specs, [(1, relation, 0)])
        include = [{"class": b, "count": 1}, {"class": a, "count": 1, "position": [relation, 0]}]
        items.append(
            _geneval_item("position", include, f"a photo of {_a(a)} {a} {relation} {_a(b)} {b}", scene)
        )
    # color_attr: balanced over the item's most held-out split, the other combination no more held out.
    seen: set[frozenset] = set()
    for split in [s for s, n in COLOR_ATTR_PER_SPLIT.items() for _ in range(n)]:
        while True:  # distinct prompts only (either order counts as the same pair)
            shape_a, colour_a = rng.choice(combos_in(split))
            allowed = [c for s in SPLITS[: SPLITS.index(split) + 1] for c in combos_in(s) if c[0] != shape_a]
            shape_b, colour_b = rng.choice(allowed)
            if frozenset([(shape_a, colour_a), (shape_b, colour_b)]) not in seen:
                seen.add(frozenset([(shape_a, colour_a), (shape_b, colour_b)]))
                break
        pair = [(shape_a, colour_a), (shape_b, colour_b)]
        rng.shuffle(pair)
        (sa, ca), (sb, cb) = pair
        scene = _scene(rng, [_spec(sa, ca, rng), _spec(sb, cb, rng)])
        include = [{"class": sa, "count": 1, "color": ca}, {"class": sb, "count": 1, "color": cb}]
        prompt = f"a photo of {_a(ca)} {ca} {sa} and {_a(cb)} {cb} {sb}"
        items.append(_geneval_item("color_attr", include, prompt, scene))
    return items


def build_dpg(rng: random.Random) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    items, questions = [], []
    for index in range(DPG_ITEMS):
        shapes = rng.sample(SHAPES, rng.randint(2, 4))
        scene = _scene(rng, [_spec(s, rng.choice(tuple(COLOURS)), rng) for s in shapes])
        item_id = f"shapes-dpg-{index:03d}"
        prompt = caption(scene, "dense", seed=scene.seed, hide_uncaptioned=False)
        split = most_held_out([o.combo for o in scene.objects])
        items.append(
            {"item_id": item_id, "prompt": prompt, "reference_scene": scene.to_json(), "split": split}
        )
        questions += scene_questions(scene, item_id, prompt)
    return items, questions


def _source_scene(rng: random.Random, n_objects: int) -> Scene:
    return _scene(rng, [_spec(*sample_combo(rng), rng) for _ in range(n_objects)])


def _introduced_combos(source: Scene, target: Scene) -> list[tuple[str, str]]:
    rest = list(source.objects)
    introduced = []
    for obj in target.objects:
        if obj in rest:
            rest.remove(obj)
        else:
            introduced.append(obj.combo)
    return introduced


def _twins_tell_apart(source: Scene, target_a: Scene, target_b: Scene) -> bool:
    """Each target's exact render succeeds on its own edit and fails the other's, at every checked
    resolution: then no single image can satisfy both instructions of the pair."""
    for res in TWIN_CHECK_RESOLUTIONS:
        for own, other in ((target_a, target_b), (target_b, target_a)):
            image = render_scene(own, res)
            if score_edit(source, own, image)["success"] != 1 or score_edit(source, other, image)["success"]:
                return False
    return True


def _edit_pair(edit_type: str, source: Scene) -> tuple[tuple[str, Scene], tuple[str, Scene]] | None:
    """Two different edits of type ``edit_type`` on ``source`` that no one image satisfies both of, or
    None. The twin is drawn independently (another object, or another value for the same one)."""
    try:
        first = make_edit(edit_type, source, random.Random(source.seed))
    except (EditNotPossible, RuntimeError):
        return None
    if first[1].to_json() == source.to_json():
        return None
    for attempt in range(TWIN_TRIES):
        try:
            second = make_edit(edit_type, source, random.Random(f"{source.seed}:twin:{attempt}"))
        except (EditNotPossible, RuntimeError):
            continue
        if second[0] == first[0] or second[1].to_json() in (source.to_json(), first[1].to_json()):
            continue
        if _twins_tell_apart(source, first[1], second[1]):
            return first, second
    return None


def build_edit(rng: random.Random) -> list[dict[str, Any]]:
    """EDITS_PER_TYPE items per edit type, as counterfactual pairs: two items on one source scene with
    different instructions, adjacent in the file, sharing a ``pair_id`` and naming each other (``twin_id``)."""
    items = []
    for edit_type in EDIT_TYPES:
        made = 0
        while made < EDITS_PER_TYPE:
            source = _source_scene(rng, rng.randint(2, 3))
            pair = _edit_pair(edit_type, source)
            if pair is None:
                continue
            pair_id = f"shapes-edit-pair-{len(items) // 2:03d}"
            ids = [f"shapes-edit-{len(items) + k:03d}" for k in range(2)]
            for k, (instruction, target) in enumerate(pair):
                items.append(
                    {
                        "item_id": ids[k],
                        "pair_id": pair_id,
                        "twin_id": ids[1 - k],
                        "edit_type": edit_type,
                        "instruction": instruction,
                        "source_scene": source.to_json(),
                        "target_scene": target.to_json(),
                        "split": most_held_out(_introduced_combos(source, target)),
                    }
                )
            made += 2
    return items


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=False) + "\n" for r in rows)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    pd.DataFrame(rows, columns=list(QUESTION_COLUMNS)).to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()


READMES = {
    "shapes-geneval": """# shapes-geneval

GenEval's six tasks over ShapeWorld (shapes as classes, GenEval's ten colour names), in GenEval's
exact JSONL schema (`tag`, `include`, `exclude`, `prompt`) plus two keys of ours:

- `reference_scene`: a ShapeWorld scene that satisfies the item (render it for a reference image);
- `split`: the most held-out (shape, colour) split the prompt names (`reca_eval.shapeworld.splits`);
  `none` when the prompt names no colour.

Tasks hold every distinct prompt where ShapeWorld has fewer than 100 (single_object 5, two_object
20, counting 15 with counts 2-4, colors 50, position 80); color_attr holds 100 drawn prompts
(by most held-out split: typical 10, common 30, rare, uncaptioned and unrendered 20 each). Position items are laid out so that GenEval's relation rule holds with margin.
Scored exactly by `reca_eval.scorers.shapes.detect_shapes` + `colour_of_image` under the GenEval
protocol (`reca_eval.benchmarks.geneval.rules`).
""",
    "shapes-dpg": """# shapes-dpg

DPG-Bench-style dense prompts over ShapeWorld. `items.jsonl`: `item_id`, `prompt` (a dense caption:
every object's size, colour, style and shape, the background, every clear relation),
`reference_scene`, `split`. `questions.csv`: DPG-Bench's question-graph columns (`item_id, text,
keywords, proposition_id, dependency, category_broad, category_detailed, tuple,
question_natural_language`); `dependency` is `0` for roots or the comma-separated parent ids.
Categories: entity/whole, attribute/color|size|style, relation/spatial, other/count,
global/background. Each item's shapes are distinct, so the shape names its entity.
Answered exactly by `reca_eval.scorers.shapes.answer_question` on `parse_image`'s result.
""",
    "shapes-edit": """# shapes-edit

Image-editing items over ShapeWorld: `item_id`, `pair_id`, `twin_id`, `edit_type`, `instruction`,
`source_scene`, `target_scene`, `split` (most held-out combination the edit introduces; `none` if it
introduces none). Edit types: recolour, remove, add, replace, move, resize, restyle, background,
two-step (two different single edits in sequence), 20 items (10 pairs) each. Render `source_scene` as
the input image. Positions asked for ("add ... left of the square") are relations; the target scene
holds one placement that satisfies them. Scored by `reca_eval.scorers.shapes.score_edit` (success,
preservation, quality).

## Counterfactual pairs

Items come in pairs (`pair_id`; each names the other as `twin_id`, adjacent in the file): one source
scene, two edits of the same type with different instructions and targets (remove A / remove B,
recolour to X / to Y, move left of / above, ...). The twin is drawn independently from the same
source; the generator keeps a pair only when each target, rendered at 32 and 64 px, succeeds on its
own instruction and fails its twin's, so no single image satisfies both.

## Headline: an edit counts only when its twin is followed too

For an output image, `success` is its own instruction's success and `twin_success` the success of the
same image against the twin's instruction. An output is *followed* when, for both twins of its pair,
success = 1 and twin_success = 0: each output does its own edit and not the other's. The headline
takes the per-image scores with success replaced by followed: `SC = 10·min(followed, preservation)`,
`PQ = 10·quality`, `O = sqrt(SC·PQ)` per image; per-type means; `overall` = their mean over types
(0-10); the ImgEdit-style keys (1-5) likewise. An editor whose output depends on the source image
alone (identity, blank, dropping an object chosen from the source, the source through a tokenizer)
gives both twins the same image, and one image cannot succeed and fail the same instruction, so it
scores overall = 0 and ImgEdit 1.0 by construction; exact references score 10 and 5. A randomised
instruction-blind editor scores at most its chance of guessing both edits. An item whose twin was not
scored (an item file holding one of the two) counts as not followed (`pairs/unpaired` says how many).

Beside the headline: `single/<type>`, `single/overall` and `single/imgedit_macro` (each output's own
success alone; what a copy that loses an object earns on "remove"), and instruction sensitivity over
paired outputs, overall and per type: `pairs/followed`, `pairs/both_success` (both outputs succeed on
their own instruction) and `pairs/same_image` (the two outputs are the same image, pixel for pixel).
""",
}


def benchmark_files(seed: int = SEED) -> dict[str, dict[str, Any]]:
    """name -> {"files": {filename: text}, "count": {category: n}} for the three benchmarks."""
    geneval = build_geneval(random.Random(f"{seed}:geneval"))
    dpg_items, dpg_questions = build_dpg(random.Random(f"{seed}:dpg"))
    edits = build_edit(random.Random(f"{seed}:edit"))
    return {
        "shapes-geneval": {
            "files": {"items.jsonl": _jsonl(geneval)},
            "count": Counter(i["tag"] for i in geneval),
        },
        "shapes-dpg": {
            "files": {"items.jsonl": _jsonl(dpg_items), "questions.csv": _csv(dpg_questions)},
            "count": Counter(q["category_broad"] + "/" + q["category_detailed"] for q in dpg_questions)
            | {"items": len(dpg_items)},
        },
        "shapes-edit": {
            "files": {"items.jsonl": _jsonl(edits)},
            "count": Counter(i["edit_type"] for i in edits),
        },
    }


def spec_text(name: str, files: dict[str, str], count: dict[str, int], seed: int) -> str:
    """The benchmark.yaml of one ShapeWorld benchmark (generated: edit SPECS, not the file)."""
    spec = {
        "name": name,
        "version": VERSIONS[name],
        **SPECS[name],
        "manifest": {
            "count": dict(count),
            "sha256": {f: hashlib.sha256(text.encode()).hexdigest() for f, text in sorted(files.items())},
            "generator": GENERATOR,
            "seed": seed,
        },
    }
    header = (
        f"# {name}: generated by `{GENERATOR}`; the registry reads it without importing the implementation.\n"
    )
    return header + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True, width=100)


def write_benchmarks(out_dir: Path = BENCHMARKS_DIR, seed: int = SEED, check: bool = False) -> list[str]:
    """Write (or with ``check``, compare) every file; returns the paths that differ(ed) from disk."""
    differing = []
    for name, built in benchmark_files(seed).items():
        folder = Path(out_dir) / name
        files = dict(built["files"])
        files["benchmark.yaml"] = spec_text(name, built["files"], built["count"], seed)
        files["README.md"] = READMES[name]
        for filename, text in files.items():
            path = folder / filename
            if path.exists() and path.read_text(encoding="utf-8") == text:
                continue
            differing.append(str(path))
            if not check:
                atomic_write_text(path, text)
    return differing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BENCHMARKS_DIR, help="folder holding benchmarks/<name>/")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument(
        "--check", action="store_true", help="compare with the files on disk; exit 1 on a difference"
    )
    args = parser.parse_args(argv)
    differing = write_benchmarks(args.out, args.seed, args.check)
    for path in differing:
        print(("differs: " if args.check else "wrote: ") + path)
    if not differing:
        print("benchmark files up to date")
    return 1 if args.check and differing else 0


if __name__ == "__main__":
    sys.exit(main())
