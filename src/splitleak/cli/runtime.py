"""`splitleak serve` (the cloud, f2 over HTTP) and `splitleak edge` (the device, f1 + defense)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from splitleak.cli.app import app, console, err_console
from splitleak.cli.options import (
    CkptOpt,
    DataDirOpt,
    DatasetOpt,
    DownloadOpt,
    EpochsOpt,
    ModelOpt,
    SeedOpt,
    victim_config,
)
from splitleak.errors import SplitleakError

if TYPE_CHECKING:
    from splitleak.experiment import Victim
    from splitleak.runtime.client import EdgeResult

DEFAULT_SPLIT = "ReLU2"
SplitOrPlanOpt = Annotated[
    str | None,
    typer.Option("--split", "-s", help=f"layer name to cut after (default {DEFAULT_SPLIT})"),
]
FromPlanOpt = Annotated[
    Path | None,
    typer.Option(help="use the split a `splitleak plan` / `audit` output folder recommends"),
]
TokenOpt = Annotated[Path | None, typer.Option(help="file holding the bearer token (never logged)")]
CertOpt = Annotated[Path | None, typer.Option(help="TLS certificate (PEM)")]
KeyOpt = Annotated[Path | None, typer.Option(help="TLS private key (PEM)")]


def _need_runtime_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise SplitleakError(
            f"{err.name} is not installed; install the runtime extra: "
            "pip install 'splitleak[runtime]'"
        ) from None


def read_token(path: Path | None) -> str | None:
    """The token in ``path`` (surrounding whitespace stripped), or None without a file."""
    if path is None:
        return None
    if not path.is_file():
        raise SplitleakError(f"token file {path} not found")
    token = path.read_text(errors="replace").strip()
    if not token or not token.isascii() or not all(c.isprintable() and c != " " for c in token):
        raise SplitleakError(f"token file {path} must hold one printable ASCII word")
    return token


def resolve_split(
    split: str | None, from_plan: Path | None, defenses: list[str] | None = None
) -> tuple[str, tuple[str, ...]]:
    """The split and defenses to deploy: the options, else the plan's, else the default."""
    from splitleak.defenses import parse_defense

    for spec in defenses or ():
        parse_defense(spec)
    if from_plan is None:
        return split or DEFAULT_SPLIT, tuple(defenses or ())
    from splitleak.runtime.planning import recommended_configuration

    choice = recommended_configuration(from_plan)
    if split is not None and split != choice.split:
        raise SplitleakError(
            f"--split {split} contradicts the plan's {choice.split} ({choice.source}); give one"
        )
    err_console.print(f"plan {choice.source}: split {choice.split}")
    return choice.split, tuple(defenses) if defenses else choice.defenses


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@app.command("serve")
def serve_cmd(
    model: ModelOpt = "mnist-net",
    split: SplitOrPlanOpt = None,
    from_plan: FromPlanOpt = None,
    host: Annotated[str, typer.Option(help="address to bind; loopback unless told")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    token_file: TokenOpt = None,
    ssl_certfile: CertOpt = None,
    ssl_keyfile: KeyOpt = None,
    ssl_ca_certs: Annotated[
        Path | None, typer.Option(help="CA bundle: require client certificates it signed")
    ] = None,
    capture: Annotated[
        Path | None, typer.Option(help="keep every accepted body in this folder (+ index.jsonl)")
    ] = None,
    max_batch: Annotated[int, typer.Option(min=1, help="largest batch per request")] = 256,
    feature_dtypes: Annotated[
        str, typer.Option(help="accepted wire dtypes, comma-separated")
    ] = "float32,float16,bfloat16",
    access_log: Annotated[bool, typer.Option(help="log one line per request")] = False,
    defense: Annotated[
        list[str] | None,
        typer.Option(help="defenses deployed with the model (matter when they change f2)"),
    ] = None,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
) -> None:
    """Run the cloud: f2 of the victim cut at --split, over HTTP (POST /v1/infer)."""
    from splitleak.runtime.wire import WIRE_DTYPES

    split_name, defenses = resolve_split(split, from_plan, defense)
    token = read_token(token_file)
    dtypes = tuple(d.strip() for d in feature_dtypes.split(",") if d.strip())
    if not dtypes or set(dtypes) - set(WIRE_DTYPES):
        raise SplitleakError(f"--feature-dtypes takes some of {', '.join(WIRE_DTYPES)}")
    if not _is_loopback(host) and token is None:
        raise SplitleakError(f"binding {host} exposes f2 beyond this machine; give --token-file")
    _need_runtime_extra()
    from splitleak.runtime.server import TlsFiles, check_port_free, create_app, run_server

    tls = TlsFiles(ssl_certfile, ssl_keyfile, ssl_ca_certs)
    tls.check()
    check_port_free(host, port)  # before the victim is loaded (or trained)
    from splitleak.preflight import check_victim

    victim_cfg = victim_config(model, dataset, data_dir, epochs, checkpoint, download=download)
    check_victim(victim_cfg)  # its data files and checkpoint, before anything is trained
    if capture is not None:
        from splitleak.preflight import check_output_dir

        check_output_dir(capture, must_not_exist=False, option="--capture")
    if not _is_loopback(host) and tls.certfile is None:
        err_console.print("[yellow]warning:[/] no TLS: the token and features travel in clear")
    service, store = _service(
        victim_cfg,
        split_name,
        capture,
        max_batch=max_batch,
        dtypes=dtypes,
        defenses=defenses,
    )
    scheme = "https" if tls.certfile else "http"
    err_console.print(
        f"serving {service.spec.model} f2 after {split_name} on {scheme}://{host}:{port}"
        + (f", capturing into {capture}" if capture else "")
        + ("" if token else " (no token: any local process may call it)")
    )
    try:
        run_server(
            create_app(service, token=token), host=host, port=port, tls=tls, access_log=access_log
        )
    finally:
        if store is not None:
            store.close()


def _service(victim_cfg: Any, split: str, capture: Path | None, **limits: Any) -> tuple[Any, Any]:
    from splitleak.experiment import load_victim
    from splitleak.runtime.capture import CaptureStore
    from splitleak.runtime.service import CloudService

    store = CaptureStore(capture) if capture is not None else None
    if store is not None and not store.repair_report.clean():
        err_console.print(f"capture repaired after an unclean stop: {store.repair_report}")
    victim = load_victim(victim_cfg)
    return CloudService.from_victim(victim, split=split, capture=store, **limits), store


@app.command("edge")
def edge_cmd(
    url: Annotated[str, typer.Option(help="the cloud (splitleak serve)")] = "http://127.0.0.1:8000",
    model: ModelOpt = "mnist-net",
    split: SplitOrPlanOpt = None,
    from_plan: FromPlanOpt = None,
    defense: Annotated[
        list[str] | None,
        typer.Option(help="edge defense family:input|features:level[:flag[=value]...]; repeatable"),
    ] = None,
    feature_dtype: Annotated[
        str, typer.Option(help="wire dtype: float32, float16 (half the bytes) or bfloat16")
    ] = "float32",
    inputs: Annotated[
        Path | None, typer.Option(help="images to send (.safetensors 'images' or .npy)")
    ] = None,
    protocol: Annotated[str, typer.Option(help="test images: paper or random")] = "paper",
    n_eval: Annotated[int, typer.Option(help="images for the random protocol")] = 100,
    batch_size: Annotated[int, typer.Option(min=1, help="inputs per request")] = 16,
    save_inputs: Annotated[
        Path | None, typer.Option(help="write the inputs sent (the attack's --reference)")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="write the report: bytes and latency per request (JSON)")
    ] = None,
    token_file: TokenOpt = None,
    ssl_ca_certs: Annotated[
        Path | None, typer.Option(help="CA bundle to verify the server (https)")
    ] = None,
    ssl_certfile: CertOpt = None,
    ssl_keyfile: KeyOpt = None,
    timeout: Annotated[float, typer.Option(help="seconds per attempt")] = 30.0,
    retries: Annotated[int, typer.Option(min=0, help="retries when unreachable")] = 3,
    seed: SeedOpt = 0,
    dataset: DatasetOpt = None,
    data_dir: DataDirOpt = None,
    download: DownloadOpt = False,
    epochs: EpochsOpt = 10,
    checkpoint: CkptOpt = None,
) -> None:
    """Run the edge: f1 and its defense on images, send the features, print the answers."""
    from splitleak.runtime.wire import WIRE_DTYPES

    split_name, defenses = resolve_split(split, from_plan, defense)
    if feature_dtype not in WIRE_DTYPES:
        raise SplitleakError(f"--feature-dtype takes one of {', '.join(WIRE_DTYPES)}")
    token = read_token(token_file)
    from splitleak.preflight import check_output_file

    for path, option in ((save_inputs, "--save-inputs"), (out, "--out")):
        if path is not None:  # written after the features were sent: checked before
            check_output_file(path, option=option)
    _need_runtime_extra()
    from splitleak.preflight import check_victim

    victim_cfg = victim_config(model, dataset, data_dir, epochs, checkpoint, download=download)
    check_victim(victim_cfg)  # its data files and checkpoint, before anything is trained
    from splitleak.experiment import load_victim
    from splitleak.runtime.client import EdgeClient, HttpTransport, client_ssl_context

    context = None
    if url.startswith("https://") or ssl_ca_certs or ssl_certfile:
        context = client_ssl_context(
            ca_certs=ssl_ca_certs, certfile=ssl_certfile, keyfile=ssl_keyfile
        )
    transport = HttpTransport(
        url, token=token, timeout_s=timeout, retries=retries, ssl_context=context
    )
    victim = load_victim(victim_cfg)
    pixels, labels, indices = _edge_inputs(victim, inputs, protocol, n_eval, seed)
    client = EdgeClient.from_victim(
        victim,
        split=split_name,
        transport=transport,
        defenses=defenses,
        seed=seed,
        feature_dtype=feature_dtype,
    )
    try:
        client.check_server(victim.architecture.input_shape)
        x = victim.architecture.normalization.normalize(pixels)
        results = [client.infer(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    finally:
        transport.close()
    if save_inputs is not None:
        from splitleak.runtime.features import write_images

        write_images(
            save_inputs,
            pixels,
            labels=labels,
            indices=indices,
            request_ids=[r.request_id for r in results],
            batches=[len(r.classes) for r in results],
        )
    report = _report(url, victim, split_name, defenses, feature_dtype, seed, results, labels)
    if out is not None:
        from splitleak.records import write_json

        write_json(out, report)
    _print_report(results, report)


def _edge_inputs(
    victim: Victim, inputs: Path | None, protocol: str, n_eval: int, seed: int
) -> tuple[Any, Any, Any]:
    """(pixels, labels or None, test indices or None) of the images to send."""
    if inputs is not None:
        from splitleak.runtime.features import load_images

        ref = load_images(inputs, image_shape=victim.architecture.input_shape)
        return ref.images, ref.labels, ref.indices
    from splitleak.evaluation import evaluation_indices

    if protocol not in ("paper", "random"):
        raise SplitleakError(f"unknown --protocol {protocol!r}; valid: paper, random")
    index = evaluation_indices(victim.test.labels, protocol=protocol, n=n_eval, seed=seed)  # type: ignore[arg-type]
    chosen = victim.test.subset(index)
    return chosen.to_float(), chosen.labels, index


def _report(
    url: str,
    victim: Victim,
    split: str,
    defenses: tuple[str, ...],
    feature_dtype: str,
    seed: int,
    results: list[EdgeResult],
    labels: Any,
) -> dict[str, Any]:
    import torch

    from splitleak.records import versions
    from splitleak.runtime.planning import EDGE_REPORT_FORMAT, summarize_requests

    classes = torch.cat([r.classes for r in results])
    requests = [r.record() for r in results]
    summary = summarize_requests(requests)
    if labels is not None:
        summary["accuracy"] = float((classes == labels).float().mean())
    return {
        "format": EDGE_REPORT_FORMAT,
        "url": url,
        "model": victim.architecture.name,
        "split": split,
        "defenses": list(defenses),
        "feature_dtype": feature_dtype,
        "seed": seed,
        "summary": summary,
        "predictions": classes.tolist(),
        "requests": requests,
        "versions": versions(),
    }


def _print_report(results: list[EdgeResult], report: dict[str, Any]) -> None:
    table = Table("request", "batch", "bytes sent", "RTT", "server")
    for r in results:
        server = sum(r.server_timing.values())
        table.add_row(
            r.request_id[:12],
            str(len(r.classes)),
            str(r.bytes_sent),
            f"{1000 * r.latency_s:.2f} ms",
            f"{1000 * server:.2f} ms",
        )
    console.print(table)
    s = report["summary"]
    accuracy = f"; accuracy {s['accuracy']:.4f}" if "accuracy" in s else ""
    console.print(
        f"{s['inputs']} inputs in {s['requests']} requests at {report['split']} "
        f"({report['feature_dtype']}, defense {', '.join(report['defenses']) or 'none'}): "
        f"{s['bytes_per_input']:.0f} B/input, RTT p50 {1000 * s['latency_p50_s']:.2f} ms, "
        f"p99 {1000 * s['latency_p99_s']:.2f} ms{accuracy}"
    )


def attack_features(
    cfg: Any, features: Path | None, reference: Path | None, dest: Path, compute: Any
) -> None:
    """`splitleak attack --features PATH [--reference FILE]`: attack captured features."""
    from splitleak.runtime.captured import attack_captured

    if features is None:
        raise SplitleakError("--reference scores the reconstructions of --features; give both")
    run = attack_captured(cfg, features=features, reference=reference, out=dest, compute=compute)
    console.print(run.describe())
