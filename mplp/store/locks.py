"""``RunLock``: a run directory is owned by one process at a time (an OS file lock on
``<dir>/.lock``, released when the process dies)."""

from __future__ import annotations

import os
from pathlib import Path

from mplp.store.files import RunLockedError, StoreError, check_writable, refuse_links


class RunLock:
    """Exclusive ownership of a run directory by this process (``fcntl.flock`` on ``<dir>/.lock``,
    released on exit or when the process dies); a second owner gets ``RunLockedError`` naming
    the holder's pid."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.fd = None

    def acquire(self) -> "RunLock":
        import fcntl

        check_writable(self.directory)
        refuse_links(self.directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / ".lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if path.is_symlink():
                raise StoreError(f"{path} is a symbolic link; the store neither follows nor writes through links: "
                                 "remove it") from None
            raise StoreError(f"{path} cannot be opened ({e.strerror}): check the results directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLockedError(f"{self.directory} is in use by process {holder} (another mplp train or chapter run); "
                                 "wait for it to finish or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    @staticmethod
    def held_elsewhere(directory: Path) -> bool:
        """Whether another owner holds ``directory``'s lock now (asks without taking it)."""
        import fcntl

        path = Path(directory) / ".lock"
        if not path.is_file() or path.is_symlink():
            return False
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)          # closing drops a lock taken here
        return False

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
