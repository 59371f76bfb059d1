"""Errors raised by nbcnn.data. Each names the file (or the places searched)."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A data file is corrupt, truncated, or not in the format its name promises."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ChecksumError(DataFormatError):
    """A file's checksum matches none of the published ones."""


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are in none of the places searched (and could not be downloaded).

    ``searched`` lists every folder looked in, in order.
    """

    def __init__(self, message: str, searched=()):
        self.searched = [str(p) for p in searched]
        super().__init__(message)

    def __str__(self):  # FileNotFoundError's default str wants errno/filename
        return self.args[0]


class DownloadError(OSError):
    """Every mirror failed; ``attempts`` holds (url, reason) pairs."""

    def __init__(self, message: str, attempts=()):
        self.attempts = list(attempts)
        super().__init__(message)

    def __str__(self):
        return self.args[0]
