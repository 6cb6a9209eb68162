"""The bad-input corpus: every file the `reca-eval` command reads, broken in the ways users break them.

:func:`build_base` writes the good inputs once (two-item item files of the three ShapeWorld benchmarks,
their reference renders, a results folder with one run of each); every case copies what it needs into
its own work folder, breaks it, and says which exit codes are documented for it and what the message
must name. ``python -m tests.reliability.report`` runs them all and prints the figures.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path

from PIL import Image

from tests.reliability.harness import Call, Case

OK, REGRESSION, BAD, SKIPS, IO = 0, 1, 2, 3, 4
BENCHES = ("shapes-geneval", "shapes-dpg", "shapes-edit")
ITEM_FILE = {"shapes-geneval": "items.jsonl", "shapes-dpg": "questions.csv", "shapes-edit": "items.jsonl"}
REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Path] = {}


# --------------------------------------------------------------------------------------------- inputs


def build_base(root: Path) -> Path:
    """The good inputs every case starts from (built once per test session)."""
    from reca_eval.evaluation.references import write_reference_folder
    from reca_eval.evaluation.score import score_images

    root = Path(root)
    items = root / "items"
    items.mkdir(parents=True)
    bench_dir = REPO / "benchmarks"
    lines = (bench_dir / "shapes-geneval" / "items.jsonl").read_text().splitlines()
    (items / "shapes-geneval.jsonl").write_text("\n".join([lines[0], lines[100]]) + "\n")
    lines = (bench_dir / "shapes-edit" / "items.jsonl").read_text().splitlines()
    (items / "shapes-edit.jsonl").write_text("\n".join(lines[:2]) + "\n")
    rows = list(csv.reader(io.StringIO((bench_dir / "shapes-dpg" / "questions.csv").read_text())))
    keep = sorted({r[0] for r in rows[1:]})[:2]
    with open(items / "shapes-dpg.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([rows[0]] + [r for r in rows[1:] if r[0] in keep])
    for name in BENCHES:
        write_reference_folder(name, root / "images" / name, items_path=item_path(root, name))
        score_images(
            name,
            root / "images" / name,
            items_path=item_path(root, name),
            label=f"ref-{name}",
            options={"progress": False},
            results_dir=root / "results",
        )
    from reca_eval.results.leaderboard import write_leaderboard

    write_leaderboard(root / "results")
    BASE["root"] = root
    return root


def item_path(root: Path, name: str) -> Path:
    return Path(root) / "items" / (f"{name}.csv" if name == "shapes-dpg" else f"{name}.jsonl")


def stage(work: Path, what: str, as_name: str | None = None) -> Path:
    """Copy ``what`` (a path under the base) into the work folder; returns the copy."""
    src = BASE["root"] / what
    dst = work / (as_name or Path(what).name)
    if src.is_dir():
        shutil.copytree(src, dst, symlinks=True)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    return dst


def items_of(work: Path, name: str) -> Path:
    return stage(work, str(item_path(Path(""), name)), as_name=f"items{Path(ITEM_FILE[name]).suffix}")


def run_argv(name: str, items: str | None = None, images: str = "imgs", *extra: str) -> list[str]:
    argv = ["run", name, "--images", images, "--results", "results"]
    if items is not None:
        argv += ["--items", items]
    return argv + list(extra)


def png_header_bomb(width: int, height: int) -> bytes:
    """A small PNG file whose header claims ``width`` x ``height`` (the pixel data is a few rows only)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    rows = zlib.compress(b"\0" * min((width + 7) // 8 + 1, 4096) * 16, 9)  # a few rows, truncated
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def first_sample(name: str, images: Path) -> Path:
    if name == "shapes-geneval":
        return images / "00000" / "samples" / "00000.png"
    return sorted(images.glob("*_0.png"))[0]


# ------------------------------------------------------------------------------------ item-file cases


def _jsonl_lines(work: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in item_path(BASE["root"], name).read_text().splitlines() if x.strip()]


def item_mutations(name: str) -> dict[str, tuple]:
    """name -> (write(path, good_items), names the message must hold ("" = the item file), codes)."""
    muts: dict[str, tuple] = {
        "empty-file": (lambda p, it: p.write_bytes(b""), ("items",), (BAD,)),
        "blank-lines-only": (lambda p, it: p.write_text("\n\n  \n"), ("items",), (BAD,)),
        "non-utf8": (
            lambda p, it: p.write_bytes(p.read_bytes()[:40] + b"\xff\xfe" + p.read_bytes()[40:]),
            ("items",),
            (BAD,),
        ),
        "nul-bytes": (lambda p, it: p.write_bytes(b"\0" * 64), ("items",), (BAD,)),
        "is-directory": (lambda p, it: (p.unlink(), p.mkdir()), ("items",), (BAD,)),
        "missing": (lambda p, it: p.unlink(), ("items",), (BAD,)),
        "dangling-symlink": (lambda p, it: (p.unlink(), p.symlink_to("nowhere.jsonl")), ("items",), (BAD,)),
        "fifo": (lambda p, it: (p.unlink(), os.mkfifo(p)), ("items",), (BAD,)),
        "binary-png": (lambda p, it: p.write_bytes(png_header_bomb(8, 8)), ("items",), (BAD,)),
        "truncated-half": (
            lambda p, it: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2 + 7]),
            ("items",),
            (BAD,),
        ),
    }
    if name == "shapes-dpg":

        def rewrite(edit):
            def write(p, it):
                rows = list(csv.reader(io.StringIO(p.read_text())))
                rows = edit(rows)
                buf = io.StringIO()
                csv.writer(buf).writerows(rows)
                p.write_text(buf.getvalue())

            return write

        header = next(csv.reader(io.StringIO((REPO / "benchmarks" / name / "questions.csv").read_text())))
        col = header.index
        for column in ("item_id", "text", "proposition_id", "dependency", "tuple", "category_broad"):
            muts[f"drop-column-{column}"] = (
                rewrite(lambda rows, c=col(column): [r[:c] + r[c + 1 :] for r in rows]),
                (column,),
                (BAD,),
            )
        muts["header-only"] = (rewrite(lambda rows: rows[:1]), ("items",), (BAD,))
        muts["proposition-id-text"] = (
            rewrite(
                lambda rows: (
                    rows[:1]
                    + [rows[1][: col("proposition_id")] + ["abc"] + rows[1][col("proposition_id") + 1 :]]
                    + rows[2:]
                )
            ),
            ("proposition_id", ":2", "line 2", "abc"),
            (BAD,),
        )
        muts["proposition-id-nan"] = (
            rewrite(
                lambda rows: (
                    rows[:1]
                    + [rows[1][: col("proposition_id")] + ["nan"] + rows[1][col("proposition_id") + 1 :]]
                    + rows[2:]
                )
            ),
            ("proposition_id", "nan"),
            (BAD,),
        )
        muts["dependency-missing-parent"] = (
            rewrite(
                lambda rows: (
                    rows[:1]
                    + [rows[1][: col("dependency")] + ["99"] + rows[1][col("dependency") + 1 :]]
                    + rows[2:]
                )
            ),
            ("dependency", "99"),
            (BAD,),
        )
        muts["duplicate-proposition"] = (
            rewrite(lambda rows: rows + [rows[1]]),
            ("proposition", "duplicate"),
            (BAD,),
        )
        muts["unanswerable-tuple"] = (
            rewrite(
                lambda rows: (
                    rows[:1]
                    + [rows[1][: col("tuple")] + ["entity - whole (dragon)"] + rows[1][col("tuple") + 1 :]]
                    + rows[2:]
                )
            ),
            ("dragon",),
            (BAD,),
        )
        muts["empty-item-id"] = (
            rewrite(lambda rows: rows[:1] + [[""] + rows[1][1:]] + rows[2:]),
            ("item_id",),
            (BAD,),
        )
        muts["traversal-item-id"] = (
            rewrite(lambda rows: rows[:1] + [["../../escape"] + r[1:] for r in rows[1:]]),
            ("item_id", "../../escape"),
            (BAD,),
        )
        muts["ragged-row"] = (rewrite(lambda rows: rows[:1] + [rows[1][:3]] + rows[2:]), ("items",), (BAD,))
        return muts

    def with_items(edit):
        def write(p, it):
            items = [dict(x) for x in it]
            out = edit(items)
            p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in out))

        return write

    muts["invalid-json-line-2"] = (
        lambda p, it: p.write_text(json.dumps(it[0]) + "\n{not json\n"),
        (":2", "line 2"),
        (BAD,),
    )
    muts["number-line"] = (with_items(lambda items: [items[0], "5"]), (":2", "line 2", "item 2"), (BAD,))
    muts["list-line"] = (with_items(lambda items: ["[1, 2]", items[1]]), (":1", "line 1", "item 1"), (BAD,))
    muts["string-line"] = (with_items(lambda items: ['"x"']), (":1", "line 1", "item 1"), (BAD,))
    muts["null-line"] = (with_items(lambda items: ["null", items[1]]), (":1", "line 1", "item 1"), (BAD,))
    muts["deep-nesting"] = (
        with_items(lambda items: ["[" * 100000 + "]" * 100000]),
        (":1", "line 1", "item 1"),
        (BAD,),
    )
    muts["utf8-bom"] = (lambda p, it: p.write_bytes(b"\xef\xbb\xbf" + p.read_bytes()), ("items",), (BAD, OK))
    if name == "shapes-geneval":
        scene_key = "reference_scene"
        for key in ("tag", "include", "prompt"):
            muts[f"missing-{key}"] = (
                with_items(
                    lambda items, k=key: [{**items[0]}, {kk: v for kk, v in items[1].items() if kk != k}]
                ),
                (key,),
                (BAD,),
            )
        muts["tag-unknown"] = (
            with_items(lambda items: [{**items[0], "tag": "astrology"}]),
            ("tag", "astrology"),
            (BAD,),
        )
        muts["prompt-number"] = (with_items(lambda items: [{**items[0], "prompt": 5}]), ("prompt",), (BAD,))
        muts["include-string"] = (
            with_items(lambda items: [{**items[0], "include": "circle"}]),
            ("include",),
            (BAD,),
        )
        muts["include-count-negative"] = (
            with_items(lambda items: [{**items[0], "include": [{"class": "circle", "count": -1}]}]),
            ("count",),
            (BAD,),
        )
        muts["include-count-nan"] = (
            with_items(
                lambda items: [
                    json.dumps({**items[0], "include": [{"class": "circle", "count": 1}]}).replace(
                        '"count": 1', '"count": NaN'
                    )
                ]
            ),
            ("count", "NaN"),
            (BAD,),
        )
        muts["include-unknown-class"] = (
            with_items(lambda items: [{**items[0], "include": [{"class": "dragon", "count": 1}]}]),
            ("dragon", "class"),
            (BAD,),
        )
    else:
        scene_key = "source_scene"
        for key in ("item_id", "edit_type", "instruction", "source_scene", "target_scene"):
            muts[f"missing-{key}"] = (
                with_items(
                    lambda items, k=key: [{**items[0]}, {kk: v for kk, v in items[1].items() if kk != k}]
                ),
                (key,),
                (BAD,),
            )
        muts["duplicate-item-id"] = (
            with_items(lambda items: [items[0], {**items[1], "item_id": items[0]["item_id"]}]),
            ("item_id", "duplicate"),
            (BAD,),
        )
        muts["edit-type-unknown"] = (
            with_items(lambda items: [{**items[0], "edit_type": "teleport"}]),
            ("edit_type", "teleport"),
            (BAD,),
        )
        muts["item-id-traversal"] = (
            with_items(lambda items: [{**items[0], "item_id": "../../escape-rel"}]),
            ("item_id", "../../escape-rel"),
            (BAD,),
        )
        muts["item-id-absolute"] = (
            with_items(lambda items: [{**items[0], "item_id": str(BASE["root"].parent / "abs-escape")}]),
            ("item_id",),
            (BAD,),
        )
        muts["item-id-empty"] = (
            with_items(lambda items: [{**items[0], "item_id": ""}]),
            ("item_id",),
            (BAD,),
        )
        muts["item-id-slash"] = (
            with_items(lambda items: [{**items[0], "item_id": "a/b"}]),
            ("item_id", "a/b"),
            (BAD,),
        )
        muts["item-id-nul"] = (
            with_items(lambda items: [{**items[0], "item_id": "a\u0000b"}]),
            ("item_id",),
            (BAD,),
        )
        muts["item-id-number"] = (
            with_items(lambda items: [{**items[0], "item_id": 7}]),
            ("item_id", "imgs"),
            (BAD, OK),
        )
        muts["instruction-list"] = (
            with_items(lambda items: [{**items[0], "instruction": ["x"]}]),
            ("instruction",),
            (BAD,),
        )
        muts["target-scene-string"] = (
            with_items(lambda items: [{**items[0], "target_scene": "x"}]),
            ("target_scene",),
            (BAD,),
        )
    muts["scene-string"] = (with_items(lambda items: [{**items[0], scene_key: "x"}]), (scene_key,), (BAD,))
    muts["scene-objects-dict"] = (
        with_items(lambda items: [{**items[0], scene_key: {**items[0][scene_key], "objects": {"a": 1}}}]),
        (scene_key, "objects"),
        (BAD,),
    )
    muts["scene-unknown-shape"] = (
        with_items(
            lambda items: [
                {
                    **items[0],
                    scene_key: {
                        **items[0][scene_key],
                        "objects": [{**items[0][scene_key]["objects"][0], "shape": "dragon"}],
                    },
                }
            ]
        ),
        ("dragon", "shape"),
        (BAD,),
    )
    muts["scene-x-string"] = (
        with_items(
            lambda items: [
                {
                    **items[0],
                    scene_key: {
                        **items[0][scene_key],
                        "objects": [{**items[0][scene_key]["objects"][0], "x": "left"}],
                    },
                }
            ]
        ),
        ("'x'", " x ", "x:", "left"),
        (BAD,),
    )
    muts["scene-x-nan"] = (
        with_items(
            lambda items: [
                json.dumps(
                    {
                        **items[0],
                        scene_key: {
                            **items[0][scene_key],
                            "objects": [{**items[0][scene_key]["objects"][0], "x": 0.5}],
                        },
                    }
                ).replace('"x": 0.5', '"x": NaN')
            ]
        ),
        ("NaN", "nan", "'x'"),
        (BAD,),
    )
    muts["scene-x-huge"] = (
        with_items(
            lambda items: [
                {
                    **items[0],
                    scene_key: {
                        **items[0][scene_key],
                        "objects": [{**items[0][scene_key]["objects"][0], "x": 1e308}],
                    },
                }
            ]
        ),
        ("'x'", "x ", "1e+308"),
        (BAD,),
    )
    muts["scene-background-unknown"] = (
        with_items(lambda items: [{**items[0], scene_key: {**items[0][scene_key], "background": "plaid"}}]),
        ("plaid", "background"),
        (BAD,),
    )
    return muts


def item_cases() -> list[Case]:
    cases = []
    for name in BENCHES:
        for mut, (write, names, codes) in item_mutations(name).items():

            def make_validate(work, name=name, write=write, names=names, codes=codes):
                p = items_of(work, name)
                write(p, _jsonl_lines(work, name) if p.suffix == ".jsonl" else None)
                return Call(["validate", name, "--items", p.name], codes, (*names, p.name))

            def make_run(work, name=name, write=write, names=names, codes=codes):
                p = items_of(work, name)
                write(p, _jsonl_lines(work, name) if p.suffix == ".jsonl" else None)
                stage(work, f"images/{name}", "imgs")
                return Call(
                    run_argv(name, p.name),
                    codes if OK not in codes else (OK, BAD, SKIPS),
                    (*names, p.name),
                    writes=("results",),
                )

            cases.append(Case(f"items/{name}/{mut}/validate", make_validate))
            cases.append(Case(f"items/{name}/{mut}/run", make_run))
            if name != "shapes-dpg" or mut in ("traversal-item-id", "empty-file", "non-utf8", "is-directory"):

                def make_render(work, name=name, write=write, names=names, codes=codes):
                    p = items_of(work, name)
                    write(p, _jsonl_lines(work, name) if p.suffix == ".jsonl" else None)
                    (work / "out").mkdir()
                    return Call(
                        ["render-references", name, "out/refs", "--items", p.name],
                        codes,
                        (*names, p.name),
                        writes=("out",),
                    )

                cases.append(Case(f"items/{name}/{mut}/render-references", make_render))
    return cases


# -------------------------------------------------------------------------------------- image folders


def _save(path: Path, image: Image.Image, **kw) -> None:
    path.unlink(missing_ok=True)
    image.save(path, format="PNG", **kw) if "format" not in kw else image.save(path, **kw)


def image_mutations(name: str) -> dict[str, tuple]:
    """name -> (break(image folder, first sample), codes, names, must the mutated path be a skip)."""

    def converted(mode):
        def write(d, s):
            with Image.open(s) as im:
                rgb = im.convert("RGB")
            if mode == "I;16":
                img = rgb.convert("L").convert("I;16")
            elif mode == "CMYK":
                s.unlink()
                rgb.convert("CMYK").save(s.with_suffix(".jpg"), quality=100)  # PNG holds no CMYK
                return
            else:
                img = rgb.convert(mode)
            _save(s, img)

        return write

    muts: dict[str, tuple] = {
        "corrupt-bytes": (lambda d, s: s.write_bytes(b"\x89PNG garbage" * 10), (SKIPS,), (), True),
        "truncated": (lambda d, s: s.write_bytes(s.read_bytes()[:60]), (SKIPS,), (), True),
        "zero-byte": (lambda d, s: s.write_bytes(b""), (SKIPS,), (), True),
        "wrong-size": (lambda d, s: _save(s, Image.new("RGB", (63, 64))), (SKIPS,), (), True),
        "directory-as-image": (lambda d, s: (s.unlink(), s.mkdir()), (SKIPS,), (), True),
        "dangling-symlink": (lambda d, s: (s.unlink(), s.symlink_to("nowhere.png")), (SKIPS,), (), True),
        "symlink-loop": (lambda d, s: (s.unlink(), s.symlink_to(s.name)), (SKIPS,), (), True),
        "symlink-to-good": (
            lambda d, s: (shutil.move(s, d / "good.bin"), s.symlink_to((d / "good.bin").resolve())),
            (SKIPS,),
            (),
            False,
        ),
        "fifo": (lambda d, s: (s.unlink(), os.mkfifo(s)), (SKIPS,), (), True),
        "bomb-20000": (lambda d, s: s.write_bytes(png_header_bomb(20000, 20000)), (SKIPS,), (), True),
        "bomb-13000": (lambda d, s: s.write_bytes(png_header_bomb(13000, 13000)), (SKIPS,), (), True),
        "huge-header-only": (lambda d, s: s.write_bytes(png_header_bomb(2**31 - 1, 1)), (SKIPS,), (), True),
        "palette": (converted("P"), (OK,), (), False),
        "rgba": (converted("RGBA"), (OK,), (), False),
        "la": (converted("LA"), (OK,), (), False),
        "one-bit": (converted("1"), (OK, SKIPS), (), False),
        "sixteen-bit": (converted("I;16"), (OK,), (), False),
        "stray-file": (lambda d, s: (d / "notes.txt").write_text("hello"), (SKIPS,), (), False),
        "non-utf8-file-name": (
            lambda d, s: open(os.path.join(os.fsencode(d), b"bad\xff.png"), "wb").close(),
            (SKIPS,),
            (),
            False,
        ),
        "hidden-file": (lambda d, s: (d / ".DS_Store").write_bytes(b"\0\0"), (SKIPS,), (), False),
        "empty-folder": (
            lambda d, s: [shutil.rmtree(p) if p.is_dir() else p.unlink() for p in list(d.iterdir())],
            (BAD,),
            ("imgs",),
            False,
        ),
        "folder-is-file": (lambda d, s: (shutil.rmtree(d), d.write_text("x")), (BAD,), ("imgs",), False),
        "folder-missing": (lambda d, s: shutil.rmtree(d), (BAD,), ("imgs",), False),
        "folder-fifo": (lambda d, s: (shutil.rmtree(d), os.mkfifo(d)), (BAD,), ("imgs",), False),
    }
    if name == "shapes-geneval":
        meta = lambda d: d / "00000" / "metadata.jsonl"  # noqa: E731
        muts.update(
            {
                "stray-folder-superscript": (lambda d, s: (d / "²").mkdir(), (SKIPS,), (), False),
                "stray-folder-arabic-digit": (lambda d, s: (d / "٣").mkdir(), (SKIPS,), (), False),
                "folder-symlink-loop": (lambda d, s: (d / "00007").symlink_to("00007"), (SKIPS,), (), False),
                "samples-symlink-loop": (
                    lambda d, s: (
                        shutil.rmtree(d / "00001" / "samples"),
                        (d / "00001" / "samples").symlink_to("samples"),
                    ),
                    (SKIPS,),
                    (),
                    False,
                ),
                "samples-is-file": (
                    lambda d, s: (
                        shutil.rmtree(d / "00001" / "samples"),
                        (d / "00001" / "samples").write_text("x"),
                    ),
                    (SKIPS,),
                    (),
                    False,
                ),
                "metadata-missing": (lambda d, s: meta(d).unlink(), (BAD,), ("metadata.jsonl",), False),
                "metadata-directory": (
                    lambda d, s: (meta(d).unlink(), meta(d).mkdir()),
                    (BAD,),
                    ("metadata.jsonl",),
                    False,
                ),
                "metadata-non-utf8": (
                    lambda d, s: meta(d).write_bytes(b"\xff\xfe{}"),
                    (BAD,),
                    ("metadata.jsonl",),
                    False,
                ),
                "metadata-empty": (lambda d, s: meta(d).write_bytes(b""), (BAD,), ("metadata.jsonl",), False),
                "metadata-differs": (
                    lambda d, s: meta(d).write_text('{"prompt": "x"}\n'),
                    (BAD,),
                    ("metadata.jsonl",),
                    False,
                ),
                "metadata-fifo": (
                    lambda d, s: (meta(d).unlink(), os.mkfifo(meta(d))),
                    (BAD,),
                    ("metadata.jsonl",),
                    False,
                ),
                "metadata-nan": (
                    lambda d, s: meta(d).write_text(meta(d).read_text().replace("1", "NaN", 1)),
                    (BAD,),
                    ("metadata.jsonl",),
                    False,
                ),
                "one-item-folder-only": (
                    lambda d, s: [shutil.rmtree(p) for p in d.iterdir() if p.name != "00000"] and None,
                    (SKIPS,),
                    (),
                    False,
                ),
                "extra-sample": (lambda d, s: shutil.copy(s, s.parent / "00009.png"), (OK,), (), False),
                "grid-present": (lambda d, s: shutil.copy(s, d / "00000" / "grid.png"), (OK,), (), False),
                "unpadded-names": (lambda d, s: os.rename(d / "00001", d / "1"), (OK,), (), False),
                "extra-item-folder": (
                    lambda d, s: shutil.copytree(d / "00001", d / "00002"),
                    (SKIPS,),
                    (),
                    False,
                ),
                "latin1-folder": (None, (OK,), (), False),
                "dpg-layout-given": (None, (BAD,), ("imgs",), False),
            }
        )
    else:
        muts.update(
            {
                "jpg-duplicate": (
                    lambda d, s: Image.open(s).convert("RGB").save(s.with_suffix(".jpg")),
                    (SKIPS,),
                    (),
                    False,
                ),
                "sample-index-out-of-range": (
                    lambda d, s: shutil.copy(s, s.with_name(s.name.replace("_0.png", "_9.png"))),
                    (SKIPS,),
                    (),
                    False,
                ),
                "unknown-item": (lambda d, s: shutil.copy(s, d / "nobody_0.png"), (SKIPS,), (), False),
                "sub-folder": (lambda d, s: (d / "sub").mkdir(), (SKIPS,), (), False),
                "latin1-folder": (None, (OK,), (), False),
                "geneval-layout-given": (None, (BAD,), ("imgs",), False),
            }
        )
    muts["unchanged"] = (lambda d, s: None, (OK,), (), False)
    return muts


def image_cases() -> list[Case]:
    cases = []
    for name in BENCHES:
        for mut, (brk, codes, names, skipped) in image_mutations(name).items():

            def make(work, name=name, mut=mut, brk=brk, codes=codes, names=names, skipped=skipped):
                items = items_of(work, name)
                folder = "imgs"
                if mut == "latin1-folder":
                    folder = os.fsdecode(b"imgs-\xe9t\xe9")
                    stage(work, f"images/{name}", folder)
                elif mut.endswith("-layout-given"):
                    other = "shapes-dpg" if name == "shapes-geneval" else "shapes-geneval"
                    stage(work, f"images/{other}", folder)
                else:
                    d = stage(work, f"images/{name}", folder)
                    sample = first_sample(name, d)
                    brk(d, sample)
                after = None
                if skipped:

                    def after(w, name=name, folder=folder):
                        return _skip_named(w, first_sample_path(name, w / folder))

                return Call(
                    run_argv(name, items.name, folder),
                    codes,
                    names,
                    writes=("results",),
                    scored=folder if codes != (BAD,) else None,
                    after=after,
                )

            cases.append(Case(f"images/{name}/{mut}", make))
    return cases


def first_sample_path(name: str, images: Path) -> Path:
    if name == "shapes-geneval":
        return images / "00000" / "samples" / "00000.png"
    ids = (
        [json.loads(x)["item_id"] for x in item_path(BASE["root"], name).read_text().splitlines()]
        if name == "shapes-edit"
        else None
    )
    if ids is None:
        rows = list(csv.reader(io.StringIO(item_path(BASE["root"], name).read_text())))
        ids = sorted({r[0] for r in rows[1:]})
    return images / f"{sorted(ids)[0]}_0.png"


def _skip_named(work: Path, path: Path) -> list[str]:
    """The broken sample is one of the record's skips, with a reason."""
    records = list((work / "results" / "runs").glob("*/record.json"))
    if len(records) != 1:
        return [f"expected one record, found {len(records)}"]
    skips = json.loads(records[0].read_text())["skips"]
    if not any(os.path.normpath(work / s["path"]) == str(path) and s["reason"] for s in skips):
        return [f"{path} is not among the skips: {[s['path'] for s in skips]}"]
    return []


# ------------------------------------------------------------------------------------ results folders


def _run_folder(work: Path, name: str = "shapes-geneval") -> Path:
    return next(p for p in (work / "results" / "runs").iterdir() if f"-{name}-" in p.name)


def _edit_record(edit):
    def write(run: Path):
        path = run / "record.json"
        data = json.loads(path.read_text())
        out = edit(data)
        path.write_text(out if isinstance(out, str) else json.dumps(out))

    return write


def record_mutations() -> dict[str, tuple]:
    """name -> (break(run folder), what the message or warning must name, is the run still usable)."""
    rec = lambda r: r / "record.json"  # noqa: E731
    per = lambda r: r / "per_image.jsonl"  # noqa: E731
    return {
        "invalid-json": (lambda r: rec(r).write_text("{"), ("record.json",), False),
        "empty": (lambda r: rec(r).write_bytes(b""), ("record.json",), False),
        "non-utf8": (lambda r: rec(r).write_bytes(b"\xff" + rec(r).read_bytes()), ("record.json",), False),
        "top-level-list": (lambda r: rec(r).write_text("[]"), ("record.json",), False),
        "nan-overall": (
            _edit_record(
                lambda d: json.dumps({**d, "scores": {**d["scores"], "overall": 0.5}}).replace(
                    '"overall": 0.5', '"overall": NaN'
                )
            ),
            ("record.json",),
            False,
        ),
        "infinity-score": (
            _edit_record(
                lambda d: json.dumps({**d, "scores": {**d["scores"], "overall": 0.5}}).replace(
                    '"overall": 0.5', '"overall": Infinity'
                )
            ),
            ("record.json",),
            False,
        ),
        "score-above-range-huge": (
            _edit_record(lambda d: {**d, "scores": {**d["scores"], "overall": 1e308}}),
            ("record.json",),
            False,
        ),
        "label-list": (_edit_record(lambda d: {**d, "label": ["a", "b"]}), ("record.json",), False),
        "label-dict": (_edit_record(lambda d: {**d, "label": {"a": 1}}), ("record.json",), False),
        "model-dict": (_edit_record(lambda d: {**d, "model": {"a": 1}}), ("record.json",), False),
        "benchmark-list": (
            _edit_record(lambda d: {**d, "benchmark": ["shapes-geneval"]}),
            ("record.json",),
            False,
        ),
        "benchmark-unknown": (
            _edit_record(lambda d: {**d, "benchmark": "astrology"}),
            ("record.json",),
            False,
        ),
        "scores-list": (_edit_record(lambda d: {**d, "scores": [1, 2]}), ("record.json",), False),
        "scores-string": (
            _edit_record(lambda d: {**d, "scores": {**d["scores"], "overall": "high"}}),
            ("record.json",),
            False,
        ),
        "scores-no-overall": (_edit_record(lambda d: {**d, "scores": {"x": 0.1}}), ("record.json",), False),
        "skips-strings": (_edit_record(lambda d: {**d, "skips": ["a"]}), ("record.json",), False),
        "images-scored-string": (
            _edit_record(lambda d: {**d, "images_scored": "many"}),
            ("record.json",),
            False,
        ),
        "missing-field": (
            _edit_record(lambda d: {k: v for k, v in d.items() if k != "items_sha256"}),
            ("record.json",),
            False,
        ),
        "spec-version-number": (_edit_record(lambda d: {**d, "spec_version": 1.1}), ("record.json",), False),
        "created-number": (_edit_record(lambda d: {**d, "created": 5}), ("record.json",), False),
        "record-directory": (lambda r: (rec(r).unlink(), rec(r).mkdir()), ("record.json",), False),
        "record-fifo": (lambda r: (rec(r).unlink(), os.mkfifo(rec(r))), ("record.json",), False),
        "per-image-missing": (lambda r: per(r).unlink(), ("per_image.jsonl",), False),
        "per-image-corrupt": (lambda r: per(r).write_text("{oops\n"), ("per_image.jsonl",), False),
        "per-image-empty": (lambda r: per(r).write_bytes(b""), ("per_image.jsonl",), False),
        "per-image-nan": (
            lambda r: per(r).write_text(per(r).read_text().replace('"score":1.0', '"score":NaN', 1)),
            ("per_image.jsonl",),
            False,
        ),
        "edited-score": (
            _edit_record(
                lambda d: {
                    **d,
                    "scores": {**d["scores"], "overall": 1.0 if d["scores"]["overall"] < 1 else 0.25},
                }
            ),
            ("record.json",),
            False,
        ),
        "per-image-edited": (
            lambda r: per(r).write_text(per(r).read_text().replace('"score":1.0', '"score":0.0')),
            ("per_image.jsonl",),
            False,
        ),
        "label-rich-close": (_edit_record(lambda d: {**d, "label": "[/]"}), (), True),
        "label-markup": (_edit_record(lambda d: {**d, "label": "[baseline]"}), ("[baseline]",), True),
        "label-escape-codes": (_edit_record(lambda d: {**d, "label": "a\x1b[31mred\x1b[0m"}), (), True),
        "label-latin1-surrogates": (
            _edit_record(lambda d: json.dumps({**d, "label": "imgs-\udce9t\udce9"})),
            (),
            True,
        ),
        "label-very-long": (_edit_record(lambda d: {**d, "label": "x" * 5000}), (), True),
    }


def results_cases() -> list[Case]:
    cases = []
    for mut, (brk, names, usable) in record_mutations().items():

        def make_board(work, brk=brk, names=names, usable=usable, fmt=None):
            stage(work, "results")
            brk(_run_folder(work))
            argv = ["leaderboard", "--results", "results"] + (["-f", fmt, "-O", "board.out"] if fmt else [])
            return Call(
                argv,
                (OK,),
                names,
                writes=("board.out", "results"),
                # A bad record is named in a warning; a usable one's label shows in the table.
                shows=names if not usable or fmt is None else (),
                hides=("\x1b[31m",),
            )

        def make_run(work, brk=brk, names=names, usable=usable):
            stage(work, "results")
            brk(_run_folder(work))
            items = items_of(work, "shapes-edit")
            stage(work, "images/shapes-edit", "imgs")
            return Call(
                run_argv("shapes-edit", items.name),
                (OK,),
                names,
                writes=("results",),
                shows=names if not usable else (),
                hides=("\x1b[31m",),
                after=_board_fresh,
            )

        def make_compare(work, brk=brk, names=names, usable=usable):
            stage(work, "results")
            run = _run_folder(work)
            brk(run)
            other = work / "results" / "runs" / "copy"
            return (
                Call(
                    [
                        "compare",
                        str(run.relative_to(work)),
                        str(run.relative_to(work)),
                        "--results",
                        "results",
                        "--n-boot",
                        "50",
                    ],
                    (OK,) if usable else (BAD,),
                    names or ("record.json",),
                    hides=("\x1b[31m",),
                )
                if other
                else None
            )

        def make_check(work, brk=brk, names=names, usable=usable):
            stage(work, "results")
            run = _run_folder(work)
            brk(run)
            return Call(
                [
                    "check",
                    "--baseline",
                    str(run.relative_to(work)),
                    "--run",
                    str(run.relative_to(work)),
                    "--results",
                    "results",
                    "--n-boot",
                    "50",
                ],
                (OK, REGRESSION) if usable else (BAD,),
                names or ("record.json",),
                hides=("\x1b[31m",),
            )

        cases.append(Case(f"results/{mut}/leaderboard", make_board))
        cases.append(Case(f"results/{mut}/leaderboard-json", lambda w, f=make_board: f(w, fmt="json")))
        cases.append(Case(f"results/{mut}/run-into", make_run))
        cases.append(Case(f"results/{mut}/compare", make_compare))
        cases.append(Case(f"results/{mut}/check", make_check))
    return cases


def _board_fresh(work: Path) -> list[str]:
    """The leaderboard files exist, are strict JSON, and list the run just made."""
    path = work / "results" / "leaderboard.json"
    if not path.is_file():
        return ["no leaderboard.json"]
    text = path.read_text()
    if "shapes-edit" not in text:
        return ["leaderboard.json lacks the new run"]
    return []


# ------------------------------------------------------------------------- numbers, options, env, faults


def _with_run(work: Path, name: str = "shapes-geneval") -> tuple[Path, Path]:
    items = items_of(work, name)
    stage(work, f"images/{name}", "imgs")
    return items, work / "imgs"


def _raise_on(target: str, errno_: int, match: str = ""):
    """A monkeypatch that makes ``target`` (module.attr) fail with OSError(errno_) on paths containing ``match``."""
    import errno as errno_mod

    def patch(mp):
        import importlib

        module_name, attr = target.rsplit(".", 1)
        module = importlib.import_module(module_name)
        real = getattr(module, attr)

        def failing(*args, **kwargs):
            text = " ".join(str(a) for a in args) + " " + " ".join(str(v) for v in kwargs.values())
            if match in text:
                named = args[0] if args and isinstance(args[0], str | os.PathLike) else None
                raise OSError(errno_, os.strerror(errno_), named)
            return real(*args, **kwargs)

        mp.setattr(module, attr, failing)

    assert errno_mod.errorcode[errno_]
    return patch


def _no_torch(mp):
    import sys

    for mod in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        mp.delitem(sys.modules, mod)
    mp.setitem(sys.modules, "torch", None)


def cli_cases() -> list[Case]:
    import errno

    cases: list[Case] = []

    def add(name, make):
        cases.append(Case(name, make))

    for value in ("nan", "inf", "-inf", "-1", "-0.5", "abc", "1e400"):

        def make(w, value=value):
            stage(w, "results")
            base = _run_folder(w)
            return Call(
                [
                    "check",
                    "--baseline",
                    str(base.relative_to(w)),
                    "--run",
                    str(base.relative_to(w)),
                    "--results",
                    "results",
                    "--tolerance",
                    value,
                ],
                (BAD,),
                ("tolerance",),
            )

        add(f"numbers/check-tolerance={value}", make)
    for flag, value in (
        ("--n-boot", "-5"),
        ("--n-boot", "0"),
        ("--n-boot", "nan"),
        ("--n-boot", "10000000000000"),
        ("--seed", "-1"),
        ("--seed", "abc"),
    ):
        for command in ("compare", "check"):

            def make(w, flag=flag, value=value, command=command):
                stage(w, "results")
                base = str(_run_folder(w).relative_to(w))
                argv = (
                    ["compare", base, base]
                    if command == "compare"
                    else ["check", "--baseline", base, "--run", base]
                )
                return Call([*argv, "--results", "results", flag, value], (BAD,), (flag.strip("-"), flag))

            add(f"numbers/{command}{flag}={value}", make)
    for opt in (
        "resolution=-5",
        "resolution=0",
        "resolution=100000",
        "resolution=null",
        "resolution=[64]",
        "resolution=abc",
        "resolution=NaN",
        "resolution=1e999",
        "resolution=64.5",
        "resoltion=64",
        "resolution",
        "=64",
        "progress=maybe",
    ):
        for name in BENCHES:

            def make(w, opt=opt, name=name):
                items, _ = _with_run(w, name)
                return Call(
                    run_argv(name, items.name, "imgs", "-o", opt),
                    (BAD,),
                    (opt.split("=")[0] or opt, "option"),
                    writes=("results",),
                )

            add(f"options/{name}/{opt}", make)
    for label, shows in (
        ("[/]", "[/]"),
        ("[baseline]", "[baseline]"),
        ("a\x1b[31mred", "red"),
        ("[bold]x[/bold]", "[bold]x"),
        ("", ""),
        ("x" * 300, "x" * 20),
        ("../../escape", "escape"),
        ("tab\there", "here"),
    ):

        def make(w, label=label, shows=shows):
            items, _ = _with_run(w)
            return Call(
                run_argv("shapes-geneval", items.name, "imgs", "--label", label),
                (OK,),
                (),
                writes=("results",),
                shows=(shows,),
                hides=("\x1b[31m",),
                after=_two_runs_board(label),
            )

        add(f"labels/{label.encode('unicode_escape').decode()[:20]}", make)

    def results_is_file(w):
        items, _ = _with_run(w)
        (w / "results").write_text("not a folder")
        return Call(run_argv("shapes-geneval", items.name), (BAD, IO), ("results",))

    add("writes/results-is-a-file", results_is_file)

    def runs_is_file(w):
        items, _ = _with_run(w)
        (w / "results").mkdir()
        (w / "results" / "runs").write_text("x")
        return Call(run_argv("shapes-geneval", items.name), (BAD, IO), ("runs",))

    add("writes/runs-is-a-file", runs_is_file)

    for where, target, match in (
        ("read-only-results", "tempfile.mkstemp", "results"),
        ("read-only-results-mkdir", "os.mkdir", "results"),
        ("full-disk-per-image", "os.replace", "per_image"),
        ("full-disk-record", "os.replace", "record.json"),
        ("full-disk-leaderboard", "os.replace", "leaderboard"),
        ("full-disk-any-write", "os.fsync", ""),
    ):
        for err in (errno.ENOSPC, errno.EROFS, errno.EACCES):

            def make(w, target=target, match=match, err=err, where=where):
                items, _ = _with_run(w)
                stage(w, "results")
                before = sorted(p.name for p in (w / "results" / "runs").iterdir())
                return Call(
                    run_argv("shapes-geneval", items.name),
                    (IO,),
                    ("results",),
                    writes=("results",),
                    patch=_raise_on(target, err, match),
                    after=_no_half_state(before, leaderboard=True),
                )

            add(f"writes/{where}/{errno.errorcode[err]}", make)

    def render_into_file(w):
        items = items_of(w, "shapes-geneval")
        (w / "out").write_text("x")
        return Call(["render-references", "shapes-geneval", "out", "--items", items.name], (BAD,), ("out",))

    add("writes/render-into-existing-file", render_into_file)

    def render_under_file(w):
        items = items_of(w, "shapes-geneval")
        (w / "out").write_text("x")
        return Call(
            ["render-references", "shapes-geneval", "out/sub", "--items", items.name], (BAD, IO), ("out",)
        )

    add("writes/render-under-a-file", render_under_file)

    def board_output_dir(w):
        stage(w, "results")
        (w / "board").mkdir()
        return Call(
            ["leaderboard", "--results", "results", "-f", "json", "-O", "board"],
            (BAD, IO),
            ("board",),
            writes=("board",),
        )

    add("writes/leaderboard-output-is-a-folder", board_output_dir)

    def data_env_file(w):
        (w / "data").write_text("x")
        return Call(["list"], (OK,), (), env={"RECA_EVAL_DATA": str(w / "data")})

    add("env/data-is-a-file", data_env_file)

    def data_env_file_run(w):
        (w / "data").write_text("x")
        stage(w, "images/shapes-geneval", "imgs")
        return Call(
            ["run", "geneval", "--images", "imgs", "--results", "results"],
            (BAD,),
            ("data", "geneval"),
            env={"RECA_EVAL_DATA": str(w / "data")},
        )

    add("env/data-is-a-file/run-geneval", data_env_file_run)

    def metadata_dir(w):
        import yaml

        spec = yaml.safe_load((REPO / "benchmarks" / "geneval" / "benchmark.yaml").read_text())
        (w / "data" / spec["data_items"]).mkdir(parents=True)
        return Call(["list"], (OK,), (), env={"RECA_EVAL_DATA": str(w / "data")})

    add("env/fetched-metadata-is-a-folder/list", metadata_dir)

    def metadata_dir_validate(w):
        import yaml

        spec = yaml.safe_load((REPO / "benchmarks" / "geneval" / "benchmark.yaml").read_text())
        (w / "data" / spec["data_items"]).mkdir(parents=True)
        return Call(
            ["validate", "geneval"],
            (BAD,),
            (spec["data_items"].split("/")[-1],),
            env={"RECA_EVAL_DATA": str(w / "data")},
        )

    add("env/fetched-metadata-is-a-folder/validate", metadata_dir_validate)

    for argv in (
        ["run", "shapes-geneval", "--ckpt", "ckpt", "--results", "results"],
        ["train", str(REPO / "trainers" / "recipes" / "sft.yaml")],
        ["train", "sft"],
        ["experiment"],
        ["diagnose", "alignment", "--ckpt", "ckpt"],
        ["diagnose", "ceiling", "--ckpt", "ckpt"],
        ["diagnose", "floor", "-b", "shapes-geneval", "--ckpt", "ckpt"],
        ["demo"],
    ):

        def make(w, argv=argv):
            (w / "ckpt").mkdir()  # a checkpoint folder that passes the path checks: torch is what is missing
            (w / "ckpt" / "config.json").write_text('{"model_type": "janus"}')
            return Call(argv, (BAD,), ("reca-eval[models]", "torch"), patch=_no_torch, writes=("results",))

        add(f"core-install/{' '.join(argv[:2])}", make)

    for argv in (
        ["run", "astrology", "--images", "imgs"],
        ["validate", "astrology"],
        ["list", "astrology"],
        ["run", "shapes-geneval"],
        ["run", "shapes-geneval", "--images", "imgs", "--ckpt", "ckpt"],
        ["compare", "nope", "nada", "--results", "results"],
        ["check", "--baseline", "nope"],
        ["leaderboard", "--results", "nothing-here"],
        ["leaderboard", "--results", "results", "-f", "xml"],
        ["fetch", "astrology"],
    ):

        def make(w, argv=argv):
            stage(w, "results")
            (w / "imgs").mkdir()
            return Call(
                argv,
                (BAD,),
                tuple(a for a in argv if a in ("astrology", "nope", "nothing-here", "xml"))
                or ("--images", "--ckpt"),
            )

        add(f"names/{' '.join(argv[:3])}", make)
    return cases


def _two_runs_board(label: str):
    def check(work: Path) -> list[str]:
        path = work / "results" / "leaderboard.json"
        if not path.is_file():
            return ["no leaderboard.json"]
        json.loads(path.read_text())
        return []

    return check


def _no_half_state(before: list[str], leaderboard: bool = False):
    """After a failed write: no new run folder, no temp file, and the runs that were there are intact."""

    def check(work: Path) -> list[str]:
        runs = work / "results" / "runs"
        now = sorted(p.name for p in runs.iterdir()) if runs.is_dir() else []
        # A new run folder is allowed only complete (the record was written, a later step failed).
        problems = [
            f"new run folder {n} without its record"
            for n in now
            if n not in before and not (runs / n / "record.json").is_file()
        ]
        problems += [f"temp file {p}" for p in work.rglob(".*") if p.is_file()]
        for name in before:
            if not (runs / name / "record.json").is_file():
                problems.append(f"run {name} lost its record")
        return problems

    return check


def all_cases() -> list[Case]:
    return item_cases() + image_cases() + results_cases() + cli_cases()
