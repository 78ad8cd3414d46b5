"""Feed malformed inputs and faults to the parts issue 18 covers — CLIPFineTuner and its
checkpoints, caption data, GroundingMonitor and the monitor base, EXPLAIN-R, the CLIs — and
classify each outcome (the sibling of ``sweep_bad_inputs.py``, which covers the older API).

* clear   — ValueError / TypeError / FileNotFoundError raised before any work whose message
            says what was expected ("Expected ..."), or, where the input is legal but
            suspicious, a warning that says what happened; for a legal input (marked ``ok``):
            it works;
* unclear — an exception, but from deep inside torch / open_clip or without "Expected";
* silent  — no exception and no warning (a NaN, all-zero, dropped or stale result);
* crash   — anything else (RuntimeError, AttributeError, IndexError, a KeyError or
            FloatingPointError without "Expected", ...);
* hang    — the case did not finish within its time limit (``--timeout``, default 30 s).

Every case runs in its own forked process with a time limit, so a hang is counted and the
sweep goes on. Imports are looked up by name under the current and the pre-restructuring
layout, so the sweep also runs on older trees (a case whose names do not exist is ``n/a``).

Run (CPU, offline, 3-6 min on 2 shared cores):
``PYTHONPATH=src python benchmarks/sweep_bad_inputs_clip.py``. Prints one line per case and the
counts. Measured on 2026-12-07 (46 cases, ``--timeout 30``): main at ``ced9e07`` 8 clear,
12 unclear, 6 silent, 15 crash, 2 hang, 3 n/a (no plain-loop ``GroundingMonitor.attach`` there);
after issue 18: 45 clear, 1 silent (NaN concept scores into ``ConceptSurrogate.forward``);
that case alone after its fix (``-k "NaN concept"``): clear.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import multiprocessing as mp
import os
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

NAN = float("nan")

#: public names and where they live (``module`` or ``module:attr``), after and before the
#: issue-17 restructuring
_WHERE = {
    "GroundingMonitor": ["lico_lightning.callbacks"],
    "GroundingProbes": ["lico_lightning.callbacks"],
    "InsertionAUC": ["lico_lightning.metrics"],
    "CLIPFineTuner": ["lico_lightning.modules"],
    "SurrogateDistiller": ["lico_lightning.modules"],
    "ShapesCaptionDataModule": ["lico_lightning.data"],
    "ConceptDistillationDataModule": ["lico_lightning.data", "lico_lightning.concepts"],
    "CaptionEmbeddings": ["lico_lightning.data", "lico_lightning.concepts"],
    "encode_caption_dataset": ["lico_lightning.data", "lico_lightning.concepts"],
    "read_caption_file": ["lico_lightning.data"],
    "read_coco_captions": ["lico_lightning.data"],
    "ConceptVocabulary": ["lico_lightning.concepts"],
    "ConceptSurrogate": ["lico_lightning.concepts"],
    "tiny_openclip_config": ["lico_lightning.text"],
    "tiny_clip": ["lico_lightning.testing"],
    "as_dual_encoder": ["lico_lightning.explain", "lico_lightning.pair_explain"],
    "clip_main": ["lico_lightning.cli", "lico_lightning.clip_cli:main"],
    "explainr_main": ["lico_lightning.cli", "lico_lightning.explainr_cli:main"],
}


class NotAvailable(Exception):
    """The tree under test has no such name: the case is ``n/a``."""


class Verdict(Exception):
    """A case's own finding, e.g. ``Verdict("silent", "stale embeddings used")``."""

    def __init__(self, label: str, detail: str) -> None:
        super().__init__(detail)
        self.label, self.detail = label, detail


#: warnings of other libraries that say nothing about the input
_FOREIGN = (
    "before the ``update``",
    "deprecated",
    "many workers",
    "GPU available",
    "LeafSpec",
    "`self.trainer` reference",
)


def imp(name: str) -> Any:
    for where in _WHERE[name]:
        module, _, attr = where.partition(":")
        try:
            return getattr(importlib.import_module(module), attr or name)
        except (ImportError, AttributeError):
            continue
    raise NotAvailable(name)


# ----------------------------------------------------------------------------- fixtures
def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="sweep_clip_"))


def _cfg() -> dict:
    cfg = imp("tiny_openclip_config")(context_length=16)
    cfg["vision_cfg"].update(patch_size=8, layers=1)
    return cfg


def _clip_module() -> Any:
    torch.manual_seed(0)
    return imp("CLIPFineTuner")(model_cfg=_cfg())


def _batch(n: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(1, 100, (n, 16))
    tokens[:, -1] = 49407
    return torch.randn(n, 3, 32, 32), tokens


def _save_ckpt(module: Any, path: Path) -> Path:
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return path


def _distiller() -> Any:
    cls = imp("SurrogateDistiller")
    try:
        return cls(num_concepts=5, embed_dim=8, num_samples=4, clip_model=None)
    except TypeError:  # an older tree: the teacher is named elsewhere
        return cls(num_concepts=5, embed_dim=8, num_samples=4)


def _naming(owner: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; an error that does not name the checkpoint's class ``owner`` is unclear."""
    try:
        return fn()
    except (ValueError, TypeError) as err:
        if owner not in str(err):
            raise Verdict("unclear", f"{type(err).__name__}: {str(err)[:100]}") from None
        raise


def _shapes_val(num_val: int) -> Any:
    dm = imp("ShapesCaptionDataModule")(
        model_cfg=_cfg(), num_train=4, num_val=num_val, num_test=2, batch_size=4, seed=0
    )
    dm.setup("validate")
    return dm.val_dataset


def _grounding_monitor(**kw: Any) -> Any:
    monitor = imp("GroundingMonitor")(
        methods=["interaction_cam"], metrics=["pga"], every_n_train_steps=1, log_images=False, **kw
    )
    if not hasattr(monitor, "attach"):  # an older tree: no plain-loop host to drive it
        raise NotAvailable("GroundingMonitor.attach")
    return monitor


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _png(path: Path, size: int = 40) -> None:
    from PIL import Image

    Image.new("RGB", (size, size), (120, 30, 60)).save(path)


class _SmallCaptions:
    """A caption data module over a few random scenes (the EXPLAIN-R data module's input)."""

    def __new__(cls) -> Any:
        import open_clip
        import pytorch_lightning as pl

        words = ["red", "blue", "green", "square", "circle", "star"]

        class Scenes(torch.utils.data.Dataset):
            def __init__(self, n: int, seed: int, tokenizer: Any) -> None:
                g = torch.Generator().manual_seed(seed)
                self.images = torch.randn(n, 3, 32, 32, generator=g)
                self.caps = [
                    [f"a {words[(i + j) % 3]} {words[3 + (i * j + seed) % 3]}" for j in range(2)]
                    for i in range(n)
                ]
                self.tokenizer, self.num_images = tokenizer, n

            def __len__(self) -> int:
                return self.num_images

            def load_image(self, i: int) -> torch.Tensor:
                return self.images[i]

            def captions(self, i: int) -> list[str]:
                return self.caps[i]

            def tokenize(self, texts: list[str]) -> torch.Tensor:
                return self.tokenizer(texts)

        class Captions(pl.LightningDataModule):
            def __init__(self) -> None:
                super().__init__()
                self.tokenizer = open_clip.get_tokenizer("RN50", context_length=16)
                self.train_dataset = self.val_dataset = None

            def setup(self, stage: Any = None) -> None:
                self.train_dataset = Scenes(8, 0, self.tokenizer)
                self.val_dataset = Scenes(4, 1, self.tokenizer)

        return Captions()


def _concept_data(**kw: Any) -> Any:
    return imp("ConceptDistillationDataModule")(
        _SmallCaptions(), tagger="words", lexicon=None, min_count=1, max_df=1.0, batch_size=4,
        encode_batch_size=4, device="cpu", **kw,
    )  # fmt: skip


def _teacher(seed: int) -> Any:
    clip = imp("tiny_clip")(seed=seed, layers=1, context_length=16)
    return imp("as_dual_encoder")(clip)


def _cli(main_name: str, args: list[str]) -> None:
    """Run a console script's ``main``; exit status 2 with one ``error:`` line is clear."""
    main = imp(main_name)
    old_argv, old_err = sys.argv, sys.stderr
    sys.argv, sys.stderr = ["script", *args], io.StringIO()
    try:
        main()
    except SystemExit as exit_:
        text = sys.stderr.getvalue().strip()
        if exit_.code == 2 and "error:" in text and len(text.splitlines()) == 1:
            raise ValueError(f"Expected (one clear line) {text}") from None
        raise RuntimeError(f"exit {exit_.code}: {text[-200:]}") from None
    finally:
        sys.argv, sys.stderr = old_argv, old_err


# ----------------------------------------------------------------------------- cases
# each case: (name, function, kind) with kind "bad" (an error is right), "warn" (a warning
# is right: legal but suspicious input) or "ok" (the input is legal and must work)
CASES: list[tuple[str, Callable[[], Any], str]] = []


def case(name: str, kind: str = "bad") -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        CASES.append((name, fn, kind))
        return fn

    return register


# --- CLIPFineTuner -----------------------------------------------------------------------
@case("clip: uint8 images")
def _() -> Any:
    images, tokens = _batch()
    return _clip_module().contrastive_loss((images * 50).clamp(0, 255).to(torch.uint8), tokens)


@case("clip: 1-channel images")
def _() -> Any:
    images, tokens = _batch()
    return _clip_module().contrastive_loss(images[:, :1], tokens)


@case("clip: images of the wrong size")
def _() -> Any:
    _, tokens = _batch()
    return _clip_module().contrastive_loss(torch.randn(2, 3, 48, 48), tokens)


@case("clip: 3-D images")
def _() -> Any:
    images, tokens = _batch()
    return _clip_module().contrastive_loss(images[0], tokens)


@case("clip: float tokens")
def _() -> Any:
    images, tokens = _batch()
    return _clip_module().contrastive_loss(images, tokens.float())


@case("clip: token id >= vocabulary")
def _() -> Any:
    images, tokens = _batch()
    tokens[0, 1] = 10**6
    return _clip_module().contrastive_loss(images, tokens)


@case("clip: NaN pixel in a training batch")
def _() -> Any:
    images, tokens = _batch()
    images[0, 0, 0, 0] = NAN
    module = _clip_module()
    return module.training_step((images, tokens, torch.arange(2)), 0)


@case("clip: retrieval_k=5 (int)", "ok")
def _() -> Any:
    return imp("CLIPFineTuner")(model_cfg=_cfg(), retrieval_k=5)


@case("clip: zeroshot_templates a str", "ok")
def _() -> Any:
    return imp("CLIPFineTuner")(model_cfg=_cfg(), zeroshot_templates="a photo of a {}.")


@case("clip: retrieval_k=(0,)")
def _() -> Any:
    return imp("CLIPFineTuner")(model_cfg=_cfg(), retrieval_k=(0,))


@case("clip: pretrained = 0-byte file")
def _() -> Any:
    path = _tmp() / "w.pt"
    path.write_bytes(b"")
    return imp("CLIPFineTuner")(model_cfg=_cfg(), pretrained=str(path))


@case("clip: pretrained = truncated file")
def _() -> Any:
    path = _tmp() / "w.pt"
    torch.save(_clip_module().model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    return imp("CLIPFineTuner")(model_cfg=_cfg(), pretrained=str(path))


@case("clip: pretrained = a lico-clip checkpoint", "ok")
def _() -> Any:
    path = _save_ckpt(_clip_module(), _tmp() / "last.ckpt")
    return imp("CLIPFineTuner")(model_cfg=_cfg(), pretrained=str(path))


@case("ckpt: CLIPFineTuner.load_from_checkpoint(distiller.ckpt)")
def _() -> Any:
    path = _save_ckpt(_distiller(), _tmp() / "distiller.ckpt")
    return _naming("SurrogateDistiller", lambda: imp("CLIPFineTuner").load_from_checkpoint(path))


@case("ckpt: SurrogateDistiller.load_from_checkpoint(clip.ckpt)")
def _() -> Any:
    path = _save_ckpt(_clip_module(), _tmp() / "clip.ckpt")
    return _naming("CLIPFineTuner", lambda: imp("SurrogateDistiller").load_from_checkpoint(path))


@case("ckpt: load_from_checkpoint(0-byte file)")
def _() -> Any:
    path = _tmp() / "last.ckpt"
    path.write_bytes(b"")
    return imp("CLIPFineTuner").load_from_checkpoint(path)


@case("ckpt: load_from_checkpoint(a weights file)")
def _() -> Any:
    path = _tmp() / "w.pt"
    torch.save(_clip_module().model.state_dict(), path)
    return imp("CLIPFineTuner").load_from_checkpoint(path)


@case("ckpt: CLIPFineTuner round trip", "ok")
def _() -> Any:
    path = _save_ckpt(_clip_module(), _tmp() / "clip.ckpt")
    return imp("CLIPFineTuner").load_from_checkpoint(path)


# --- caption data ------------------------------------------------------------------------
@case("shapes: max_objects=41 (cannot be placed)")
def _() -> Any:
    dm = imp("ShapesCaptionDataModule")(model_cfg=_cfg(), max_objects=41, num_train=4)
    dm.setup("fit")


@case("shapes: max_objects=10 at 64 px")
def _() -> Any:
    cfg = _cfg()
    cfg["vision_cfg"]["image_size"] = 64
    dm = imp("ShapesCaptionDataModule")(model_cfg=cfg, max_objects=10, num_train=4)
    dm.setup("fit")


@case("captions: JSONL line without a closing brace")
def _() -> Any:
    d = _tmp()
    _png(d / "a.png")
    path = _write(d / "c.jsonl", '{"image": "a.png", "caption": "a dog"}\n{"image": "a.png"\n')
    return imp("read_caption_file")(path)


@case("captions: JSONL line that is a list")
def _() -> Any:
    d = _tmp()
    _png(d / "a.png")
    return imp("read_caption_file")(_write(d / "c.jsonl", '["a.png", "a dog"]\n'))


@case("captions: empty file")
def _() -> Any:
    return imp("read_caption_file")(_write(_tmp() / "c.csv", ""))


@case("captions: malformed CSV box")
def _() -> Any:
    d = _tmp()
    _png(d / "a.png")
    text = "image,caption,phrase,box\na.png,a dog on grass,dog,1 2 x 9\n"
    return imp("read_caption_file")(_write(d / "c.csv", text))


@case("captions: box 0 0 inf inf")
def _() -> Any:
    d = _tmp()
    _png(d / "a.png")
    text = "image,caption,phrase,box\na.png,a dog on grass,dog,0 0 inf inf\n"
    return imp("read_caption_file")(_write(d / "c.csv", text))


@case("captions: phrase not in its caption")
def _() -> Any:
    d = _tmp()
    _png(d / "a.png")
    text = "image,caption,phrase,box\na.png,a dog on grass,cat,1 2 8 9\n"
    return imp("read_caption_file")(_write(d / "c.csv", text))


@case("coco: captions file without annotations")
def _() -> Any:
    d = _tmp()
    path = _write(d / "c.json", json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}]}))
    return imp("read_coco_captions")(path, d)


@case("coco: max_images=0")
def _() -> Any:
    d = _tmp()
    path = _write(d / "c.json", json.dumps({"images": [], "annotations": []}))
    return imp("read_coco_captions")(path, d, max_images=0)


# --- GroundingMonitor and the monitor base -----------------------------------------------
@case("grounding: unknown method")
def _() -> Any:
    return imp("GroundingMonitor")(methods=["nope"])


@case("grounding: num_probes=0")
def _() -> Any:
    return imp("GroundingMonitor")(num_probes=0)


@case("grounding: probe phrase not in its caption")
def _() -> Any:
    probes = imp("GroundingProbes")
    return probes(torch.zeros(1, 3, 32, 32), ["a red dog"], ["cat"], torch.tensor([[0.0, 0, 8, 8]]))


@case("grounding: restored probe keys beyond a smaller split", "warn")
def _() -> Any:
    import open_clip

    model = open_clip.CLIP(**_cfg())
    first = _grounding_monitor(num_probes=8)
    first.attach(model, _shapes_val(12))
    first.step(1)
    resumed = _grounding_monitor(num_probes=8)
    resumed.load_state_dict(first.state_dict())
    resumed.attach(model, _shapes_val(3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in (1, 2):
            resumed.step(step)
    failed = [str(w.message) for w in caught if "IndexError" in str(w.message)]
    if failed:
        raise Verdict("unclear", f"{len(failed)} runs warn: {failed[0][:80]}")
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return resumed.last_results


@case("grounding: probe boxes smaller than one patch", "warn")
def _() -> Any:
    probes = imp("GroundingProbes")(
        torch.randn(2, 3, 32, 32),
        ["a red circle"] * 2,
        ["red circle"] * 2,
        torch.tensor([[5.0, 5.0, 11.0, 11.0], [0.0, 0.0, 16.0, 16.0]]),
    )
    monitor = _grounding_monitor(probes=probes)
    monitor.attach(imp("tiny_clip")())
    return monitor.step(1)


@case("grounding: num_probes larger than the data", "warn")
def _() -> Any:
    import open_clip

    monitor = _grounding_monitor(num_probes=50)
    monitor.attach(open_clip.CLIP(**_cfg()), _shapes_val(3))
    return monitor.step(1)


@case("metrics: InsertionAUC().compute() with nothing accumulated", "warn")
def _() -> Any:
    value = float(imp("InsertionAUC")().compute())
    if value == value:
        raise Verdict("silent", f"returns {value} (a plausible score), not NaN")


# --- EXPLAIN-R ---------------------------------------------------------------------------
@case("explainr: CaptionEmbeddings.load(0-byte file)")
def _() -> Any:
    path = _tmp() / "train_embeddings.pt"
    path.write_bytes(b"")
    return imp("CaptionEmbeddings").load(path)


@case("explainr: CaptionEmbeddings.load(a foreign file)")
def _() -> Any:
    path = _tmp() / "train_embeddings.pt"
    torch.save({"image_embeds": torch.zeros(1, 2)}, path)
    return imp("CaptionEmbeddings").load(path)


@case("explainr: ConceptVocabulary.load(a foreign JSON)")
def _() -> Any:
    path = _write(_tmp() / "v.json", json.dumps({"format_version": 1, "concepts": []}))
    return imp("ConceptVocabulary").load(path)


@case("explainr: ConceptVocabulary.load(0-byte file)")
def _() -> Any:
    path = _write(_tmp() / "vocabulary.json", "")
    return imp("ConceptVocabulary").load(path)


@case("explainr: a vocabulary none of whose words occurs in the captions")
def _() -> Any:
    path = _tmp() / "vocabulary.json"
    imp("ConceptVocabulary").from_words(["zebra", "giraffe"]).save(path)
    dm = _concept_data(vocabulary=str(path), teacher=_teacher(3))
    dm.setup("fit")


@case("explainr: cache_dir reused after the teacher changed", "warn")
def _() -> Any:
    cache = str(_tmp() / "cache")
    _concept_data(cache_dir=cache, teacher=_teacher(3)).setup("fit")
    changed = _concept_data(cache_dir=cache, teacher=_teacher(4))
    changed.setup("fit")
    expected = imp("encode_caption_dataset")(_teacher(4), changed.captions.val_dataset, 4)
    if not torch.allclose(changed.val_data.embeddings.image_embeds, expected.image_embeds):
        raise Verdict("silent", "the old teacher's embeddings were used")


@case("explainr: NaN concept scores into ConceptSurrogate")
def _() -> Any:
    surrogate = imp("ConceptSurrogate")(5, 8)
    scores = torch.rand(2, 5)
    scores[0, 0] = NAN
    return surrogate(scores)


@case("explainr: SurrogateDistiller(num_concepts=0)")
def _() -> Any:
    return imp("SurrogateDistiller")(num_concepts=0, embed_dim=8, num_samples=4, clip_model=None)


# --- the CLIs ----------------------------------------------------------------------------
@case("cli: lico-clip with a misspelt option")
def _() -> Any:
    _cli("clip_main", ["fit", "--model.nope=1"])


@case("cli: lico-explainr with a misspelt option")
def _() -> Any:
    _cli("explainr_main", ["fit", "--distillation.nope=1"])


@case("cli: lico-clip --ckpt_path of a 0-byte file")
def _() -> Any:
    path = _tmp() / "last.ckpt"
    path.write_bytes(b"")
    _cli(
        "clip_main",
        [
            "validate",
            f"--model.model_cfg={json.dumps(_cfg())}",
            "--model.model_name=tiny",
            "--data=ShapesCaptionDataModule",
            "--data.num_train=4",
            "--data.num_val=4",
            "--trainer.logger=false",
            f"--ckpt_path={path}",
        ],
    )


# ----------------------------------------------------------------------------- running
def _classify(fn: Callable[[], Any], kind: str) -> tuple[str, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fn()
        except NotAvailable as err:
            return "n/a", f"no {err} in this tree"
        except Verdict as verdict:
            return verdict.label, verdict.detail
        except (ValueError, TypeError, FileNotFoundError, KeyError, FloatingPointError) as err:
            # KeyError naming the file and field (caption files), FloatingPointError (a NaN
            # loss stopped before the optimizer step) are the designed errors there
            if isinstance(err, KeyError):
                err = ValueError(err.args[0] if err.args else "")
            msg = " ".join(str(err).split())
            label = "clear" if "Expected" in msg and kind != "ok" else "unclear"
            return label, f"{type(err).__name__}: {msg[:110]}"
        except Exception as err:
            return "crash", f"{type(err).__name__}: {' '.join(str(err).split())[:110]}"
    ours = [
        w
        for w in caught
        if issubclass(w.category, UserWarning) and not any(f in str(w.message) for f in _FOREIGN)
    ]
    if kind == "ok":
        return "clear", "works"
    if ours:
        return "clear", "warning: " + " ".join(str(ours[0].message).split())[:100]
    return "silent", "no error, no warning"


def _child(fn: Callable[[], Any], kind: str, conn: Any) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        conn.send(_classify(fn, kind))
    except Exception:
        conn.send(("crash", traceback.format_exc().splitlines()[-1][:110]))
    conn.close()


def run_case(fn: Callable[[], Any], kind: str, timeout: float) -> tuple[str, str]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, kind, child))
    proc.start()
    child.close()
    if parent.poll(timeout):
        result = parent.recv()
        proc.join(5)
    else:
        result = ("hang", f"no result after {timeout:g} s")
    if proc.is_alive():
        proc.kill()
        proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per case")
    parser.add_argument("-k", default="", help="run only cases whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    counts: Counter[str] = Counter()
    for name, fn, kind in CASES:
        if args.k and args.k not in name:
            continue
        label, detail = run_case(fn, kind, args.timeout)
        counts[label] += 1
        print(f"{label:8s} {name:62s} {detail}", flush=True)
    total = sum(counts.values())
    print(f"\n{total} cases: " + ", ".join(f"{counts[k]} {k}" for k in (
        "clear", "unclear", "silent", "crash", "hang", "n/a")))  # fmt: skip


if __name__ == "__main__":
    main()
