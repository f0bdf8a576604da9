"""The run's shared artifacts: the resolved spec, the float weights and the sensitivity
profile, published once by the controller through Optuna's artifact store and loaded by
every worker, which checks their hashes (so every genome is scored against the same float
weights, whatever node evaluates it).

The artifact store is a :class:`optuna.artifacts.FileSystemArtifactStore` on a path every
node sees (default: ``<run dir>/artifacts``); the study records each artifact's id and
SHA-256 in its user attributes (``artifact:spec``, ``artifact:float``,
``artifact:sensitivity``) and the store's path in ``artifact_store``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import optuna

from evomp._errors import EvompError

__all__ = ["ARTIFACTS", "publish_artifacts", "fetch_artifact", "artifact_store", "file_sha256",
           "upload_file", "states_dir"]

#: name in the study -> what it holds
ARTIFACTS = {"spec": "the resolved run specification (spec.toml)",
             "float": "the float checkpoint the run starts from (float.pt)",
             "sensitivity": "the sensitivity profile (sensitivity.npz)"}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def states_dir(store_path: str | Path) -> Path:
    """Where the run's short-QAT end states are kept: ``states/`` beside the artifacts, on
    the path every node sees (one file per genome, ``<hash>-short.pt``)."""
    return Path(store_path) / "states"


def artifact_store(path: str | Path) -> Any:
    """A file-system artifact store at ``path`` (created if needed)."""
    from optuna.artifacts import FileSystemArtifactStore

    Path(path).mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(path))


def upload_file(study: optuna.Study, store_path: str | Path, path: Path,
                trial: Any | None = None) -> str:
    """Upload ``path`` to the artifact store, linked to ``trial`` (or the study)."""
    from optuna.artifacts import upload_artifact

    return upload_artifact(artifact_store=artifact_store(store_path), file_path=str(path),
                           study_or_trial=trial if trial is not None else study)


def publish_artifacts(study: optuna.Study, store_path: str | Path,
                      files: dict[str, Path]) -> dict[str, dict[str, str]]:
    """Publish ``files`` (name -> path) once: a name already published with the same bytes
    is kept; published with other bytes, it is an error (the study belongs to another run).

    Returns:
        ``{name: {"id": artifact id, "sha256": ...}}`` as recorded in the study.
    """
    out = {}
    ua = study.user_attrs
    if "artifact_store" not in ua:
        study.set_user_attr("artifact_store", str(Path(store_path).resolve()))
    for name, path in files.items():
        sha = file_sha256(path)
        have = ua.get(f"artifact:{name}")
        if isinstance(have, dict) and have.get("sha256") == sha:
            out[name] = have
            continue
        if isinstance(have, dict) and name == "float":
            raise EvompError(
                f"study {study.study_name!r} was started from other float weights (sha256 "
                f"{have.get('sha256', '')[:12]}..., this run's {path} is {sha[:12]}...); its "
                "evaluations would not be comparable: use another --out or --storage")
        art = upload_file(study, store_path, path)
        out[name] = {"id": art, "sha256": sha}
        study.set_user_attr(f"artifact:{name}", out[name])
    return out


def fetch_artifact(study: optuna.Study, name: str, dest: Path,
                   store_path: str | Path | None = None) -> Path:
    """Download the study's artifact ``name`` to ``dest`` and check its hash.

    Raises:
        EvompError: the study has no such artifact (no controller published it yet), the
            store is unreachable, or the bytes differ from the recorded hash.
    """
    from optuna.artifacts import download_artifact

    ua = study.user_attrs
    meta = ua.get(f"artifact:{name}")
    store = store_path or ua.get("artifact_store")
    if not isinstance(meta, dict) or store is None:
        raise EvompError(
            f"study {study.study_name!r} holds no {ARTIFACTS.get(name, name)} yet: start the "
            "controller ('evomp run SPEC --storage URL') first; it publishes the run's "
            "artifacts before it queues any candidate")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    try:
        download_artifact(artifact_store=artifact_store(store), file_path=str(dest),
                          artifact_id=meta["id"])
    except Exception as e:
        raise EvompError(f"cannot fetch the run's {ARTIFACTS.get(name, name)} from the "
                         f"artifact store {store}: {e}; pass --artifacts with a path this "
                         "node sees") from e
    if file_sha256(dest) != meta["sha256"]:
        raise EvompError(f"the {ARTIFACTS.get(name, name)} fetched from {store} does not "
                         "match the hash the study recorded; the artifact store is damaged")
    return dest
