"""The generic SSL task of ESPnet, with the wav2vec 2.0 objective registered.

Replaces ``espnet2/tasks/ssl.py`` of ESPnet 202511 (CONTRIBUTING.md lists it). Every
module-level name, option and default of ESPnet's version keeps working; added:

* loss ``wav2vec2`` (``espnet2.ssl.loss.wav2vec2.Wav2Vec2Loss``);
* loss ``reconstruction`` (``espnet2.ssl.loss.reconstruction.ReconstructionLoss``,
  TERA-style L1 reconstruction of the masked encoder input frames) and util
  ``freq_mask`` (``FrequencyMasking``, channel blocks of those frames; no-op by
  default);
* loss ``hubert`` is ESPnet's, reporting its masked frames as ``sample_size``
  (``WeightedHuBERTLoss``), so that ranks are weighted by them;
* encoder ``transformer`` is ``Wav2Vec2TransformerEncoder``, ESPnet's
  ``TransformerEncoder`` plus the options wav2vec 2.0 BASE needs (defaults unchanged);
* encoder ``summary_mixing`` (``SummaryMixingEncoder``, a Conformer with
  SummaryMixing in place of self-attention);
* util ``mask`` is ``SpanMasking`` (ESPnet's options; not in place; deterministic
  validation masks);
* ``build_optimizers`` hooks the optimizer so the model counts optimizer updates;
* the collate window/shift follow ``frontend_conf.shapes`` of the CNN frontend;
* ``--speech_volume_normalize`` reaches the preprocessor (ESPnet passed ``rir_scp``);
* ``collate_fn_conf.crop_seconds``: fixed-length crops
  (``espnet2/ssl/data/collate.py``);
* ``collate_fn_conf.augmentation``: noise, speed and volume perturbation of training
  utterances (``espnet2/ssl/data/augment.py``; never in validation or collect-stats),
  with
  their shares reported as ``aug_share`` etc.;
* ``--batch_seconds`` (+ ``--max_device_batch_seconds``) sets ``batch_type``,
  ``batch_bins``/``batch_size`` and ``accum_grad``
  (``espnet2/ssl/train/batch_seconds.py``), and
  ``--lr_scaling`` scales ``optim_conf.lr`` from ``--lr_reference_batch_seconds``;
* the trainer is ``SSLTrainer`` (``--max_seen_hours``,
  ``espnet2/ssl/train/trainer.py``);
* every training and validation example is checked when loaded (audio readable,
  complete, at the model's rate, mono, not empty, finite; one label per CNN frame):
  ``--bad_utterances error`` (default) stops naming the utterance, the file and the
  fix, ``skip`` leaves it out with a warning and a count
  (``espnet2/ssl/data/checked_dataset.py``); ``--check_data_before_training`` checks the
  headers and labels of every utterance before the first step.

Usage: ``python -m espnet2.bin.ssl_train --config <train_ssl_*.yaml> ...``
"""

import argparse
import logging
import sys
from typing import (
    Callable,
    Collection,
    Dict,
    List,
    Optional,
    Set,
    Tuple,
    Union,
)

import humanfriendly
import numpy as np
import torch
from typeguard import typechecked

from espnet2.asr.encoder.abs_encoder import AbsEncoder
from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
from espnet2.asr.encoder.e_branchformer_encoder import EBranchformerEncoder
from espnet2.asr.encoder.summary_mixing_encoder import SummaryMixingEncoder
from espnet2.asr.encoder.wav2vec2_transformer_encoder import Wav2Vec2TransformerEncoder
from espnet2.asr.frontend.abs_frontend import AbsFrontend
from espnet2.asr.frontend.cnn import CNNFrontend
from espnet2.asr.frontend.default import DefaultFrontend
from espnet2.asr.preencoder.abs_preencoder import AbsPreEncoder
from espnet2.asr.preencoder.linear import LinearProjection
from espnet2.asr.preencoder.sinc import LightweightSincConvs
from espnet2.asr.specaug.abs_specaug import AbsSpecAug
from espnet2.asr.specaug.specaug import SpecAug
from espnet2.layers.abs_normalize import AbsNormalize
from espnet2.layers.global_mvn import GlobalMVN
from espnet2.layers.utterance_mvn import UtteranceMVN
from espnet2.ssl.data.checked_dataset import BAD_UTTERANCES, CheckedDataset
from espnet2.ssl.data.collate import SSLCollateFn
from espnet2.ssl.data.example_check import ExampleRules
from espnet2.ssl.espnet_model import ESPnetSSLModel
from espnet2.ssl.frame_geometry import (
    Shapes,
    config_cnn_shapes,
    receptive_field,
    total_stride,
)
from espnet2.ssl.loss.abs_loss import AbsSSLLoss
from espnet2.ssl.loss.hubert import HuBERTLoss  # noqa: F401 (ESPnet's name, kept)
from espnet2.ssl.loss.hubert_weighted import WeightedHuBERTLoss
from espnet2.ssl.loss.reconstruction import ReconstructionLoss
from espnet2.ssl.loss.wav2vec2 import Wav2Vec2Loss
from espnet2.ssl.mask.frequency import FrequencyMasking
from espnet2.ssl.mask.span import SpanMasking
from espnet2.ssl.train.batch_seconds import (
    LR_SCALING_RULES,
    REFERENCE_BATCH_SECONDS,
    BatchPlan,
    plan_batch,
    scale_lr,
)
from espnet2.ssl.train.trainer import SSLTrainer
from espnet2.tasks.abs_task import AbsTask, IteratorOptions
from espnet2.text.phoneme_tokenizer import g2p_choices
from espnet2.torch_utils.initialize import initialize
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from espnet2.train.dataset import AbsDataset, ESPnetDataset
from espnet2.train.distributed_utils import get_world_size
from espnet2.train.preprocessor import CommonPreprocessor
from espnet2.utils.nested_dict_action import NestedDictAction
from espnet2.utils.types import float_or_none, int_or_none, str2bool, str_or_none

frontend_choices = ClassChoices(
    name="frontend",
    classes=dict(wav2vec_cnn=CNNFrontend, default=DefaultFrontend),
    type_check=AbsFrontend,
    default="wav2vec_cnn",
)
specaug_choices = ClassChoices(
    name="specaug",
    classes=dict(specaug=SpecAug),
    type_check=AbsSpecAug,
    default=None,
    optional=True,
)
normalize_choices = ClassChoices(
    "normalize",
    classes=dict(global_mvn=GlobalMVN, utterance_mvn=UtteranceMVN),
    type_check=AbsNormalize,
    default="utterance_mvn",
    optional=True,
)
preencoder_choices = ClassChoices(
    name="preencoder",
    classes=dict(sinc=LightweightSincConvs, linear=LinearProjection),
    type_check=AbsPreEncoder,
    default="linear",
    optional=True,
)
encoder_choices = ClassChoices(
    "encoder",
    classes=dict(
        transformer=Wav2Vec2TransformerEncoder,
        e_branchformer=EBranchformerEncoder,
        conformer=ConformerEncoder,
        summary_mixing=SummaryMixingEncoder,
    ),
    type_check=AbsEncoder,
    default="transformer",
)
loss_choices = ClassChoices(
    "loss",
    classes=dict(
        hubert=WeightedHuBERTLoss,
        wav2vec2=Wav2Vec2Loss,
        reconstruction=ReconstructionLoss,
    ),
    type_check=AbsSSLLoss,
    default="hubert",
)
util_choices = ClassChoices(
    "util",
    classes=dict(mask=SpanMasking, freq_mask=FrequencyMasking),
    type_check=torch.nn.Module,
    default=None,
)
model_choices = ClassChoices(
    "model",
    classes=dict(espnet=ESPnetSSLModel),
    type_check=AbsESPnetModel,
    default="espnet",
)

# (option, type, default, help) of the preprocessing group, as in ESPnet 202511.
_PREPROCESS_OPTIONS = (
    ("--use_preprocessor", str2bool, True, "Apply preprocessing to data or not"),
    ("--bpemodel", str_or_none, None, "The model file of sentencepiece"),
    ("--non_linguistic_symbols", str_or_none, None, "non_linguistic_symbols file"),
    ("--speech_volume_normalize", float_or_none, None, "Scale the maximum amplitude"),
    ("--rir_scp", str_or_none, None, "The file path of rir scp file."),
    ("--rir_apply_prob", float, 1.0, "The probability for applying RIR convolution."),
    ("--noise_scp", str_or_none, None, "The file path of noise scp file."),
    ("--noise_apply_prob", float, 1.0, "The probability applying Noise adding."),
    ("--noise_db_range", str, "13_15", "The range of noise decibel level."),
)
# Collate options read from --collate_fn_conf, with ESPnet's defaults.
_COLLATE_DEFAULTS = dict(
    int_pad_value=-1,
    label_downsampling=1,
    pad=False,
    rand_crop=True,
    mix_speech=False,
    reverb_speech=False,
    noise_scp="data/noise/wav.scp",
    rir_scp="data/rirs/wav.scp",
    noise_apply_prob=1.0,
    rir_apply_prob=1.0,
    noise_db_range="-5_20",
    dynamic_mixing_gain_db=5.0,
    dynamic_mixing_prob=0.1,
)


class SSLTask(AbsTask):
    """Self-supervised pretraining: ``python -m espnet2.bin.ssl_train``."""

    num_optimizers: int = 1
    class_choices_list = [
        frontend_choices,
        specaug_choices,
        normalize_choices,
        preencoder_choices,
        encoder_choices,
        model_choices,
    ]
    trainer = SSLTrainer

    @classmethod
    def add_task_arguments(cls, parser: argparse.ArgumentParser):
        """Adds the task's options (ESPnet 202511's, unchanged)."""
        group = parser.add_argument_group(description="Task related")
        required = parser.get_default("required")
        required += ["token_list"]
        group.add_argument(
            "--token_list",
            type=str_or_none,
            default=None,
            help="A text mapping int-id to token",
        )
        group.add_argument(
            "--init",
            type=lambda x: str_or_none(x.lower()),
            default=None,
            help="The initialization method",
            choices=[
                "chainer",
                "xavier_uniform",
                "xavier_normal",
                "kaiming_uniform",
                "kaiming_normal",
                None,
            ],
        )
        group.add_argument(
            "--collate_fn_conf",
            action=NestedDictAction,
            default=dict(),
            help="The keyword arguments for collate_fn class.",
        )
        group.add_argument(
            "--input_size",
            type=int_or_none,
            default=None,
            help="The number of input dimension of the feature",
        )
        group.add_argument(
            "--num_classes",
            type=int,
            default=None,
            help="Unused; the loss conf's num_classes counts",
        )
        group.add_argument(
            "--hf_config_fields",
            action=NestedDictAction,
            default=dict(),
            help="Fields of the Hugging Face config.json this model was imported "
            "from that have no ESPnet form (e.g. final_dropout); "
            "espnet2.bin.ssl_hf_convert --to_hf writes them back unchanged",
        )
        cls._add_preprocess_arguments(parser)
        cls._add_budget_arguments(parser)
        cls._add_data_check_arguments(parser)
        group.add_argument(
            "--loss",
            action=NestedDictAction,
            default=[{"name": "hubert", "conf": {}}],
            help="The loss functions and their configurations.",
        )
        group.add_argument(
            "--util",
            action=NestedDictAction,
            default=[{"name": "mask", "conf": {}}],
            help="Configurations for SSL helper utils.",
        )
        for class_choices in cls.class_choices_list:
            class_choices.add_arguments(group)

    @classmethod
    def _add_budget_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Batch in seconds of audio")
        group.add_argument(
            "--batch_seconds",
            type=float_or_none,
            default=None,
            help="Audio per optimizer update (s, all GPUs); sets batch_type, "
            "batch_bins or batch_size, and accum_grad. null: use those as given",
        )
        group.add_argument(
            "--max_device_batch_seconds",
            type=float_or_none,
            default=None,
            help="Most audio (s) one GPU holds in a micro-batch; more needs "
            "accum_grad. null: no limit",
        )
        group.add_argument(
            "--lr_scaling",
            type=str,
            default="none",
            choices=LR_SCALING_RULES,
            help="Scale optim_conf.lr from the reference batch to --batch_seconds",
        )
        group.add_argument(
            "--lr_reference_batch_seconds",
            type=float,
            default=REFERENCE_BATCH_SECONDS,
            help="The batch (s) optim_conf.lr was tuned for",
        )

    @classmethod
    def _add_data_check_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Bad data")
        group.add_argument(
            "--bad_utterances",
            type=str,
            default="error",
            choices=BAD_UTTERANCES,
            help="A bad example (unreadable, truncated, empty or non-finite audio, "
            "wrong sample rate or channels, missing labels or a label count that is "
            "not one per CNN frame): error = stop, naming it and the fix; skip = "
            "leave it out of its batch, with a warning and a count",
        )
        group.add_argument(
            "--check_data_before_training",
            type=str2bool,
            default=False,
            help="Before the first step, check the audio header and the label count "
            "of every utterance (one header read per file; NaN samples and damaged "
            "compressed audio are still found only when loaded)",
        )

    @classmethod
    def _add_preprocess_arguments(cls, parser: argparse.ArgumentParser):
        group = parser.add_argument_group(description="Preprocess related")
        for name, kind, default, help_text in _PREPROCESS_OPTIONS:
            group.add_argument(name, type=kind, default=default, help=help_text)
        group.add_argument(
            "--token_type",
            type=str,
            default="bpe",
            choices=["bpe", "char", "word", "phn"],
            help="The text will be tokenized in the specified level",
        )
        group.add_argument(
            "--cleaner",
            type=str_or_none,
            default=None,
            choices=[None, "tacotron", "jaconv", "vietnamese"],
            help="Apply text cleaning",
        )
        group.add_argument(
            "--g2p",
            type=str_or_none,
            choices=g2p_choices,
            default=None,
            help="g2p method if --token_type=phn",
        )
        for name in ("--window_size", "--window_shift"):
            parser.add_argument(name, type=int, default=None, help="Unused (ESPnet)")

    @classmethod
    def _cnn_shapes(cls, args: argparse.Namespace) -> Shapes:
        """``(channels, kernel, stride)`` per layer of the CNN frontend."""
        return config_cnn_shapes(vars(args), "--frontend_conf / --encoder_conf")

    @classmethod
    def _frame_geometry(cls, args: argparse.Namespace) -> Tuple[int, int, int]:
        """Sample rate (Hz), frame receptive field and stride (samples)."""
        fs = args.frontend_conf.get("fs", 16000)
        if isinstance(fs, str):
            fs = humanfriendly.parse_size(fs)
        shapes = cls._cnn_shapes(args)
        return int(fs), receptive_field(shapes), total_stride(shapes)

    @classmethod
    def example_rules(cls, args: argparse.Namespace) -> ExampleRules:
        """What a good example is for this model: its sample rate, and for a CNN
        frontend (``wav2vec_cnn``) one label per CNN frame."""
        has_cnn = args.input_size is None and args.frontend == "wav2vec_cnn"
        if args.encoder_conf.get("extractor_conv_layer_config") is not None:
            has_cnn = True
        shapes = cls._cnn_shapes(args)
        return ExampleRules(
            sample_rate=cls._frame_geometry(args)[0],
            cnn_shapes=shapes if has_cnn else None,
            label_downsampling=int(args.collate_fn_conf.get("label_downsampling", 1)),
        )

    @classmethod
    def build_dataset(
        cls,
        args: argparse.Namespace,
        iter_options: IteratorOptions,
        keys_to_load: Optional[Set[Union[int, str]]] = None,
    ) -> AbsDataset:
        """ESPnet's dataset, every example checked when loaded (``CheckedDataset``;
        ``--bad_utterances``, ``--check_data_before_training``)."""
        dataset = super().build_dataset(args, iter_options, keys_to_load)
        if type(dataset) is not ESPnetDataset or not dataset.has_name("speech"):
            return dataset  # ESPnet's multi-task dataset: unchecked
        checked = CheckedDataset(
            dataset,
            cls.example_rules(args),
            getattr(args, "bad_utterances", "error"),
            "training" if iter_options.train else "validation",
        )
        if getattr(args, "check_data_before_training", False):
            checked.check_before_training(keys_to_load)
        return checked

    @classmethod
    @typechecked
    def build_collate_fn(cls, args: argparse.Namespace, train: bool) -> Callable[
        [Collection[Tuple[str, Dict[str, np.ndarray]]]],
        Tuple[List[str], Dict[str, torch.Tensor]],
    ]:
        """ESPnet's HuBERT collate plus ``crop_seconds``
        (``espnet2/ssl/data/collate.py``).

        ``collate_fn_conf`` keys: ``crop_seconds`` [null: crop training batches to
        their shortest utterance, as ESPnet], ``short_utterances`` [pad|drop],
        ``augmentation`` [null, or ``WaveformAugmentation`` options; off in
        collect-stats], and ESPnet's (``label_downsampling``, ``pad``,
        ``rand_crop``, ...).
        """
        fs, field, stride = cls._frame_geometry(args)
        user = dict(args.collate_fn_conf)
        conf = {k: user.pop(k, v) for k, v in _COLLATE_DEFAULTS.items()}
        crop_audio = user.pop("crop_audio", True) and not args.collect_stats
        crop_seconds = user.pop("crop_seconds", None) if crop_audio else None
        user.pop("crop_seconds", None)
        augmentation = user.pop("augmentation", None)
        return SSLCollateFn(
            crop_seconds=crop_seconds,
            short_utterances=user.pop("short_utterances", "pad"),
            frame_field=field,
            frame_stride=stride,
            sample_rate=fs,
            float_pad_value=0.0,
            crop_audio=crop_audio,
            window_size=user.pop("window_size", field / (fs / 1000)),
            window_shift=user.pop("window_shift", stride / (fs / 1000)),
            train=train,
            augmentation=None if args.collect_stats else augmentation,
            **conf,
            **user,
        )

    @classmethod
    @typechecked
    def build_preprocess_fn(
        cls, args: argparse.Namespace, train: bool
    ) -> Optional[Callable[[str, Dict[str, np.array]], Dict[str, np.ndarray]]]:
        """ESPnet's CommonPreprocessor (label text -> ids, optional noise/RIR)."""
        if not args.use_preprocessor:
            return None
        return CommonPreprocessor(
            train=train,
            token_type=args.token_type,
            token_list=args.token_list,
            bpemodel=args.bpemodel,
            non_linguistic_symbols=args.non_linguistic_symbols,
            text_cleaner=args.cleaner,
            g2p_type=args.g2p,
            rir_scp=getattr(args, "rir_scp", None),
            rir_apply_prob=getattr(args, "rir_apply_prob", 1.0),
            noise_scp=getattr(args, "noise_scp", None),
            noise_apply_prob=getattr(args, "noise_apply_prob", 1.0),
            noise_db_range=getattr(args, "noise_db_range", "13_15"),
            short_noise_thres=getattr(args, "short_noise_thres", 0.5),
            speech_volume_normalize=getattr(args, "speech_volume_normalize", None),
        )

    @classmethod
    def required_data_names(
        cls, train: bool = True, inference: bool = False
    ) -> Tuple[str, ...]:
        """Data every example needs: ``speech`` (the ``wav.scp``)."""
        return ("speech",)

    @classmethod
    @typechecked
    def optional_data_names(
        cls, train: bool = True, inference: bool = False
    ) -> Tuple[str, ...]:
        """Data an example may have: ``text``, the frame labels (HuBERT targets)."""
        return ("text",)

    @classmethod
    def build_optimizers(
        cls, args: argparse.Namespace, model: torch.nn.Module
    ) -> List[torch.optim.Optimizer]:
        """ESPnet's optimizers, with a hook that counts optimizer updates.

        The hook runs after every real ``optimizer.step()``: steps skipped for a
        non-finite gradient (by ESPnet's trainer or the AMP grad scaler) and the
        micro-batches of ``accum_grad`` are not counted.
        """
        optimizers = super().build_optimizers(cls._scaled_lr_args(args), model)
        if hasattr(model, "count_optimizer_updates"):
            model.count_optimizer_updates(optimizers[0])
        return optimizers

    @classmethod
    def _scaled_lr_args(cls, args: argparse.Namespace) -> argparse.Namespace:
        """``args`` with ``optim_conf.lr`` scaled by ``--lr_scaling`` (a copy)."""
        if getattr(args, "lr_scaling", "none") == "none":
            return args
        if args.batch_seconds is None:
            raise ValueError(f"--lr_scaling {args.lr_scaling} needs --batch_seconds")
        reference_lr = args.optim_conf.get("lr", 1e-3)
        lr = scale_lr(
            reference_lr,
            args.batch_seconds,
            args.lr_reference_batch_seconds,
            args.lr_scaling,
        )
        logging.info(
            f"lr {reference_lr:g} at {args.lr_reference_batch_seconds:g} s -> {lr:g} "
            f"at {args.batch_seconds:g} s ({args.lr_scaling} scaling)"
        )
        return argparse.Namespace(
            **{**vars(args), "optim_conf": {**args.optim_conf, "lr": lr}}
        )

    @classmethod
    def apply_batch_seconds(
        cls, args: argparse.Namespace, num_devices: int
    ) -> Optional[BatchPlan]:
        """Sets ESPnet's batch options and ``accum_grad`` from ``--batch_seconds``."""
        if getattr(args, "batch_seconds", None) is None:
            return None
        plan = plan_batch(
            args.batch_seconds,
            num_devices,
            args.max_device_batch_seconds,
            cls._frame_geometry(args)[0],
            args.collate_fn_conf.get("crop_seconds"),
        )
        args.batch_type, args.accum_grad = plan.batch_type, plan.accum_grad
        if plan.batch_type == "numel":
            args.batch_bins = plan.batch_bins
        else:
            args.batch_size = plan.batch_size
        return plan

    @classmethod
    def main_worker(cls, args: argparse.Namespace):
        """ESPnet's worker, after turning ``--batch_seconds`` into batch options."""
        if args.distributed:
            num_devices = get_world_size(args.dist_world_size, args.dist_launcher)
        else:
            num_devices = max(1, args.ngpu)
        plan = cls.apply_batch_seconds(args, num_devices)
        if plan is not None:  # logging is configured by ESPnet's worker, later
            print(f"batch plan: {plan.as_dict()}", file=sys.stderr, flush=True)
        super().main_worker(args)

    @classmethod
    def _read_token_list(cls, args: argparse.Namespace) -> List[str]:
        if isinstance(args.token_list, str):
            with open(args.token_list, encoding="utf-8") as f:
                args.token_list = [line.rstrip() for line in f]  # config keeps it
        elif not isinstance(args.token_list, (tuple, list)):
            raise RuntimeError("token_list must be str or list")
        return list(args.token_list)

    @classmethod
    def _build_front(cls, args: argparse.Namespace):
        """Frontend, specaug, normalize and preencoder, and the encoder input size."""
        frontend, input_size = None, args.input_size
        if input_size is None:
            frontend = frontend_choices.get_class(args.frontend)(**args.frontend_conf)
            input_size = frontend.output_size()
        else:
            args.frontend, args.frontend_conf = None, {**args.frontend_conf}
        specaug = normalize = preencoder = None
        if args.specaug is not None:
            specaug = specaug_choices.get_class(args.specaug)(**args.specaug_conf)
        if args.normalize is not None:
            normalize = normalize_choices.get_class(args.normalize)(
                **args.normalize_conf
            )
        if getattr(args, "preencoder", None) is not None:
            conf = {"input_size": input_size, **args.preencoder_conf}
            preencoder = preencoder_choices.get_class(args.preencoder)(**conf)
            input_size = preencoder.output_size()
        return frontend, specaug, normalize, preencoder, input_size

    @classmethod
    def _build_utils(
        cls, args: argparse.Namespace, losses: List[AbsSSLLoss], encoder: AbsEncoder
    ) -> Tuple[set, set, torch.nn.ModuleDict]:
        """The utilities (masking, EMA) the losses ask for, configured by --util."""
        util_attributes, required_inputs = set(), set()
        for loss_func in losses:
            util_attributes.update(loss_func.util_attributes)
            required_inputs.update(loss_func.required_inputs)
        util_modules = torch.nn.ModuleDict()
        for attr in sorted(util_attributes):
            util_args = {}
            for conf_obj in args.util:
                if conf_obj["name"] == attr:
                    util_args = dict(conf_obj.get("conf", {}))
            if attr == "ema":
                util_args["model"] = encoder
                util_args["device"] = f"cuda:{torch.cuda.current_device()}"
            if attr == "mask":
                util_args["encoder_embed_dim"] = encoder.output_size()
            util_modules[attr] = util_choices.get_class(attr)(**util_args)
        return util_attributes, required_inputs, util_modules

    @classmethod
    @typechecked
    def build_model(cls, args: argparse.Namespace) -> ESPnetSSLModel:
        """Builds the model from the config (every part through ClassChoices)."""
        token_list = cls._read_token_list(args)
        logging.info(f"Vocabulary size: {len(token_list)}")
        frontend, specaug, normalize, preencoder, input_size = cls._build_front(args)
        encoder = encoder_choices.get_class(args.encoder)(
            input_size=input_size, **args.encoder_conf
        )
        losses = [
            loss_choices.get_class(item["name"])(
                encoder_output_size=encoder.output_size(), **item.get("conf", {})
            )
            for item in args.loss
        ]
        util_attributes, required_inputs, util_modules = cls._build_utils(
            args, losses, encoder
        )
        model_conf = dict(args.model_conf)
        model_conf.setdefault("sample_rate", cls._frame_geometry(args)[0])
        model = model_choices.get_class(args.model)(
            vocab_size=len(token_list),
            frontend=frontend,
            specaug=specaug,
            normalize=normalize,
            preencoder=preencoder,
            encoder=encoder,
            token_list=token_list,
            losses=losses,
            util_attributes=util_attributes,
            required_inputs=required_inputs,
            util_modules=util_modules,
            **model_conf,
        )
        if args.init is not None:
            initialize(model, args.init)
        return model
