"""Command: doctor (what a bug report needs: CPU features, what auto chooses and why, cache, versions, extras)."""

from __future__ import annotations

from typing import Any

import typer

from ._common import print_json
from ._root import app


@app.command()
def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Print the CPU's features, the backend and precision `auto` chooses and why, the cache and the versions."""
    import transferkit as tk

    report = tk.system_report()
    if json_out:
        print_json(report)
        return
    typer.echo(format_report(report))


def _yes(value: Any) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_report(r: dict[str, Any]) -> str:
    """The report as ``key: value`` lines in sections."""
    cpu, cuda, cache = r["cpu"], r["cuda"], r["cache"]
    lines = [f"transferkit {r['transferkit']}  python {r['python']}  {r['platform']}", "", "CPU"]
    rows = [("model", cpu["model"]), ("cores", cpu["cores"]), ("AVX2", _yes(cpu["avx2"])), ("AVX-512", _yes(cpu["avx512f"])),
            ("AVX512-BF16", _yes(cpu["avx512_bf16"])), ("AMX-BF16", _yes(cpu["amx_bf16"])),
            ("native bf16", _yes(cpu["native_bf16"])), ("OpenVINO runs bf16", _yes(cpu["openvino_bf16"])),
            ("CUDA", ", ".join(cuda["devices"]) if cuda["available"] else "not available"), ("auto device", r["device"])]
    lines += [f"  {k:<20} {v}" for k, v in rows]
    lines += ["", "Embedding (backend=auto, precision=auto)"]
    for label, c in r["inference"].items():
        lines += [f"  {label:<33} {c['backend']}, {c['precision']}", f"  {'':<33} why: {c['reason']}"]
    lines += ["", "Fine-tuning (precision=auto)"]
    for label, c in r["training"].items():
        lines += [f"  {label:<42} {c['autocast']}  ({c['reason']})"]
    state = _size(cache["size_bytes"]) if cache["exists"] else "not created yet"
    lines += ["", "Cache", f"  {cache['path']}  ({state})", "", "Packages"]
    lines += [f"  {k:<20} {v or 'not installed'}" for k, v in r["packages"].items()]
    lines += ["", "Optional extras"]
    for name, e in r["extras"].items():
        pkgs = ", ".join(f"{p} {v or 'missing'}" for p, v in e["packages"].items())
        lines += [f"  {name:<20} {'installed' if e['installed'] else 'not installed'} ({pkgs})"]
    return "\n".join(lines)
