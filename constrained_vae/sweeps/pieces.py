"""A folder packed as one tar archive in numbered pieces of bounded size, with a manifest of their sha256s.

    OUT/NAME.tar.00, NAME.tar.01, …   the archive cut into pieces of at most ``piece_bytes`` each
    OUT/NAME.manifest.json            the archive's bytes and sha256, and each piece's name, bytes, sha256

:func:`pack` writes them (each file atomically); :func:`unpack` checks every piece against the manifest
(a missing, short or altered piece is named), joins them, checks the whole archive's sha256, and
extracts only regular files whose names a caller allows. Nothing here knows what the folder holds.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from constrained_vae.errors import SweepError
from constrained_vae.files import atomic_write, atomic_write_json

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "constrained-vae pieces"
MANIFEST_VERSION = 1
HASH_CHUNK = 2**20
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the names of a packed archive and of its pieces


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(out_dir: str | Path, name: str) -> Path:
    return Path(out_dir) / f"{name}{MANIFEST_SUFFIX}"


def pack(source: str | Path, out_dir: str | Path, name: str, piece_bytes: int) -> dict[str, Any]:
    """Pack every file under ``source`` (sorted, paths relative to it) as ``NAME.tar`` cut into pieces of at
    most ``piece_bytes`` bytes in ``out_dir``, and write the manifest last; return the manifest."""
    if not NAME.match(name):
        raise SweepError(f"{name!r} is not a name for packed pieces (letters, digits, '.', '_', '-')")
    if piece_bytes < 1:
        raise SweepError(f"pieces must hold at least one byte, got {piece_bytes}")
    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / f".{name}.tar.packing"
    try:
        with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(p for p in source.rglob("*") if p.is_file()):
                info = tar.gettarinfo(str(path), arcname=path.relative_to(source).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
        pieces = []
        with open(archive, "rb") as handle:
            index = 0
            while chunk := handle.read(piece_bytes):
                piece = f"{name}.tar.{index:02d}"
                atomic_write(out_dir / piece, lambda out, data=chunk: out.write(data))
                pieces.append({"file": piece, "bytes": len(chunk), "sha256": hashlib.sha256(chunk).hexdigest()})
                index += 1
        manifest = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "name": name,
            "bytes": archive.stat().st_size,
            "sha256": sha256_of(archive),
            "pieces": pieces,
        }
    finally:
        archive.unlink(missing_ok=True)
    atomic_write_json(manifest_path(out_dir, name), manifest)
    return manifest


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest at ``path``, checked; SweepError naming what is wrong."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise SweepError(f"{path} does not exist") from None
    except (OSError, ValueError) as error:
        raise SweepError(f"{path} is not a manifest of pieces ({type(error).__name__})") from None

    def fault() -> str:
        if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
            return f"format is not {MANIFEST_FORMAT!r}"
        if manifest.get("version") != MANIFEST_VERSION:
            return f"version {manifest.get('version')!r} is not {MANIFEST_VERSION}"
        if not isinstance(manifest.get("name"), str) or not NAME.match(manifest["name"]):
            return "its name is missing or not a plain name"
        pieces = manifest.get("pieces")
        if not isinstance(pieces, list) or not pieces:
            return "it lists no pieces"
        for index, piece in enumerate(pieces):
            if not isinstance(piece, dict) or piece.get("file") != f"{manifest['name']}.tar.{index:02d}":
                return f"piece {index} is not named {manifest['name']}.tar.{index:02d}"
            if not isinstance(piece.get("bytes"), int) or not isinstance(piece.get("sha256"), str):
                return f"piece {index} lacks its bytes or sha256"
        if manifest.get("bytes") != sum(piece["bytes"] for piece in pieces):
            return "its bytes are not the sum of its pieces'"
        return ""

    problem = fault()
    if problem:
        raise SweepError(f"{path} is not a manifest of pieces ({problem})")
    return manifest


def join(manifest_file: str | Path, archive: str | Path) -> dict[str, Any]:
    """Check each piece beside ``manifest_file`` against it and join them into ``archive``; the manifest.

    SweepError naming every missing piece, or the first piece whose bytes or sha256 differ, or an archive
    whose sha256 differs; ``archive`` is then removed."""
    manifest_file, archive = Path(manifest_file), Path(archive)
    manifest = read_manifest(manifest_file)
    folder = manifest_file.parent
    missing = [piece["file"] for piece in manifest["pieces"] if not (folder / piece["file"]).is_file()]
    if missing:
        raise SweepError(f"{manifest['name']}: piece(s) {', '.join(missing)} missing from {folder}")
    digest = hashlib.sha256()
    try:
        with open(archive, "wb") as out:
            for piece in manifest["pieces"]:
                data = (folder / piece["file"]).read_bytes()
                if len(data) != piece["bytes"] or hashlib.sha256(data).hexdigest() != piece["sha256"]:
                    raise SweepError(
                        f"{manifest['name']}: piece {folder / piece['file']} is corrupt "
                        f"({len(data)} bytes, sha256 differs from the manifest's)"
                    )
                digest.update(data)
                out.write(data)
        if digest.hexdigest() != manifest["sha256"]:
            raise SweepError(f"{manifest['name']}: the joined pieces' sha256 differs from the manifest's")
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    return manifest


def extract(archive: str | Path, destination: str | Path, allowed: Callable[[str], bool]) -> list[str]:
    """Extract ``archive`` into ``destination`` (a new folder): regular files only, each name relative and
    accepted by ``allowed``; SweepError for any other member, before anything is written. The names."""
    destination = Path(destination)
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            refused = [m.name for m in members if not m.isfile() or not _plain(m.name) or not allowed(m.name)]
            if refused:
                raise SweepError(f"{archive} holds what it should not: {', '.join(refused[:3])}")
            destination.mkdir(parents=True)
            for member in members:
                target = destination / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError) as error:
        raise SweepError(f"{archive} is not a readable tar archive ({error})") from None
    return [member.name for member in members]


def _plain(name: str) -> bool:
    """A relative path without ``..`` or empty parts."""
    parts = name.split("/")
    return not name.startswith("/") and all(part not in ("", ".", "..") for part in parts)


__all__ = ["extract", "join", "manifest_path", "pack", "read_manifest", "sha256_of"]
