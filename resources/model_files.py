"""Base model folders for the transformer trainer: a local folder as is, an S3 prefix as a
cached local copy.

transformers loads models from local folders only here (nothing is fetched from a model
hub at run time), so `bert.model_path: s3://bucket/prefix` is copied into
`storage.cache` once, under a name made from the listing (key, ETag and size of every
object): an unchanged upload is reused without reading a byte, a changed one gets a new
copy. A copy is written under a temporary name and renamed into place, so a download that
dies half-way never looks complete. Either way the folder is checked for what a Hugging
Face model folder needs before any training starts.

Each copy has a note beside it (`<copy>.json`: the S3 location, touched on every use). When
a new copy of a location is made, its copies other than the two used last are removed, so
re-uploads do not fill the disk while a process that resolved the previous copy a moment
ago can still load it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from resources.listing import lister_for
from resources.safe_keys import UnsafeKeyError, path_inside
from resources.storage import ArtifactStore, ArtifactStoreResource

# What `from_pretrained` needs from a folder: each entry is satisfied by any of its names.
MODEL_FILES = (
    ("config.json", ("config.json",)),
    ("weights", ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")),
    ("tokenizer", ("tokenizer.json", "vocab.txt")),
)
COPIES_KEPT = 2  # per S3 location: the new copy and the one used before it
HOW_TO_FIX = ("save the model and its tokenizer with save_pretrained() into one folder and "
              "point bert.model_path at it (a local folder or s3://bucket/prefix), or set "
              "bert.model_path to null for the bundled MiniLM")


class ModelFolderError(ValueError):
    """A base model location training cannot start from."""


def missing_model_files(names: Iterable[str]) -> list[str]:
    """What a folder holding the files `names` lacks to load as a Hugging Face model."""
    present = set(names)
    return [what if len(options) == 1 else f"{what} ({' or '.join(options)})"
            for what, options in MODEL_FILES if not present & set(options)]


def _require_model_files(names: Iterable[str], shown_as: str) -> None:
    missing = missing_model_files(names)
    if missing:
        raise ModelFolderError(f"bert.model_path {shown_as} has no {', '.join(missing)}: "
                               f"{HOW_TO_FIX}")


def cached_model_copy(source: ArtifactStore, cache: Path) -> Path:
    """A local copy of the model folder stored at `source`, under `cache/base-models/`."""
    # Hidden names too: a key such as `../x` must be refused, not passed over.
    listed = list(lister_for(source).list(leftovers=True))
    if not listed:
        raise ModelFolderError(f"bert.model_path {source.uri} holds no files: {HOW_TO_FIX}")
    _require_model_files((o.key for o in listed if "/" not in o.key), source.uri)
    content = "\n".join(f"{o.key}\0{o.etag}\0{o.size}" for o in listed)
    target = cache / "base-models" / hashlib.sha256(content.encode()).hexdigest()[:32]
    if target.is_dir():
        _note_use(target, source.uri)
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        try:  # every key is checked before the first download
            paths = [path_inside(partial, obj.key, f"bert.model_path {source.uri}: object key")
                     for obj in listed]
        except UnsafeKeyError as exc:
            raise ModelFolderError(f"{exc}; remove that object from the prefix") from exc
        for obj, path in zip(listed, paths, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            source.download_file(obj.key, path)
            if path.stat().st_size != obj.size:
                raise ModelFolderError(
                    f"{source.uri_of(obj.key)}: downloaded {path.stat().st_size} bytes, the "
                    f"listing said {obj.size}; was it replaced during the download? Retry.")
        try:
            partial.rename(target)  # atomic; refused if another process finished first
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    _note_use(target, source.uri)
    _prune_copies(target.parent, source.uri)
    return target


def _note_use(copy: Path, uri: str) -> None:
    """Record (or refresh) which location `copy` holds; its modification time is the use."""
    copy.with_name(copy.name + ".json").write_text(json.dumps({"source": uri}))


def _prune_copies(folder: Path, uri: str) -> None:
    """Remove the copies of `uri` beyond the COPIES_KEPT used last (copies without a note,
    made before notes were kept, are left alone)."""
    notes = []
    for note in folder.glob("*.json"):
        try:
            if json.loads(note.read_text()).get("source") == uri:
                notes.append(note)
        except (OSError, ValueError):
            continue  # another process is writing it: it is in use
    notes.sort(key=lambda n: n.stat().st_mtime, reverse=True)
    for note in notes[COPIES_KEPT:]:
        shutil.rmtree(note.with_suffix(""), ignore_errors=True)
        note.unlink(missing_ok=True)


def local_model_folder(model_path: str | None, cache: str | Path,
                       s3_endpoint_url: str | None = None) -> str | None:
    """`bert.model_path` as a folder the trainer can load: None stays None (the bundled
    model), a local folder is checked, an s3:// prefix is copied into `cache` (once)."""
    if model_path is None:
        return None
    if model_path.startswith("s3://"):
        source = ArtifactStoreResource(uri=model_path, s3_endpoint_url=s3_endpoint_url).open()
        return str(cached_model_copy(source, Path(cache)))
    folder = Path(model_path)
    if not folder.is_dir():
        raise ModelFolderError(f"bert.model_path {model_path} is not a folder (models are "
                               f"never downloaded from a model hub): {HOW_TO_FIX}")
    _require_model_files((p.name for p in folder.iterdir()), model_path)
    return model_path
