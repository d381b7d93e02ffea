"""Where a sweep keeps its state: a local or shared folder, or any URI ``pyarrow.fs``
understands (``s3://bucket/prefix``, ``gs://...``). Checkpoints, the cache of shared jobs
and Tune's and Ray Train's state all go through it; Ray reads and writes URIs itself.

Credentials and endpoints come from the usual environment (``AWS_ACCESS_KEY_ID``,
``AWS_ENDPOINT_URL`` for an S3-compatible server, ...), which a local Ray passes on to its
workers. What cannot live in object storage (Optuna's SQLite study, the driver's log file)
goes to a local folder named after the sweep (``local_dir``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def is_uri(path: str) -> bool:
    """Whether ``path`` names a remote filesystem (``scheme://...``), not a local folder."""
    return "://" in str(path) and not str(path).startswith("file://")


class Storage:
    """A sweep's storage root.

    Args:
        root: a local folder or a URI.
    """

    def __init__(self, root: str | Path):
        self.root = str(root).rstrip("/") or "/"

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    @property
    def is_local(self) -> bool:
        return not is_uri(self.root)

    def path(self, *parts: str) -> str | Path:
        """``root/parts``: a ``Path`` when local, else a URI string."""
        if self.is_local:
            return Path(self.root, *parts)
        return "/".join([self.root, *(p.strip("/") for p in parts)])

    def local_dir(self, sweep_id: str) -> Path:
        """A local folder for what the storage cannot hold: inside it when it is local,
        else ``~/.cache/skipnet_sweep/<sweep id>``."""
        if self.is_local:
            return Path(self.root)
        return Path("~/.cache/skipnet_sweep").expanduser() / sweep_id

    # --- pyarrow -----------------------------------------------------------------------

    @staticmethod
    def _fs(path: str | Path):
        import pyarrow.fs as pafs

        if not is_uri(str(path)):
            return pafs.LocalFileSystem(), str(path)
        return pafs.FileSystem.from_uri(str(path))

    def exists(self, path: str | Path) -> bool:
        import pyarrow.fs as pafs

        fs, p = self._fs(path)
        return fs.get_file_info(p).type != pafs.FileType.NotFound

    def is_file(self, path: str | Path) -> bool:
        import pyarrow.fs as pafs

        fs, p = self._fs(path)
        return fs.get_file_info(p).type == pafs.FileType.File

    def remove(self, path: str | Path) -> None:
        """Delete a folder or file if it is there."""
        import pyarrow.fs as pafs

        fs, p = self._fs(path)
        kind = fs.get_file_info(p).type
        if kind == pafs.FileType.Directory:
            fs.delete_dir(p)
        elif kind == pafs.FileType.File:
            fs.delete_file(p)

    def move(self, src: str | Path, dst: str | Path) -> None:
        """Move a folder (on object storage: copy, then delete the source)."""
        if self.is_local:
            shutil.move(str(src), str(dst))
            return
        import pyarrow.fs as pafs

        fs, s = self._fs(src)
        _, d = self._fs(dst)
        pafs.copy_files(s, d, source_filesystem=fs, destination_filesystem=fs)
        fs.delete_dir(s)

    def read_text(self, path: str | Path) -> str | None:
        """The text of a small file, or None if there is none."""
        import pyarrow.fs as pafs

        fs, p = self._fs(path)
        try:
            with fs.open_input_stream(p) as f:
                return f.read().decode()
        except FileNotFoundError:
            return None
        except OSError:  # pyarrow's S3 says "Path does not exist" in a plain OSError
            if fs.get_file_info(p).type == pafs.FileType.NotFound:
                return None
            raise

    def write_text(self, path: str | Path, text: str) -> None:
        """Write a small file whole: a reader sees the old text or the new, never a part
        (locally a complete temporary file renamed over it; an object is replaced whole)."""
        if self.is_local:
            with _complete_temp(Path(path), text) as tmp:
                os.replace(tmp, path)
            return
        fs, p = self._fs(path)
        with fs.open_output_stream(p) as f:
            f.write(text.encode())

    def create_text(self, path: str | Path, text: str) -> bool:
        """Write a small file unless one is there; returns whether it was written. Atomic
        on a local or NFS folder (a hard link of a complete temporary file fails if the name
        exists); on object storage a check, then a write, which pyarrow cannot make one
        operation: a caller that must be the only writer reads the file back."""
        if self.is_local:
            with _complete_temp(Path(path), text) as tmp:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            return True
        if self.exists(path):
            return False
        self.write_text(path, text)
        return True

    def upload(self, local: Path, dst: str | Path) -> None:
        """Copy a local file or folder to ``dst``."""
        if self.is_local:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            if local.is_dir():
                shutil.copytree(local, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(local, dst)
            return
        import pyarrow.fs as pafs

        fs, d = self._fs(dst)
        pafs.copy_files(str(local), d, destination_filesystem=fs)

    @contextlib.contextmanager
    def local_copy(self, path: str | Path) -> Iterator[Path]:
        """``path`` as a local file or folder for the duration of the block (itself when
        local; a temporary download otherwise)."""
        if not is_uri(str(path)):
            yield Path(path)
            return
        import pyarrow.fs as pafs

        fs, p = self._fs(path)
        with tempfile.TemporaryDirectory(prefix="skipnet-") as d:
            local = Path(d) / Path(p).name
            if fs.get_file_info(p).type == pafs.FileType.Directory:
                for info in fs.get_file_info(pafs.FileSelector(p, recursive=True)):
                    if info.type == pafs.FileType.File:
                        dest = local / Path(info.path).relative_to(p)
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        pafs.copy_files(info.path, str(dest), source_filesystem=fs)
            else:
                pafs.copy_files(p, str(local), source_filesystem=fs)
            yield local


@contextlib.contextmanager
def _complete_temp(path: Path, text: str) -> Iterator[Path]:
    """A temporary file holding ``text`` beside ``path`` (same filesystem, so it can be
    renamed or linked there), removed after the block if it is still there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
