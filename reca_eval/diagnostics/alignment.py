"""Cross-modal alignment diagnostic: does the trunk represent an image and its caption alike?

RecA trains the image-conditioned path (instruction + understanding embeddings -> image). What it
teaches reaches *text* prompts only if the trunk puts a scene's caption and the scene's understanding
embeddings on the same coordinates. A linear probe tells: fit it on pooled trunk states
(``condition_hidden_states``) of one modality, test it on held-out scenes of the same modality
(within) and of the other modality (cross). Within high and cross at chance = two private codes.

Probed attributes of held-out ShapeWorld scenes: the object's colour, shape, size and style (on the
single-object half of the scenes: in a scene of several objects "the first object" is an order of the
caption that the image does not have), the object count and the background (on every scene).
Relations are not probed for the same reason: "A left of B" names an order that only the caption has.
Text prompts are the dense captions (every attribute named); image prompts are
``DIAGNOSTIC_INSTRUCTION`` + the image's understanding embeddings.

Chance is the majority-class rate: the accuracy of always answering the training half's most frequent
class, on the test half (classes are imbalanced: typical colours are drawn ~9x more often).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from reca_eval.models.protocol import Condition, ConditionStatesModel, ImageEmbeds
from reca_eval.shapeworld.captions import caption
from reca_eval.shapeworld.render import render_scene
from reca_eval.shapeworld.scene import Scene, random_scene
from reca_eval.shapeworld.splits import sample_combo

DIAGNOSTIC_INSTRUCTION = "Describe the image in detail."
HELD_OUT_STREAM = 3  # seed of the diagnostic's own scene stream (seeded apart from every training stream)
# "Ready for RecA" when, averaged over attributes, the cross-modal probe keeps at least this share of
# the within-modality probe's accuracy above chance. Fixed before any model was measured: it asks
# that most of what a probe reads from text is readable *the same way* from images (the prototypes:
# ~0 without alignment, 0.3-0.5 with pooled input-space alignment, and RecA did not reach text).
READY_TRANSFER = 0.75
PROBE_L2 = 1e-3  # ridge on standardised features; fixed, not tuned on test items
ATTRIBUTES = ("colour", "shape", "size", "style", "count", "background")


@dataclass
class AttributeProbe:
    attribute: str
    classes: int
    n_train: int
    n_test: int
    chance: float
    within_text: float
    within_image: float
    text_to_image: float
    image_to_text: float

    @property
    def within(self) -> float:
        return (self.within_text + self.within_image) / 2

    @property
    def cross(self) -> float:
        return (self.text_to_image + self.image_to_text) / 2


@dataclass
class AlignmentReport:
    probes: list[AttributeProbe]
    scenes: int
    layer: int
    seed: int
    ready_threshold: float = READY_TRANSFER
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        within = float(np.mean([p.within for p in self.probes]))
        cross = float(np.mean([p.cross for p in self.probes]))
        chance = float(np.mean([p.chance for p in self.probes]))
        return {
            "within": within,
            "cross": cross,
            "chance": chance,
            "transfer": transfer(within, cross, chance),
        }

    @property
    def ready(self) -> bool:
        return self.summary()["transfer"] >= self.ready_threshold

    def verdict(self) -> str:
        s = self.summary()
        answer = "yes" if self.ready else "no"
        return (
            f"ready for RecA? {answer}: cross-modal probes keep {s['transfer']:.0%} of the within-modality "
            f"accuracy above chance (cross {s['cross']:.2f}, within {s['within']:.2f}, chance {s['chance']:.2f}; "
            f"threshold {self.ready_threshold:.0%})"
        )

    TABLE_COLUMNS = (
        "attribute",
        "classes",
        "chance",
        "within text",
        "within image",
        "text->image",
        "image->text",
    )

    def table_rows(self) -> list[tuple[str, ...]]:
        """Rows under :attr:`TABLE_COLUMNS` (accuracies to two decimals), one per attribute, then the mean."""
        rows = [
            (
                p.attribute,
                str(p.classes),
                f"{p.chance:.2f}",
                *(f"{v:.2f}" for v in (p.within_text, p.within_image, p.text_to_image, p.image_to_text)),
            )
            for p in self.probes
        ]
        means = [
            sum(getattr(p, k) for p in self.probes) / len(self.probes)
            for k in ("chance", "within_text", "within_image", "text_to_image", "image_to_text")
        ]
        return [*rows, ("mean", "", *(f"{v:.2f}" for v in means))]

    def to_json(self) -> dict:
        return {
            "scenes": self.scenes,
            "layer": self.layer,
            "seed": self.seed,
            "probes": [dataclasses.asdict(p) | {"within": p.within, "cross": p.cross} for p in self.probes],
            "summary": self.summary(),
            "ready": self.ready,
            "ready_threshold": self.ready_threshold,
            "verdict": self.verdict(),
            "notes": self.notes,
        }


def transfer(within: float, cross: float, chance: float) -> float:
    """Share of the above-chance within-modality accuracy that survives the change of modality."""
    headroom = within - chance
    return float(max(0.0, cross - chance) / headroom) if headroom > 1e-9 else 0.0


# --------------------------------------------------------------------------------------- labels
def scene_labels(scene: Scene) -> dict[str, str | None]:
    """Attribute -> label of one scene (None: the attribute does not apply to this scene)."""
    only = scene.objects[0] if len(scene.objects) == 1 else None
    return {
        "colour": only.colour if only else None,
        "shape": only.shape if only else None,
        "size": only.size if only else None,
        "style": only.style if only else None,
        "count": str(len(scene.objects)),
        "background": scene.background,
    }


# ---------------------------------------------------------------------------------------- probe
def fit_probe(
    x: np.ndarray, y: np.ndarray, classes: int, l2: float = PROBE_L2, iterations: int = 100
) -> Callable[[np.ndarray], np.ndarray]:
    """Multinomial logistic regression (L-BFGS, ridge) on features standardised with the *training*
    statistics; returns a predict function. The same standardisation is applied to any test modality,
    so a probe only transfers if the other modality lives on the same coordinates."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / std).double()
    yt = torch.from_numpy(y).long()
    w = torch.zeros(x.shape[1], classes, dtype=torch.double, requires_grad=True)
    b = torch.zeros(classes, dtype=torch.double, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=iterations, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    weights, bias = w.detach().numpy(), b.detach().numpy()

    def predict(features: np.ndarray) -> np.ndarray:
        return (((features - mean) / std) @ weights + bias).argmax(1)

    return predict


def probe_attribute(
    name: str,
    labels: list[str | None],
    text: np.ndarray,
    image: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
) -> AttributeProbe | None:
    """Within- and cross-modality accuracies of one attribute; None when too few scenes carry it."""
    keep = np.array([lab is not None for lab in labels])
    tr, te = train[keep[train]], test[keep[test]]
    train_labels = [labels[i] for i in tr]
    if len(tr) < 8 or len(te) < 4 or len(set(train_labels)) < 2:
        return None
    names = sorted(set(train_labels))
    index = {c: i for i, c in enumerate(names)}
    # A class that never occurs in training cannot be predicted: those test scenes count as errors.
    y = np.array([index.get(labels[i], -1) for i in range(len(labels))])
    majority = Counter(train_labels).most_common(1)[0][0]
    chance = float(np.mean([labels[i] == majority for i in te]))

    def accuracy(predict, features: np.ndarray) -> float:
        return float(np.mean(predict(features[te]) == y[te]))

    on_text = fit_probe(text[tr], y[tr], len(names))
    on_image = fit_probe(image[tr], y[tr], len(names))
    return AttributeProbe(
        attribute=name,
        classes=len(names),
        n_train=len(tr),
        n_test=len(te),
        chance=chance,
        within_text=accuracy(on_text, text),
        within_image=accuracy(on_image, image),
        text_to_image=accuracy(on_text, image),
        image_to_text=accuracy(on_image, text),
    )


# ----------------------------------------------------------------------------------- features
@torch.no_grad()
def modality_states(
    model: ConditionStatesModel, scenes: list[Scene], layer: int = -1, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled trunk states (N, H) of each scene's dense-caption prompt and of its image prompt."""
    if not isinstance(model, ConditionStatesModel):
        raise TypeError(
            f"{type(model).__name__} has no condition_hidden_states(conditions, layer); "
            "the alignment diagnostic needs it (see reca_eval.models.protocol.ConditionStatesModel)"
        )
    size = int(model.image_size)
    text_rows, image_rows = [], []
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        captions = [caption(s, "dense", s.seed, hide_uncaptioned=False) for s in chunk]
        text_rows.append(model.condition_hidden_states([Condition.text(c) for c in captions], layer=layer))
        pixels = model.preprocess([render_scene(s, max(32, size)).resize((size, size)) for s in chunk])
        features = model.understanding_embeddings(pixels)
        conditions = [Condition([DIAGNOSTIC_INSTRUCTION, ImageEmbeds(f)]) for f in features]
        image_rows.append(model.condition_hidden_states(conditions, layer=layer))
    text = torch.cat(text_rows).float().cpu().numpy()
    image = torch.cat(image_rows).float().cpu().numpy()
    return text.astype(np.float64), image.astype(np.float64)


def held_out_scenes(count: int, seed: int = HELD_OUT_STREAM) -> list[Scene]:
    """Alternately a single-object scene and a scene of 1-4 objects, with training colour frequencies,
    from a stream the ShapeWorld trainer never draws."""
    scenes = []
    for i in range(count):
        rng = random.Random(f"alignment-diagnostic:{seed}:{i}")
        objects = 1 if i % 2 == 0 else rng.randint(1, 4)
        scenes.append(random_scene(rng.randrange(2**31), combos=[sample_combo(rng) for _ in range(objects)]))
    return scenes


def diagnose_from_states(
    text: np.ndarray, image: np.ndarray, scenes: list[Scene], layer: int = -1, seed: int = HELD_OUT_STREAM
) -> AlignmentReport:
    """Probe every attribute on given states (the first half of the scenes trains, the second tests)."""
    if text.shape != image.shape or text.shape[0] != len(scenes):
        raise ValueError(f"states {text.shape} / {image.shape} do not match {len(scenes)} scenes")
    order = np.arange(len(scenes))
    train, test = order[: len(scenes) // 2], order[len(scenes) // 2 :]
    labels = [scene_labels(s) for s in scenes]
    probes, notes = [], []
    for name in ATTRIBUTES:
        probe = probe_attribute(name, [lab[name] for lab in labels], text, image, train, test)
        if probe is None:
            notes.append(f"{name}: skipped (too few scenes carry it among {len(scenes)})")
        else:
            probes.append(probe)
    if not probes:
        raise ValueError(f"no attribute could be probed on {len(scenes)} scenes; use more scenes")
    return AlignmentReport(probes=probes, scenes=len(scenes), layer=layer, seed=seed, notes=notes)


def diagnose_alignment(
    model: ConditionStatesModel, scenes: int = 400, layer: int = -1, seed: int = HELD_OUT_STREAM
) -> AlignmentReport:
    """The diagnostic on ``scenes`` held-out ShapeWorld scenes (stream ``seed``): half train, half test."""
    if scenes < 24:
        raise ValueError(f"scenes must be >= 24 (half trains the probes, half tests them), got {scenes}")
    chosen = held_out_scenes(scenes, seed)
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    try:
        text, image = modality_states(model, chosen, layer=layer)
    finally:
        if was_training:
            model.train()
    return diagnose_from_states(text, image, chosen, layer=layer, seed=seed)
