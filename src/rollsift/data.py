"""Load prompt files into ``Prompt`` records; write them back.

Accepted: ``.jsonl``, ``.json`` (a list of objects, or JSON Lines as ``datasets.to_json`` writes
them), ``.parquet``, and a directory of ``.parquet`` shards (read in name order). Two row styles,
detected per file (a ``reward_model`` column means verl):

* TRL: ``prompt`` (a string or a list of chat messages; ``problem`` / ``question`` are accepted
  when ``prompt`` is absent), ``answer`` or else ``solution`` (a worked solution gives up its
  ``\\boxed{}`` or ``#### X`` answer; the raw text stays in ``meta["solution"]``).
* verl: ``prompt`` (chat messages), ``reward_model.ground_truth``, ``data_source``,
  ``extra_info.index``.

Ids: an ``id`` column, else ``f"{data_source}/{extra_info.index}"`` (verl), else the first 16 hex
digits of the sha1 of the prompt's canonical JSON: the same on every machine and run.
Bad rows raise ``DataError`` naming file, row, field, value and fix, or are skipped and counted
with ``on_error="skip"``. docs/data_and_rewards.md has examples.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .errors import UserError
from .records import Prompt
from .rewards.math import extract_answer

logger = logging.getLogger(__name__)

STYLES = ("auto", "trl", "verl")
ON_ERROR = ("raise", "skip")
MAX_KEPT_ERRORS = 20  # messages kept in LoadResult.errors when skipping
_PROMPT_FIELDS = ("prompt", "problem", "question")
_SHORT_ANSWER_CHARS = 100  # a solution with no extractable answer is used whole only if this short


class DataError(UserError, ValueError):
    """A bad file or row. ``where`` is e.g. "line 7" (JSONL, 1-based) or "row 3 (0-based)"."""

    def __init__(self, path: str, where: str | None, fld: str | None, problem: str, fix: str):
        self.path, self.where, self.field = path, where, fld
        loc = ", ".join(x for x in (str(path), where, f"field {fld!r}" if fld else None) if x)
        super().__init__(f"{loc}: {problem}. Fix: {fix}")


@dataclass(frozen=True)
class LoadResult:
    """Prompts loaded, rows skipped (``on_error="skip"``), the first few skip messages, and the
    style detected for each file read."""

    prompts: list[Prompt]
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    styles: dict[str, str] = field(default_factory=dict)


class _RowError(Exception):
    def __init__(self, fld: str | None, problem: str, fix: str):
        super().__init__(problem)
        self.field, self.problem, self.fix = fld, problem, fix


def _show(value: Any, limit: int = 80) -> str:
    try:
        s = json.dumps(value, ensure_ascii=False, default=repr)
    except Exception:
        s = repr(value)
    return s if len(s) <= limit else s[: limit - 3] + "..."


# ------------------------------------------------------------------------------------- reading


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        shards = sorted(p for p in path.iterdir() if p.suffix == ".parquet" and p.is_file())
        if not shards:
            raise DataError(str(path), None, None, "directory holds no .parquet files",
                            "point at a .jsonl/.json/.parquet file or a directory of .parquet shards")
        return shards
    if not path.exists():
        raise DataError(str(path), None, None, "no such file", "check the path")
    if path.suffix not in (".jsonl", ".json", ".parquet"):
        raise DataError(str(path), None, None, f"unknown file type {path.suffix!r}",
                        "use .jsonl, .json (a list of objects) or .parquet")
    return [path]


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """``(where, row)`` for every row; a row is an ``_RowError`` when it could not be decoded."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as e:
            raise DataError(str(path), None, None, f"not a readable parquet file ({e})",
                            "rewrite it with pyarrow or datasets.Dataset.to_parquet") from None
        i = 0
        for batch in pf.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                yield f"row {i} (0-based)", row
                i += 1
        return
    with open(path, encoding="utf-8") as f:
        head = f.read(4096).lstrip()
        f.seek(0)
        if path.suffix == ".json" and head.startswith("["):
            try:
                items = json.load(f)
            except json.JSONDecodeError as e:
                raise DataError(str(path), f"line {e.lineno}", None, f"not valid JSON ({e.msg})",
                                "fix the JSON, or write one object per line as .jsonl") from None
            for i, row in enumerate(items):
                yield f"item {i} (0-based)", row
            return
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                row = _RowError(None, f"not valid JSON ({e.msg} at column {e.colno}): {_show(line.strip())}",
                                "write one JSON object per line")
            yield f"line {lineno} (1-based)", row


def _detect(path: Path, rows_head: Sequence[Any]) -> str:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return "verl" if "reward_model" in pq.read_schema(path).names else "trl"
    for row in rows_head:
        if isinstance(row, dict):
            return "verl" if "reward_model" in row else "trl"
    return "trl"


# ----------------------------------------------------------------------------------- rows -> Prompt


def _jsonable(v: Any) -> Any:
    if v is None or isinstance(v, (str, bool, int, float)):
        return v
    if isinstance(v, Mapping):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _prompt_body(row: Mapping, key: str) -> tuple[str | None, tuple[dict, ...] | None]:
    value = row[key]
    if isinstance(value, str):
        if not value.strip():
            raise _RowError(key, "the prompt is empty", "give the question text")
        return value, None
    if isinstance(value, (list, tuple)) and value:
        msgs = []
        for j, m in enumerate(value):
            if not isinstance(m, Mapping):
                raise _RowError(f"{key}[{j}]", f"a chat message must be an object, got {_show(m)}",
                                'write messages as {"role": "user", "content": "..."}')
            for k in ("role", "content"):
                if not isinstance(m.get(k), str):
                    raise _RowError(f"{key}[{j}].{k}", f"expected a string, got {_show(m.get(k))}",
                                    'write messages as {"role": "user", "content": "..."}')
            msgs.append({str(k): v for k, v in m.items() if v is not None})
        return None, tuple(msgs)
    raise _RowError(key, f"expected a string or a non-empty list of chat messages, got {_show(value)}",
                    'give the question as text or as [{"role": "user", "content": "..."}]')


def _answer_text(value: Any, fld: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise _RowError(fld, f"expected the final answer as a string or number, got {_show(value)}",
                        'give the final answer as a string, e.g. "42" or "\\\\frac{1}{2}"')
    text = str(value).strip()
    if not text:
        raise _RowError(fld, "the answer is empty", "give the final answer, e.g. \"42\"")
    return text


def _from_solution(solution: Any) -> str:
    text = _answer_text(solution, "solution")
    ans, _how = extract_answer(text)
    if ans is not None:
        return ans
    if "\n" not in text and len(text) <= _SHORT_ANSWER_CHARS:
        return text  # a short one-liner is taken as the answer itself
    raise _RowError("solution", f"a worked solution with no \\boxed{{}} or '#### X' answer: {_show(text)}",
                    "add an 'answer' field with the final answer, or end the solution with \\boxed{...}")


def content_id(text: str | None, messages: tuple[dict, ...] | None) -> str:
    """The stable id of a row without one: a short sha1 of its canonical prompt."""
    body = {"text": text} if messages is None else {"messages": list(messages)}
    canon = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha1(canon.encode("utf-8")).hexdigest()[:16]


def _explicit_id(row: Mapping) -> str | None:
    if row.get("id") is None:
        return None
    value = row["id"]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise _RowError("id", f"expected a non-empty string or integer, got {_show(value)}",
                        "use a string or integer id, or drop the column to get content-hash ids")
    return str(value).strip()


def _trl_row(row: Mapping) -> Prompt:
    key = next((k for k in _PROMPT_FIELDS if row.get(k) is not None), None)
    if key is None:
        raise _RowError("prompt", f"missing (row has {_show(sorted(row))})",
                        "add a 'prompt' field (a string or a list of chat messages)")
    text, messages = _prompt_body(row, key)
    meta = dict(row["meta"]) if isinstance(row.get("meta"), Mapping) else {}
    meta.update({k: v for k, v in row.items() if k not in (key, "id", "answer", "meta") and v is not None})
    if row.get("answer") is not None:
        answer = _answer_text(row["answer"], "answer")
        if ("\n" in answer or "####" in answer) and "\\boxed" not in answer:  # GSM8K: solution, then "#### X"
            extracted, how = extract_answer(answer)
            if how == "gsm8k":
                meta.setdefault("solution", answer)
                answer = extracted
    elif row.get("solution") is not None:
        answer = _from_solution(row["solution"])
    else:
        raise _RowError("answer", f"missing: no 'answer' or 'solution' (row has {_show(sorted(row))})",
                        "add an 'answer' field with the final answer, e.g. \"42\"")
    pid = _explicit_id(row) or content_id(text, messages)
    return Prompt(id=pid, answer=answer, text=text, messages=messages, meta=_jsonable(meta))


def _verl_row(row: Mapping) -> Prompt:
    if row.get("prompt") is None:
        raise _RowError("prompt", f"missing (row has {_show(sorted(row))})",
                        'add a \'prompt\' list of chat messages, e.g. [{"role": "user", "content": "..."}]')
    text, messages = _prompt_body(row, "prompt")
    rm = row.get("reward_model")
    if not isinstance(rm, Mapping) or rm.get("ground_truth") is None:
        raise _RowError("reward_model.ground_truth", f"missing (reward_model is {_show(rm)})",
                        'give reward_model as {"style": "rule", "ground_truth": "<answer>"}')
    answer = _answer_text(rm["ground_truth"], "reward_model.ground_truth")
    source = row.get("data_source")
    if source is not None and not isinstance(source, str):
        raise _RowError("data_source", f"expected a string, got {_show(source)}", "name the source as a string")
    extra = row.get("extra_info")
    if extra is not None and not isinstance(extra, Mapping):
        raise _RowError("extra_info", f"expected an object, got {_show(extra)}", 'use e.g. {"index": 0}')
    index = (extra or {}).get("index")
    if index is not None and (isinstance(index, bool) or not isinstance(index, (str, int))):
        raise _RowError("extra_info.index", f"expected an integer or string, got {_show(index)}",
                        "number the rows with integers")
    pid = _explicit_id(row)
    if pid is None:
        pid = f"{source}/{index}" if source is not None and index is not None else content_id(text, messages)
    meta = {k: v for k, v in row.items() if k not in ("prompt", "id", "reward_model") and v is not None}
    rest = {k: v for k, v in rm.items() if k != "ground_truth" and v is not None}
    if rest:
        meta["reward_model"] = rest
    return Prompt(id=pid, answer=answer, text=text, messages=messages, meta=_jsonable(meta))


# ----------------------------------------------------------------------------------------- API


def prompt_from_verl_row(row: Mapping) -> Prompt:
    """The Prompt of one verl-style row (used by the verl integration); ValueError names the field."""
    try:
        return _verl_row(row)
    except _RowError as e:
        raise ValueError(f"rollsift cannot read this verl dataset row: field {e.field!r}: {e.problem}. "
                         f"Fix: {e.fix}") from None


def load_prompts(
    path: str | os.PathLike,
    *,
    style: str = "auto",
    on_error: str = "raise",
    limit: int | None = None,
    nonempty: bool = False,
) -> LoadResult:
    """Prompts from a ``.jsonl`` / ``.json`` / ``.parquet`` file or a directory of parquet shards.

    style: "auto" (per file: a ``reward_model`` column means verl), "trl" or "verl".
    on_error: "raise" a ``DataError`` at the first bad row, or "skip" bad rows (counted in
        ``skipped``; the first ``MAX_KEPT_ERRORS`` messages kept in ``errors``).
    limit: stop after this many prompts.
    nonempty: raise a ``DataError`` when no prompt is left (an empty file, or every row skipped).
    Ids must be unique across everything loaded; a duplicate names both rows.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an integer >= 0, got {limit!r}")
    prompts: list[Prompt] = []
    errors: list[str] = []
    styles: dict[str, str] = {}
    seen: dict[str, str] = {}
    skipped = 0
    for file in _files(Path(path)):
        if limit is not None and len(prompts) >= limit:
            break
        rows = _rows(file)
        head = []
        for item in rows:  # look at the first decodable row before committing to a style
            head.append(item)
            if isinstance(item[1], dict) or len(head) >= 64:
                break
        file_style = style if style != "auto" else _detect(file, [r for _, r in head])
        styles[str(file)] = file_style
        convert = _verl_row if file_style == "verl" else _trl_row
        for where, row in _chain(head, rows):
            if limit is not None and len(prompts) >= limit:
                break
            try:
                if isinstance(row, _RowError):
                    raise row
                if not isinstance(row, dict):
                    raise _RowError(None, f"expected a JSON object, got {_show(row)}", "write one object per row")
                p = convert(row)
                if p.id in seen:
                    raise _RowError("id", f"duplicate id {p.id!r}, first seen at {seen[p.id]}",
                                    "give rows distinct ids (or remove the duplicate prompt); "
                                    "on_error='skip' keeps the first")
            except _RowError as e:
                if on_error == "raise":
                    raise DataError(str(file), where, e.field, e.problem,
                                    f"{e.fix}; or skip bad rows with data.on_error=skip "
                                    f"(load_prompts(..., on_error='skip'))") from None
                err = DataError(str(file), where, e.field, e.problem, e.fix)
                skipped += 1
                if len(errors) < MAX_KEPT_ERRORS:
                    errors.append(str(err))
                continue
            seen[p.id] = f"{file}, {where}"
            prompts.append(p)
    if skipped:
        logger.warning("load_prompts(%s): skipped %d bad rows; first: %s", path, skipped, errors[0])
    result = LoadResult(prompts=prompts, skipped=skipped, errors=errors, styles=styles)
    if nonempty:
        check_nonempty(result, path)
    return result


def check_nonempty(result: LoadResult, path: str | os.PathLike, key: str | None = None) -> None:
    """Raise ``DataError`` when ``result`` holds no prompt: an empty file, or one whose every row was
    skipped. ``key`` (e.g. "data.eval") names the setting in the fix."""
    if result.prompts:
        return
    if result.skipped:
        first = result.errors[0] if result.errors else ""
        raise DataError(str(path), None, None,
                        f"every row was bad and skipped ({result.skipped} with data.on_error=skip); first: {first}",
                        "fix the rows the first error names" + (f", or set {key} to another file" if key else ""))
    none_hint = " (or data.eval=none to run without a held-out set)" if key in (None, "data.eval") else ""
    raise DataError(str(path), None, None, "holds no prompts (the file has no rows)",
                    f"give a file with at least one row{none_hint}")


def check_batch_fill(result: LoadResult, batch_size: int, path: str | os.PathLike,
                     key: str = "data.train", used: int | None = None) -> str | None:
    """Warn (and return the warning) when fewer prompts than ``batch_size`` were loaded: every step
    then trains on fewer groups than asked. ``used``: the prompts kept after a size cap (default:
    all loaded). Names how many rows were skipped as bad, when that is the cause."""
    have = len(result.prompts) if used is None else used
    if have >= batch_size:
        return None
    why = (f"{result.skipped} of {result.skipped + len(result.prompts)} rows were skipped as bad "
           f"(data.on_error=skip; first: {result.errors[0] if result.errors else '?'})" if result.skipped
           else "the file holds no more")
    msg = (f"{key} = {str(path)!r} gives {have} prompt{'s' if have != 1 else ''}, fewer than batch_size "
           f"{batch_size}: {why}; every step will train on at most {have} group{'s' if have != 1 else ''}")
    logger.warning("rollsift: %s", msg)
    return msg


def _chain(head: list, rest: Iterable) -> Iterator:
    yield from head
    yield from rest


def read_jsonl(path: str | os.PathLike) -> list[Prompt]:
    """The prompts ``write_jsonl`` wrote (raises ``DataError`` on any bad row)."""
    return load_prompts(path, style="trl").prompts


def write_jsonl(prompts: Iterable[Prompt], path: str | os.PathLike) -> int:
    """Write prompts as JSON Lines that ``load_prompts`` / ``read_jsonl`` read back unchanged.

    One object per prompt: ``id``, ``prompt`` (text or a list of messages), ``answer``, ``meta``.
    The file is replaced atomically. Returns the number of prompts written.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            for p in prompts:
                body = p.text if p.messages is None else [dict(m) for m in p.messages]
                row = {"id": p.id, "prompt": body, "answer": p.answer, "meta": dict(p.meta)}
                try:
                    line = json.dumps(row, ensure_ascii=False, allow_nan=False)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"prompt {p.id!r}: meta is not JSON-serialisable ({e})") from None
                f.write(line + "\n")
                n += 1
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return n
