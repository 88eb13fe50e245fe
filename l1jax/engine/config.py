"""Study configuration: one frozen dataclass tree, loaded from TOML and validated on load.

Every user error raises :class:`ConfigError` with one line naming the key, the bad value
and what is allowed, before any compute.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from l1jax.engine.errors import ConfigError
from l1jax.engine.table import F32_MAX, load_csv, read_text

NOISES = ("gaussian", "laplace", "student_t", "contaminated")
SOURCES = ("synthetic", "csv")
COUPLINGS = ("independent", "nested")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = ("constant", "cosine", "inverse_sqrt", "exponential")
GRADIENTS = ("l1", "seed")
INITS = ("normal", "zeros")
KERNELS = ("fused", "xla")  # fused kernels where one applies (engine/kernels: CPU and GPU), or XLA only
# The engine counts in int32 (sizes, replicates, epochs, sample indices, optax's step count) and
# computes in float32.  Its sample indices run over a replicate's slots (every size padded to
# tiles that keep 95% of them useful: plan.MIN_EFFICIENCY) and a minibatch epoch's positions
# (fewer than n + B, B at most the largest size): both stay below 2**31 when a replicate's sizes
# sum to at most 2**30.  A minibatch epoch's flat slots run over a device's whole share of a
# chunk, which plan.replicates_per_device keeps below 2**31 too.
INT32_MAX = 2**31 - 1
MAX_SAMPLES = 2**30
# Synthetic targets must stay finite in float32 when a dataset's |y| are summed (MAX_SAMPLES of
# them): |y| <= sum|w*| + |b*| + NOISE_TAIL * noise_scale (x in [0, 1]; NOISE_TAIL bounds the
# largest draw of every noise family from float32 uniforms, heavy Student t and outliers included)
MAX_TARGET = 1e28
NOISE_TAIL = 1e8


@dataclass(frozen=True)
class DataConfig:
    source: str = "synthetic"
    n_features: int = 2
    true_weights: tuple[float, ...] = (2.0, 3.0)
    true_bias: float = 0.0
    noise: str = "gaussian"
    noise_scale: float = 1.0
    noise_df: float = 3.0
    outlier_fraction: float = 0.1
    test_size: int = 10000
    coupling: str = "independent"
    path: str = ""
    target: str = ""
    test_fraction: float = 0.2
    standardize: bool = False


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    optimizer: tuple[str, ...] = ("sgd",)
    learning_rate: tuple[float, ...] = (0.01,)
    schedule: str = "constant"
    batch_size: tuple[int | str, ...] = ("full",)
    gradient: str = "l1"
    init: str = "normal"
    record_every: int = 1
    kernels: str = "fused"


@dataclass(frozen=True)
class SweepConfig:
    sizes: tuple[int, ...] = (100, 1000, 10000)
    seeds: int = 100
    base_seed: int = 0


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    @property
    def recorded_epochs(self) -> tuple[int, ...]:
        """Epochs at which metrics are recorded: 0, r, 2r, ... and always the last."""
        e, r = self.train.epochs, self.train.record_every
        rec = list(range(0, e + 1, r))
        return tuple(rec if rec[-1] == e else rec + [e])

    def to_dict(self) -> dict[str, Any]:
        """Plain-TOML-types view (lists, not tuples), for manifests."""
        out = dataclasses.asdict(self)
        skip = _CSV_ONLY if self.data.source == "synthetic" else _SYNTHETIC_ONLY
        out["data"] = {k: v for k, v in out["data"].items() if k not in skip}
        return {s: {k: list(v) if isinstance(v, tuple) else v for k, v in sec.items()}
                for s, sec in out.items()}


_CSV_ONLY = ("path", "target", "test_fraction", "standardize")
NOISE_KEYS = ("noise", "noise_scale", "noise_df", "outlier_fraction")  # synthetic data only
_SYNTHETIC_ONLY = ("n_features", "true_weights", "true_bias", "test_size", *NOISE_KEYS)
_CSV_REFUSES = {"test_size": "a csv source holds out a fraction of its rows: set data.test_fraction",
                **{k: "a csv source takes its targets, noise included, from the file" for k in NOISE_KEYS}}
_SECTIONS = {"data": DataConfig, "train": TrainConfig, "sweep": SweepConfig}


def _fail(key: str, value: Any, allowed: str) -> None:
    shown = repr(value)
    if len(shown) > 80:  # a 100,000-character value is named, not echoed
        shown = f"{shown[:60]}... ({len(shown):,} characters)"
    raise ConfigError(f"{key} = {shown} is not allowed: expected {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _choice(key: str, v: Any, options: tuple[str, ...]) -> str:
    if v not in options:
        _fail(key, v, "one of " + " | ".join(options))
    return v


def _pos_int(key: str, v: Any, minimum: int = 1, maximum: int = INT32_MAX) -> int:
    if not _is_int(v) or not minimum <= v <= maximum:
        _fail(key, v, f"an integer >= {minimum} and <= {maximum}")
    return v


def _number(key: str, v: Any, lo: float | None = None, hi: float | None = None,
            lo_open: bool = False) -> float:
    """A finite number in range, also once rounded to float32 (the engine's precision), so
    that 1e300 does not become inf nor a learning rate of 1e-50 become 0."""
    def inside(x: float) -> bool:
        return (lo is None or (x > lo if lo_open else x >= lo)) and (hi is None or x <= hi)

    if not (_is_num(v) and abs(v) <= F32_MAX and inside(v) and inside(float(np.float32(v)))):
        rng = "" if lo is None else (f" {'>' if lo_open else '>='} {lo}")
        rng += "" if hi is None else f" and <= {hi}"
        _fail(key, v, f"a finite number{rng} in float32 (|value| <= {F32_MAX:.2g})")
    return float(v)


def _listify(v: Any) -> list[Any]:
    return list(v) if isinstance(v, list) else [v]


def _nonempty(key: str, v: Any) -> list[Any]:
    items = _listify(v)
    if not items:
        _fail(key, v, "a non-empty list")
    return items


def _check_data(d: dict[str, Any], base_dir: Path) -> DataConfig:
    src = _choice("data.source", d.get("source", "synthetic"), SOURCES)
    kw: dict[str, Any] = {"source": src}
    kw["coupling"] = _choice("data.coupling", d.get("coupling", "independent"), COUPLINGS)
    if src == "synthetic":
        for key in _CSV_ONLY:
            if key in d:
                _fail(f"data.{key}", d[key], 'no value: it applies only to source = "csv"')
        kw["noise"] = _choice("data.noise", d.get("noise", "gaussian"), NOISES)
        kw["noise_scale"] = _number("data.noise_scale", d.get("noise_scale", 1.0), 0.0, lo_open=True)
        kw["noise_df"] = _number("data.noise_df", d.get("noise_df", 3.0), 1.0, lo_open=True)
        kw["outlier_fraction"] = _number("data.outlier_fraction", d.get("outlier_fraction", 0.1), 0.0, 1.0)
        kw["test_size"] = _pos_int("data.test_size", d.get("test_size", 10000), minimum=0)
        kw["true_bias"] = _number("data.true_bias", d.get("true_bias", 0.0))
        nf = _pos_int("data.n_features", d.get("n_features", 2))
        tw = d.get("true_weights", [2.0, 3.0])
        if not isinstance(tw, list):
            _fail("data.true_weights", tw, "a list of finite numbers")
        if len(tw) != nf:
            _fail("data.true_weights", tw, f"a list of length n_features = {nf}")
        kw["n_features"] = nf
        kw["true_weights"] = tuple(_number("data.true_weights", w) for w in tw)
        bound = sum(map(abs, kw["true_weights"])) + abs(kw["true_bias"]) + NOISE_TAIL * kw["noise_scale"]
        if bound > MAX_TARGET:
            raise ConfigError(f"data: true_weights, true_bias and noise_scale make targets up to about "
                              f"{bound:.2g}, beyond float32 once a dataset's losses are summed: keep "
                              f"sum|true_weights| + |true_bias| + {NOISE_TAIL:g} * noise_scale <= {MAX_TARGET:g}")
    else:
        for key in _SYNTHETIC_ONLY:
            if key in d:
                why = _CSV_REFUSES.get(key, "a csv source takes its features from the file")
                _fail(f"data.{key}", d[key], f"no value: {why}")
        path = d.get("path")
        if not isinstance(path, str) or not path:
            _fail("data.path", path, "the path of a csv file")
        p = Path(path)
        kw["path"] = str((base_dir / p).resolve())  # absolute: the manifest must not depend on the cwd
        target = d.get("target")
        if not isinstance(target, str) or not target:
            _fail("data.target", target, "the name of the csv column to predict")
        kw["target"] = target
        kw["test_fraction"] = _number("data.test_fraction", d.get("test_fraction", 0.2), 0.0, 1.0)
        if kw["test_fraction"] >= 1.0:
            _fail("data.test_fraction", kw["test_fraction"], "a number in [0, 1)")
        kw["standardize"] = d.get("standardize", False)
        if not isinstance(kw["standardize"], bool):
            _fail("data.standardize", kw["standardize"], "true or false")
    return DataConfig(**kw)


def _check_train(t: dict[str, Any]) -> TrainConfig:
    kw: dict[str, Any] = {}
    # train.py marks "not diverged" with epochs + 1, an int32
    kw["epochs"] = _pos_int("train.epochs", t.get("epochs", 100), maximum=INT32_MAX - 1)
    opts = _nonempty("train.optimizer", t.get("optimizer", "sgd"))
    kw["optimizer"] = tuple(_choice("train.optimizer", o, OPTIMIZERS) for o in opts)
    lrs = _nonempty("train.learning_rate", t.get("learning_rate", [0.01]))
    kw["learning_rate"] = tuple(_number("train.learning_rate", v, 0.0, lo_open=True) for v in lrs)
    kw["schedule"] = _choice("train.schedule", t.get("schedule", "constant"), SCHEDULES)
    bss = _nonempty("train.batch_size", t.get("batch_size", ["full"]))
    for b in bss:
        if b != "full" and not (_is_int(b) and 1 <= b <= INT32_MAX):
            _fail("train.batch_size", b, f'"full" or an integer >= 1 and <= {INT32_MAX}')
    kw["batch_size"] = tuple(bss)
    kw["gradient"] = _choice("train.gradient", t.get("gradient", "l1"), GRADIENTS)
    kw["init"] = _choice("train.init", t.get("init", "normal"), INITS)
    kw["record_every"] = _pos_int("train.record_every", t.get("record_every", 1))
    kw["kernels"] = _choice("train.kernels", t.get("kernels", "fused"), KERNELS)
    for key in ("optimizer", "learning_rate", "batch_size"):
        if len(set(kw[key])) != len(kw[key]):
            _fail(f"train.{key}", list(kw[key]), "a list without repeated values")
    return TrainConfig(**kw)


def _check_sweep(s: dict[str, Any]) -> SweepConfig:
    sizes = _nonempty("sweep.sizes", s.get("sizes", [100, 1000, 10000]))
    for n in sizes:
        _pos_int("sweep.sizes", n, maximum=MAX_SAMPLES)
    if len(set(sizes)) != len(sizes):
        _fail("sweep.sizes", sizes, "a list without repeated sizes")
    if sum(sizes) > MAX_SAMPLES:
        _fail("sweep.sizes", sizes, f"sizes summing to at most {MAX_SAMPLES}: a replicate's "
              "samples, padded, are indexed in int32")
    seeds = _pos_int("sweep.seeds", s.get("seeds", 100))
    base = s.get("base_seed", 0)
    if not _is_int(base) or not 0 <= base < 2**32:
        _fail("sweep.base_seed", base, "an integer in [0, 2**32)")
    return SweepConfig(sizes=tuple(sorted(sizes)), seeds=seeds, base_seed=base)


def config_from_dict(raw: dict[str, Any], base_dir: Path | str = ".",
                     check_files: bool = True) -> Config:
    """Validate a parsed TOML mapping; unknown sections or keys are errors.  With
    ``check_files`` a csv source is read to check its cells and row count."""
    for sec, value in raw.items():
        if sec not in _SECTIONS:
            _fail(sec, "[section]" if isinstance(value, dict) else value,
                  "a section among [data], [train], [sweep]")
        if not isinstance(value, dict):
            _fail(sec, value, f"a [{sec}] table")
        known = {f.name for f in dataclasses.fields(_SECTIONS[sec])}
        for key in value:
            if key not in known:
                raise ConfigError(f"{sec}.{key} is not a known key: allowed keys in "
                                  f"[{sec}] are {', '.join(sorted(known))}")
    cfg = Config(data=_check_data(raw.get("data", {}), Path(base_dir)),
                 train=_check_train(raw.get("train", {})),
                 sweep=_check_sweep(raw.get("sweep", {})))
    n = cfg.sweep.sizes[-1]
    batch = min((b for b in cfg.train.batch_size if b != "full"), default=n)
    steps = -(-n // min(batch, n))  # optimizer steps an epoch of the largest size takes
    if cfg.train.epochs * steps > INT32_MAX:
        _fail("train.epochs", cfg.train.epochs,
              f"at most {INT32_MAX // steps} epochs: size {n} at batch size {batch} takes {steps} "
              f"steps an epoch, and a run's steps are counted in int32 (at most {INT32_MAX})")
    if cfg.data.source == "csv" and check_files:
        table = load_csv(cfg.data)
        if cfg.sweep.sizes[-1] > table.n_train:
            _fail("sweep.sizes", list(cfg.sweep.sizes),
                  f"sizes <= {table.n_train}, the training rows {cfg.data.path} holds")
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML study configuration."""
    p = Path(path)
    text = read_text(p, f"config file {str(p)!r}", "a readable UTF-8 TOML file")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from None
    return config_from_dict(raw, base_dir=p.parent)
