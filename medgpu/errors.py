"""Errors that medgpu reports to its users.

Every error raised on purpose by the library derives from :class:`MedgpuError` and carries
a message that is one line, names the problem, and makes sense without a traceback. The CLI
prints exactly that line on stderr and exits non-zero.
"""
from __future__ import annotations


class MedgpuError(Exception):
    """Base class of every error medgpu raises on purpose."""

    exit_code: int = 1

    def __str__(self) -> str:  # keep it to one line whatever the caller passed
        return " ".join(super().__str__().split())


class InputError(MedgpuError):
    """An input file or folder is missing, unreadable or not an image medgpu can read."""


class OutputError(MedgpuError):
    """An output file cannot be written."""


class OptionError(MedgpuError, ValueError):
    """An option is out of range or inconsistent with the input."""

    exit_code = 2


class DeviceError(MedgpuError):
    """The requested compute device is not available."""


class FormatError(MedgpuError):
    """A file is not a medgpu stream, or uses a format this version cannot read."""


class UnsupportedVersionError(FormatError):
    """The stream was written in a newer container format version."""


class CorruptStreamError(FormatError):
    """The stream is damaged: a checksum does not match or a structure is inconsistent."""


class TruncatedStreamError(CorruptStreamError):
    """The stream ends before its end marker: the file was cut short."""


class WeightsMismatchError(MedgpuError):
    """The stream was coded with other codec weights than the ones installed."""


__all__ = [
    "CorruptStreamError",
    "DeviceError",
    "FormatError",
    "InputError",
    "MedgpuError",
    "OptionError",
    "OutputError",
    "TruncatedStreamError",
    "UnsupportedVersionError",
    "WeightsMismatchError",
]
