#!/usr/bin/env python3
"""k-means targets for HuBERT: fit on sampled features, write frame labels, check.

Usage::

    # fit on 10 % of the utterances (at most 1 M frames) with faiss
    python -m espnet2.bin.ssl_kmeans fit --feats_scp dump/mfcc/train/feats.scp \\
        --out_dir exp/kmeans_mfcc_100 --n_clusters 100

    # one label per SSL CNN frame (100 Hz features: every 2nd frame), tokens.txt
    python -m espnet2.bin.ssl_kmeans apply --kmeans_dir exp/kmeans_mfcc_100 \\
        --feats_scp dump/mfcc/train/feats.scp --wav_scp data/train/wav.scp \\
        --ssl_config conf/train_ssl_hubert.yaml --output data/train/text.km100

    # labels vs CNN frame counts: a report, exit status 1 on any disagreement
    python -m espnet2.bin.ssl_kmeans check --labels data/train/text.km100 \\
        --wav_scp data/train/wav.scp --ssl_config conf/train_ssl_hubert.yaml

See :mod:`espnet2.ssl.targets.kmeans` and :mod:`espnet2.ssl.targets.labels`.
Every output is written to a temporary file and renamed, so an interrupted run
leaves no complete-looking file. A bad input is one message and exit status 1.
"""

import argparse
import logging
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

import yaml

from espnet2.ssl.frame_geometry import read_cnn_shapes
from espnet2.ssl.targets.kmeans import (
    FAISS_INIT_METHODS,
    LLOYD_TOL,
    MAX_POINTS_PER_CENTROID,
    KMeansModel,
    apply_kmeans,
    choose_utterances,
    fit_faiss,
    fit_sklearn,
    import_faiss,
    kmeans_metadata,
    read_feats_info,
    read_scp_keys,
    sample_frames,
)
from espnet2.ssl.targets.labels import (
    check_labels,
    check_same_utterances,
    label_step,
    read_utt2num_samples,
    utt2num_samples_from_wav_scp,
    write_labels,
    write_token_list,
)
from espnet2.utils.tool_logging import (
    add_log_level_argument,
    exit_with_error,
    start_tool_logging,
)

TOOL = "ssl_kmeans"
TOOL_ERRORS = (ValueError, OSError, KeyError, yaml.YAMLError)
FAISS_OPTIONS = ("niter", "nredo", "max_points_per_centroid")
SKLEARN_OPTIONS = (
    "n_init",
    "max_iter",
    "batch_size",
    "tol",
    "max_no_improvement",
    "reassignment_ratio",
    "init_size",
)


def none_or_int(value: str) -> Optional[int]:
    """``none`` -> None, else an int (for caps that can be switched off)."""
    return None if value.lower() == "none" else int(value)


def _add_fit_parser(subparsers: Any) -> None:
    """The ``fit`` subcommand: sample frames, fit k-means, save the model."""
    fit = subparsers.add_parser(
        "fit",
        help="fit k-means on sampled features",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    fit.add_argument("--feats_scp", required=True, help="Kaldi scp of (T, D) feats")
    fit.add_argument("--out_dir", required=True, help="writes centroids.npy, yaml")
    fit.add_argument("--n_clusters", type=int, required=True, help="k")
    fit.add_argument(
        "--fraction",
        type=float,
        default=0.1,
        help="share of utterances sampled (ESPnet's portion)",
    )
    fit.add_argument(
        "--max_frames",
        type=none_or_int,
        default=1_000_000,
        help="cap on sampled frames (none: no cap); memory is "
        "max_frames x dim x 4 bytes",
    )
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--backend", choices=("faiss", "sklearn"), default="faiss")
    fit.add_argument("--feature_type", default=None, help="else from feats.yaml")
    fit.add_argument("--layer", type=int, default=None, help="else from feats.yaml")
    _add_faiss_arguments(fit.add_argument_group("faiss backend"))
    sk = fit.add_argument_group("sklearn backend (MiniBatchKMeans; ESPnet's recipe)")
    sk.add_argument("--init", default="k-means++", help="k-means++ or random")
    sk.add_argument("--n_init", type=int, default=20)
    sk.add_argument("--max_iter", type=int, default=100)
    sk.add_argument("--batch_size", type=int, default=10000)
    sk.add_argument("--tol", type=float, default=0.0)
    sk.add_argument("--max_no_improvement", type=none_or_int, default=100)
    sk.add_argument("--reassignment_ratio", type=float, default=0.0)
    sk.add_argument("--init_size", type=none_or_int, default=None)


def _add_faiss_arguments(faiss: Any) -> None:
    """Options of :func:`fit_faiss` (an argument group of ``fit``)."""
    faiss.add_argument(
        "--niter", type=int, default=50, help="most Lloyd iterations per run"
    )
    faiss.add_argument(
        "--faiss_tol",
        type=float,
        default=LLOYD_TOL,
        help="stop when Lloyd's objective improves by less than this share",
    )
    faiss.add_argument("--nredo", type=int, default=1, help="runs, best kept")
    faiss.add_argument(
        "--faiss_init",
        choices=["k-means++", *FAISS_INIT_METHODS],
        default="k-means++",
        help="k-means++: greedy k-means++ on --faiss_init_size frames; the others "
        "are faiss's own",
    )
    faiss.add_argument(
        "--faiss_init_size",
        type=none_or_int,
        default=None,
        help="frames for k-means++ (default: 200000 up to 100 dims, else 60000)",
    )
    faiss.add_argument(
        "--max_points_per_centroid",
        type=none_or_int,
        default=MAX_POINTS_PER_CENTROID,
        help="Lloyd iterations on a seeded subsample of k x this many frames "
        "(faiss's default; none: every frame)",
    )


def _add_audio_arguments(parser: argparse.ArgumentParser) -> None:
    """``--wav_scp`` or ``--utt2num_samples``, ``--ssl_config``, ``--sample_rate``."""
    audio = parser.add_mutually_exclusive_group(required=True)
    audio.add_argument("--wav_scp", help="audio list; lengths from the headers")
    audio.add_argument("--utt2num_samples", help="'utt_id num_samples' lines")
    parser.add_argument(
        "--ssl_config",
        default=None,
        help="SSL config.yaml (frontend_conf.shapes); default: " "the wav2vec 2.0 CNN",
    )
    parser.add_argument("--sample_rate", type=int, default=16000)


def _add_apply_parser(subparsers: Any) -> None:
    """The ``apply`` subcommand: labels and token list."""
    apply = subparsers.add_parser(
        "apply",
        help="write one cluster id per SSL CNN frame",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    apply.add_argument("--kmeans_dir", required=True)
    apply.add_argument("--feats_scp", required=True)
    _add_audio_arguments(apply)
    apply.add_argument(
        "--feature_frame_rate",
        type=float,
        default=None,
        help="Hz; else feats.yaml's frame_rate",
    )
    apply.add_argument(
        "--tolerance",
        type=int,
        default=0,
        help="allowed |labels - CNN frames|; within it trim, or "
        "pad by repeating the last label",
    )
    apply.add_argument("--output", required=True, help="labels file to write")
    apply.add_argument(
        "--token_list", default=None, help="default: tokens.txt next to --output"
    )
    apply.add_argument("--batch_frames", type=int, default=20000)


def _add_check_parser(subparsers: Any) -> None:
    """The ``check`` subcommand: labels against CNN frame counts."""
    check = subparsers.add_parser(
        "check",
        help="compare label counts with the SSL CNN's frame counts",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    check.add_argument("--labels", required=True)
    _add_audio_arguments(check)
    check.add_argument(
        "--n_clusters",
        type=int,
        default=None,
        help="also check every label is in 0..k-1",
    )


def get_parser() -> argparse.ArgumentParser:
    """Build the command-line parser.

    Returns:
        The parser for ``ssl_kmeans`` with subcommands ``fit``, ``apply``, ``check``.
    """
    parser = argparse.ArgumentParser(
        description="k-means targets for HuBERT: fit, apply (labels), check.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_log_level_argument(parser)
    parser.add_argument(
        "--num_threads",
        type=int,
        default=None,
        help="threads of torch, faiss and scikit-learn (default: theirs)",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_fit_parser(subparsers)
    _add_apply_parser(subparsers)
    _add_check_parser(subparsers)
    return parser


def run_fit(args: argparse.Namespace) -> None:
    """Sample, fit with the chosen backend, and save the model in ``out_dir``."""
    utts = choose_utterances(read_scp_keys(args.feats_scp), args.fraction, args.seed)
    frames = sample_frames(
        args.feats_scp, args.fraction, args.max_frames, args.seed, progress=True
    )
    if args.backend == "faiss":
        options: Dict[str, Any] = {k: getattr(args, k) for k in FAISS_OPTIONS}
        options["init"] = args.faiss_init
        options["init_size"] = args.faiss_init_size
        options["tol"] = args.faiss_tol
        centroids, inertia = fit_faiss(
            frames, args.n_clusters, seed=args.seed, **options
        )
    else:
        options = {k: getattr(args, k) for k in SKLEARN_OPTIONS}
        options["init"] = args.init
        centroids, inertia = fit_sklearn(
            frames, args.n_clusters, seed=args.seed, **options
        )
    sample = {"utterances": len(utts), "frames": len(frames)}
    metadata = kmeans_metadata(
        args.feats_scp,
        args.backend,
        args.seed,
        sample,
        inertia,
        options,
        args.feature_type,
        args.layer,
    )
    KMeansModel(centroids, metadata).save(args.out_dir)
    logging.info(
        f"k-means ({args.backend}, k={args.n_clusters}) on {len(frames)} "
        f"frames: inertia per frame {inertia / len(frames):.6g}; "
        f"written to {args.out_dir}"
    )


def _utt2num_samples(args: argparse.Namespace) -> Dict[str, int]:
    """Samples per utterance from ``--utt2num_samples`` or ``--wav_scp``."""
    if args.utt2num_samples:
        return read_utt2num_samples(args.utt2num_samples)
    return utt2num_samples_from_wav_scp(args.wav_scp, args.sample_rate)


def _feature_frame_rate(args: argparse.Namespace, model: KMeansModel) -> float:
    """``--feature_frame_rate``, else ``feats.yaml``'s, else ``kmeans.yaml``'s."""
    rate = args.feature_frame_rate
    rate = rate or read_feats_info(args.feats_scp).get("frame_rate")
    rate = rate or model.metadata.get("feature_frame_rate")
    if not rate:
        raise ValueError(
            f"the frame rate of {args.feats_scp} is unknown (no frame_rate in its "
            "feats.yaml); give --feature_frame_rate (100 for MFCC, 50 for SSL "
            "layer features)"
        )
    return float(rate)


def run_apply(args: argparse.Namespace) -> None:
    """Assign every frame, write the labels at the CNN's rate and the token list."""
    model = KMeansModel.load(args.kmeans_dir)
    shapes = read_cnn_shapes(args.ssl_config)
    step = label_step(_feature_frame_rate(args, model), shapes, args.sample_rate)
    utt2num_samples = _utt2num_samples(args)
    check_same_utterances(
        read_scp_keys(args.feats_scp), utt2num_samples, args.feats_scp
    )
    labels = apply_kmeans(model, args.feats_scp, args.batch_frames, progress=True)
    stats = write_labels(
        labels, args.output, utt2num_samples, shapes, step, args.tolerance
    )
    token_list = args.token_list or str(Path(args.output).parent / "tokens.txt")
    write_token_list(token_list, model.n_clusters)
    logging.info(
        f"{stats['utterances']} utterances, {stats['frames']} labels "
        f"(feature frames / {step}; {stats['adjusted']} adjusted within "
        f"--tolerance) -> {args.output}; tokens -> {token_list}"
    )


def run_check(args: argparse.Namespace) -> None:
    """Print the report of :func:`check_labels`; exit 1 if anything disagrees."""
    shapes = read_cnn_shapes(args.ssl_config)
    report = check_labels(args.labels, _utt2num_samples(args), shapes, args.n_clusters)
    for line in report.lines():
        print(line)
    if not report.ok:
        problems = (
            len(report.mismatches)
            + len(report.missing)
            + len(report.extra)
            + len(report.bad_tokens)
        )
        exit_with_error(TOOL, f"{args.labels}: {problems} problems (listed above)")


def main(cmd: Optional[Sequence[str]] = None) -> None:
    """Run one subcommand; exit with status 1 and one message on a bad input.

    Args:
        cmd: Command-line arguments; None reads ``sys.argv``.
    """
    args = get_parser().parse_args(cmd)
    start_tool_logging(TOOL, args, args.log_level)
    if args.num_threads:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.num_threads)
        import_faiss().omp_set_num_threads(args.num_threads)
        threadpool_limits(limits=args.num_threads)  # scikit-learn's BLAS/OpenMP
    run = {"fit": run_fit, "apply": run_apply, "check": run_check}[args.command]
    try:
        run(args)
    except TOOL_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        exit_with_error(TOOL, f"{type(err).__name__}: {message}")


if __name__ == "__main__":
    main()
