"""The one error type for bad input in a file the harness reads (profiles, traces, lab configs,
traceability tables): it names the file, the line (0 when unknown) and the field, in one line,
and every command answers it with that line and exit code 2.

A leaf module: it imports nothing of the project, so every layer (the simulator included) may use it.
"""
from __future__ import annotations


class InputError(ValueError):
    def __init__(self, path, line: int, field: str, message: str):
        self.path, self.line, self.field, self.message = str(path), line, field, message
        where = f"{path}:{line}" if line else str(path)
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")
