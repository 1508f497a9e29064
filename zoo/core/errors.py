"""An error's message quoted in one line, for the errors zoo raises around a library's."""
from __future__ import annotations


def one_line(exc: BaseException, limit: int | None = 200, tail: bool = False) -> str:
    """``exc``'s message on one line, at most ``limit`` characters (its end with ``tail``: where a tool
    puts the reason last), or its type's name when it has no message.

    Libraries (YAML, huggingface_hub, safetensors, sbatch) write messages over several lines; quoted in
    ours they would break the one line a log, a table cell or ``error: ...`` holds.
    """
    text = " ".join(str(exc).split())
    if limit is not None:
        text = text[-limit:] if tail else text[:limit]
    return text or type(exc).__name__
