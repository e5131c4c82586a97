"""Commands: search, index, search-eval (thin calls of the public API)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, err_console, print_json, setup_logging
from ._root import app


@app.command()
def search(
    store: str = typer.Argument(..., help="Embedding store folder, or its URI (s3://BUCKET/PATH, ...)."),
    query: Path | None = typer.Argument(None, help="Query image (embedded with the store's model)."),
    id: str | None = typer.Option(None, "--id", help="Use the stored embedding with this id as the query (excluded from results)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Number of results."),
    label: str | None = typer.Option(None, "--label", help="Only results with this label."),
    split: str | None = typer.Option(None, "--split", help="Only results from this split (train, val, test, all)."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
    exact: bool = typer.Option(False, "--exact", help="Exact search even if an ANN index exists."),
) -> None:
    """Find the images in STORE most similar (cosine) to QUERY or to a stored embedding."""
    import transferkit as tk

    setup_logging(False)
    if (query is None) == (id is None):
        raise tk.ConfigError("Pass exactly one of QUERY (an image file) or --id ID (a stored embedding).")
    results = tk.search_store(store, id=id, image=query, top_k=top_k, label=label, split=split, exact=exact)
    if json_out:
        print_json([{"rank": r["rank"], "path": r["path"], "label": r["label"], "score": round(r["score"], 6),
                     "split": r["split"], "id": r["id"]} for r in results])
        return
    c = console()
    if not results:
        c.print("No results.")
    for r in results:
        c.print(f"{r['rank']:>3}  {r['score']:.4f}  {r['path']}  {r['label']}")


@app.command()
def index(
    store: str = typer.Argument(..., help="Embedding store folder, or its URI (s3://BUCKET/PATH, ...)."),
    kind: str = typer.Option("auto", "--kind", help="auto (HNSW below 100k vectors, IVF-Flat above, streamed IVF-PQ once the vectors pass 4 GiB) | hnsw | ivf | ivfpq"),
    target_recall: float = typer.Option(0.95, "--target-recall", help="Tune the search parameter to reach this recall@10."),
    json_out: bool = typer.Option(False, "--json", help="Print the index info as JSON."),
) -> None:
    """Build the approximate index of STORE, tuned to a target recall@10, and report the measured recall."""
    import transferkit as tk

    setup_logging(False)

    def render(event) -> None:  # the result line on stdout (unless --json), warnings on stderr
        if event.kind == "warning":
            err_console().print(f"Warning: {event.message}", markup=False)
        elif event.kind == "message" and not json_out:
            console().print(event.message, markup=False)

    info = tk.build_index(tk.EmbeddingStore.open(store), kind=kind, target_recall=target_recall, progress=render)
    if json_out:
        print_json(info)


@app.command("search-eval")
def search_eval_cmd(
    store: str = typer.Argument(..., help="Embedding store folder, or its URI (s3://BUCKET/PATH, ...)."),
    k: str = typer.Option("1,5,10", "--k", help="Comma-separated cut-offs, e.g. 1,5,10."),
    split: str | None = typer.Option(None, "--split", help="Evaluate only this split."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Leave-one-out retrieval quality of STORE with labels as ground truth (precision, recall, mAP @k)."""
    import transferkit as tk

    setup_logging(False)
    try:
        ks = [int(x) for x in k.split(",") if x.strip()]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise tk.ConfigError(f"--k must be comma-separated positive integers like 1,5,10; got {k!r}.")
    metrics = tk.search_eval(tk.EmbeddingStore.open(store), ks, split=split)
    if json_out:
        print_json(metrics)
        return
    c = console()
    c.print(f"{metrics['num_queries']} queries (leave-one-out)")
    for kk in metrics["ks"]:
        c.print(f"k={kk:<3} precision {metrics[f'p_at_{kk}']:.3f}  recall {metrics[f'r_at_{kk}']:.3f}  mAP {metrics[f'map_at_{kk}']:.3f}")
