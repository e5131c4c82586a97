"""Commands: embed, search, index, search-eval."""

from __future__ import annotations

from pathlib import Path

import typer

from ._app import app
from ._common import console, print_json, setup_logging


@app.command()
def embed(
    paths: list[str] = typer.Argument(..., metavar="[RUN] DATA", help="Optional trained run folder, then the image folder."),
    store: Path = typer.Option(..., "--store", help="Embedding store folder (created if missing)."),
    model: str | None = typer.Option(None, "--model", help="Backbone name (instead of RUN), e.g. efficientnet_lite0."),
    weights: str = typer.Option("default", "--weights", help="With --model: default, none, or a weights FILE."),
    batch_size: int = typer.Option(64, "--batch-size", help="Images per forward pass."),
    backend: str = typer.Option("auto", "--backend", help="auto (OpenVINO on CPU for large jobs, or small ones once the model is converted) | torch | openvino."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 only if cos >= 0.999 to fp32) | fp32 | bf16."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | mps"),
    exact_resize: bool = typer.Option(False, "--exact-resize", help="Resize with PIL exactly like torchvision (slower); "
                                      "default: PyTorch's uint8 kernel, within 2 grey levels."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or warnings."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Embed the images of DATA into STORE (incremental: only new or changed files are embedded)."""
    from ..embed.extractor import Extractor, embed_folder
    from ..errors import ConfigError

    setup_logging(quiet)
    if len(paths) > 2:
        raise ConfigError(f"embed takes [RUN] DATA; got {len(paths)} paths. Quote paths with spaces.")
    run, data = (paths[0], paths[1]) if len(paths) == 2 else (None, paths[0])
    if (run is None) == (model is None):
        raise ConfigError("Pass exactly one of RUN (a trained run folder) or --model NAME, e.g. "
                          "`transferkit embed DATA --model efficientnet_lite0 --store STORE`.")
    if run is not None and weights != "default":
        raise ConfigError("--weights applies to --model only; a RUN already contains its weights.")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer; got {batch_size}.")
    from ..inference.devices import resolve_device

    opts = {"backend": backend, "precision": precision, "device": resolve_device(device), "exact_resize": exact_resize}
    extractor = Extractor.from_run(run, **opts) if run is not None else Extractor.from_backbone(model, weights=weights, **opts)
    report = embed_folder(extractor, data, store, batch_size=batch_size, quiet=quiet, progress=not quiet and not json_out)
    if json_out:
        print_json(report.to_dict())
        return
    c = console()
    c.print(f"added {report.added}, updated {report.updated}, removed {report.removed}, "
            f"unchanged {report.unchanged}, skipped {len(report.skipped)}")
    info = extractor.inference_info
    c.print(f"{report.num_rows} embeddings in {report.store} ({report.images_per_second:.1f} images/s, "
            f"{info.get('backend')} {info.get('precision')})")


@app.command()
def search(
    store: Path = typer.Argument(..., help="Embedding store folder."),
    query: Path | None = typer.Argument(None, help="Query image (embedded with the store's model)."),
    id: str | None = typer.Option(None, "--id", help="Use the stored embedding with this id as the query (excluded from results)."),
    top_k: int = typer.Option(5, "--top-k", "-k", help="Number of results."),
    label: str | None = typer.Option(None, "--label", help="Only results with this label."),
    split: str | None = typer.Option(None, "--split", help="Only results from this split (train, val, test, all)."),
    json_out: bool = typer.Option(False, "--json", help="Print results as JSON."),
    exact: bool = typer.Option(False, "--exact", help="Exact search even if an ANN index exists."),
) -> None:
    """Find the images in STORE most similar (cosine) to QUERY or to a stored embedding."""
    from ..errors import ConfigError, DataError
    from ..store.store import EmbeddingStore

    setup_logging(False)
    if (query is None) == (id is None):
        raise ConfigError("Pass exactly one of QUERY (an image file) or --id ID (a stored embedding).")
    if top_k < 1:
        raise ConfigError(f"--top-k must be a positive integer; got {top_k}.")
    st = EmbeddingStore.open(store)
    if id is not None:
        row = st.get(id)
        if row is None:
            raise ConfigError(f"No embedding with id {id!r} in {store}. Ids are listed by `transferkit search ... --json`.")
        vector, exclude = row["vector"], [id]
    else:
        from ..data.images import UnreadableImageError, load_image
        from ..embed.extractor import Extractor

        if not query.exists():
            from ..errors import DataNotFoundError

            raise DataNotFoundError(f"Query image not found: {query}.")
        extractor = Extractor.from_source(st.meta.get("source", {}))
        st.check_model(extractor.model_id)
        try:
            image = load_image(query, draft_size=extractor.preprocessing.resize_size)
        except UnreadableImageError as exc:
            raise DataError(f"Cannot read query image {query}: {exc}.") from None
        vector, exclude = extractor.embed_images([image])[0], []
    results = st.search(vector, top_k, label=label, split=split, exact=exact, exclude_ids=exclude)
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
    store: Path = typer.Argument(..., help="Embedding store folder."),
    kind: str = typer.Option("auto", "--kind", help="auto (HNSW below 100k vectors, IVF-Flat above) | hnsw | ivf"),
    target_recall: float = typer.Option(0.95, "--target-recall", help="Tune the search parameter to reach this recall@10."),
    json_out: bool = typer.Option(False, "--json", help="Print the index info as JSON."),
) -> None:
    """Build the approximate index of STORE, tuned to a target recall@10, and report the measured recall."""
    from ..store.search import build_index
    from ..store.store import EmbeddingStore

    setup_logging(False)
    info = build_index(EmbeddingStore.open(store), kind=kind, target_recall=target_recall)
    if json_out:
        print_json(info)
        return
    name = "IVF-Flat" if info["kind"] == "faiss-ivf-flat-ip" else "HNSW"
    param = f"nprobe {info['nprobe']}" if "nprobe" in info else f"efSearch {info['ef_search']}"
    console().print(f"{name} index over {info['num_vectors']} vectors ({param}): recall@10 {info['recall_at_10']:.3f} "
                    f"vs exact ({info['recall_queries']} queries), built in {info['build_seconds']:.2f}s, "
                    f"{info['query_ms']:.3f} ms/query")


@app.command("search-eval")
def search_eval_cmd(
    store: Path = typer.Argument(..., help="Embedding store folder."),
    k: str = typer.Option("1,5,10", "--k", help="Comma-separated cut-offs, e.g. 1,5,10."),
    split: str | None = typer.Option(None, "--split", help="Evaluate only this split."),
    json_out: bool = typer.Option(False, "--json", help="Print metrics as JSON."),
) -> None:
    """Leave-one-out retrieval quality of STORE with labels as ground truth (precision, recall, mAP @k)."""
    from ..errors import ConfigError
    from ..store.search import search_eval
    from ..store.store import EmbeddingStore

    setup_logging(False)
    try:
        ks = [int(x) for x in k.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--k must be comma-separated positive integers like 1,5,10; got {k!r}.") from None
    if not ks or min(ks) < 1:
        raise ConfigError(f"--k must be comma-separated positive integers like 1,5,10; got {k!r}.")
    metrics = search_eval(EmbeddingStore.open(store), ks, split=split)
    if json_out:
        print_json(metrics)
        return
    c = console()
    c.print(f"{metrics['num_queries']} queries (leave-one-out)")
    for kk in metrics["ks"]:
        c.print(f"k={kk:<3} precision {metrics[f'p_at_{kk}']:.3f}  recall {metrics[f'r_at_{kk}']:.3f}  mAP {metrics[f'map_at_{kk}']:.3f}")
