"""`reca-eval convert`: an official model release into a checkpoint folder that `run --ckpt` and `train` load."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from reca_eval.cli.common import fail, get_console

app = typer.Typer(
    help="Convert an official model release into a reca-eval checkpoint folder (for run --ckpt and train).",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def harmon(
    weights: Path = typer.Option(
        ...,
        "--weights",
        help="The release's Harmon weights: checkpoints/harmon_1.5b.pth or harmon_0.5b.pth (a RecA iter_N.pth "
        "too). Read with torch.load(weights_only=True).",
    ),
    vae: Path = typer.Option(
        None,
        "--vae",
        help="MAR's KL-16 VAE, checkpoints/kl16.ckpt (not needed when --weights carries vae.* keys).",
    ),
    llm: str = typer.Option(
        ...,
        "--llm",
        help="Qwen2.5-Instruct of the same size, a folder or a Hub id (Qwen/Qwen2.5-1.5B-Instruct): only its "
        "tokenizer is used, and its config.json is checked against the size.",
    ),
    out: Path = typer.Option(
        ...,
        "--out",
        help="Checkpoint folder to write: staged beside it and renamed into place, so it is whole or absent.",
    ),
    size: str = typer.Option(
        None, "--size", help="0.5b or 1.5b (default: inferred from the shapes of --weights)."
    ),
    dtype: str = typer.Option(
        "auto",
        "--dtype",
        help="Weights' dtype in --out: auto (that of the release's LLM weights), float32, bfloat16 or float16.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars on stderr."),
) -> None:
    """Harmon-0.5B / 1.5B as released (wusize/harmon: harmon_<size>.pth, kl16.ckpt) into a checkpoint folder.

    Every key and shape is checked against the size before anything is written; the folder's
    conversion.json records the source files (name, size, sha256). Bad input exits 2 naming the file
    and the key."""
    from reca_eval.models.harmon.convert import PROVENANCE_FILE, ConversionError, convert_release

    console = get_console(stderr=True)
    try:
        record = convert_release(
            weights,
            vae,
            llm,
            out,
            size=size,
            dtype=dtype,
            overwrite=overwrite,
            log=lambda message: console.print(escape(message), style="dim"),
            progress=progress,
        )
    except ConversionError as exc:
        fail(str(exc))
    how = "inferred" if record.size_inferred else "given"
    get_console().print(
        escape(
            f"wrote {out}: Harmon-{record.size} ({how}), {record.dtype}; sources in {out / PROVENANCE_FILE}. "
            f"Score it: reca-eval run geneval --ckpt {out}"
        )
    )
