"""Tutorial 03: deep NMF for speech enhancement, on a corpus synthesised on this machine.

The third system of the seed paper: unfold the multiplicative updates of sparse NMF into a
non-negative network, untie the bases of the last layers and train the stack discriminatively
(Le Roux, Hershey & Weninger, "Deep NMF for speech separation", ICASSP 2015).  This script

1. builds a small speech-in-noise corpus with no download: Debian's ``espeak-ng`` speaks
   generated sentences with several voices, speeds and pitches (the test voices are held out
   from training); noises come from ``sox`` (pink and brown noise with slow amplitude
   modulation, mains hum with harmonics) plus babble of other espeak voices; mixtures at
   -6..+6 dB SNR, 16 kHz, STFT with a 512-sample Hann window and hop 256;
2. trains sparse NMF bases for speech and for noise (``pgmunfold.nmf.fit_nmf``): the
   *supervised NMF* baseline is ``UnfoldedNMF`` with shared bases, i.e. K plain updates;
3. unties the last layers (``net.untie(last=C)``) and trains the *deep NMF* with the
   signal-approximation loss; trains two sigmoid DNN mask estimators (about 8x and about 1x the
   deep NMF's parameters) with the same loss and the same training budget (process CPU
   seconds, so that other jobs on the machine do not favour one model);
4. prints SI-SDR improvements per input SNR on the held-out voices and saves a plot.

Run ``python tutorials/03_deep_nmf_speech_enhancement.py --size ci`` (about 40 utterances, under
two minutes on two cores) or ``--size full`` (the documented configuration; about 20 minutes).
Needs ``apt-get install espeak-ng sox``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a machine shared with other jobs, spinning
# threads multiplied step times by 10-20x in our measurements and made CPU-time budgets unequal.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import Tensor, nn

from pgmunfold import nmf

SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
N_FREQ = N_FFT // 2 + 1
TEST_SNRS = (-6.0, -3.0, 0.0, 3.0, 6.0)
MIXTURE_RMS = 0.05
NOISE_KINDS = ("pink", "brown", "hum", "babble")

# espeak-ng voices: language + variant. Target talkers for training and (disjoint) for testing,
# and a third disjoint set used only to make babble noise.
TRAIN_VOICES = (
    "en-us+m1",
    "en-us+f1",
    "en-gb+m2",
    "en-gb+f2",
    "en-gb-x-rp+m3",
    "en-us+f3",
    "en-029+m4",
    "en-us-nyc+f4",
)
TEST_VOICES = ("en-gb-scotland+m5", "en-us+f5", "en-gb-x-gbcwmd+m6")
BABBLE_VOICES = ("en-gb-x-gbclan+m7", "en-us+m8", "en+klatt", "en-gb+f4", "en-us+klatt2")

SUBJECTS = (
    "the old man", "a young girl", "my neighbour", "the teacher", "our captain", "the doctor",
    "a small dog", "the farmer", "her brother", "the pilot", "every student", "the baker",
)  # fmt: skip
VERBS = (
    "painted", "carried", "opened", "found", "watched", "cleaned", "bought", "followed",
    "repaired", "described", "forgot", "measured",
)  # fmt: skip
OBJECTS = (
    "a green boat", "the heavy box", "seven apples", "the broken window", "a long letter",
    "the red kite", "four silver coins", "the quiet garden", "a wooden chair", "the map",
)  # fmt: skip
ADVERBIALS = (
    "before dinner", "in the morning", "near the river", "after the storm", "without a word",
    "on a cold day", "behind the station", "with great care", "at nine o'clock", "last summer",
)  # fmt: skip


@dataclass(frozen=True)
class Config:
    n_train: int  # training utterances (training voices)
    n_test: int  # test utterances (held-out voices), spread evenly over TEST_SNRS
    train_seconds: float  # training budget of each trained model, process CPU seconds
    noise_pool_seconds: float  # length of each noise recording (train and test halves)
    nmf_frames: int  # frames used to fit the NMF bases of each source
    nmf_iterations: int
    speech_rank: int = 100
    noise_rank: int = 50
    layers: int = 25  # K
    untied: int = 4  # C, last layers untied in deep NMF
    mu: float = 0.5  # sparsity (relative to the mixture's mean magnitude)
    segment: int = 64  # training segment length in frames (about 1 s)
    batch: int = 16  # segments per step
    context: int = 3  # DNN input context: +-3 frames
    lr_dnmf: float = 0.1  # Adam on log-bases
    lr_dnn: float = 3e-3


SIZES = {
    "ci": Config(
        n_train=28,
        n_test=12,
        train_seconds=10.0,
        noise_pool_seconds=40.0,
        nmf_frames=3000,
        nmf_iterations=60,
    ),
    "full": Config(
        n_train=1000,
        n_test=800,
        train_seconds=200.0,
        noise_pool_seconds=400.0,
        nmf_frames=20000,
        nmf_iterations=100,
    ),
}


# ----------------------------------------------------------------------------- corpus


def require_tools() -> None:
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: install with `apt-get install -y espeak-ng sox`")


def _raw_to_float(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0


SOX_OUT = ["-r", str(SAMPLE_RATE), "-c", "1", "-b", "16", "-e", "signed", "-t", "raw", "-"]


def speak(text: str, voice: str, speed: int, pitch: int) -> np.ndarray:
    """espeak-ng -> sox (resample to 16 kHz) -> float32 waveform."""
    espeak = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
        capture_output=True,
        check=True,
    )
    out = subprocess.run(
        ["sox", "-D", "-t", "wav", "-", *SOX_OUT],  # -D: no dither, so the corpus is repeatable
        input=espeak.stdout,
        capture_output=True,
        check=True,
    )
    wav = _raw_to_float(out.stdout)
    # trim leading/trailing near-silence that espeak pads with
    active = np.flatnonzero(np.abs(wav) > 1e-3)
    return wav[active[0] : active[-1] + 1] if active.size else wav


def sox_synth(seconds: float, effects: Sequence[str]) -> np.ndarray:
    """A sox-generated signal; -R makes sox's noise generators repeatable."""
    out = subprocess.run(
        ["sox", "-R", "-n", *SOX_OUT, "synth", f"{seconds:.3f}", *effects],
        capture_output=True,
        check=True,
    )
    return _raw_to_float(out.stdout)


def sentence(rng: np.random.Generator) -> str:
    parts = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    if rng.random() < 0.7:
        parts.append(rng.choice(ADVERBIALS))
    return " ".join(str(p) for p in parts)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x.astype(np.float64) ** 2)) + 1e-12)


def noise_pools(seconds: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One long recording per noise kind; training crops its first half, testing its second."""
    n = int(seconds * SAMPLE_RATE)
    pools = {
        # coloured noises with slow random-phase amplitude modulation
        "pink": sox_synth(seconds, ["pinknoise", "tremolo", "0.7", "60", "tremolo", "0.13", "40"]),
        "brown": sox_synth(seconds, ["brownnoise", "tremolo", "0.3", "70", "tremolo", "2.1", "25"]),
        # mains hum: 50 Hz with harmonics (a square wave adds the odd ones), slowly wavering
        "hum": sox_synth(
            seconds,
            [
                *("sine", "50", "sine", "mix", "100", "square", "mix", "150", "sine", "mix", "250"),
                *("tremolo", "0.2", "20"),
            ],
        ),
    }
    # ... plus a little pink noise (sox's synth cannot weight the components it mixes)
    hiss = sox_synth(seconds, ["pinknoise"])
    pools["hum"] = pools["hum"] / _rms(pools["hum"]) + 0.1 * hiss / _rms(hiss)
    # babble: four streams of concatenated sentences by babble voices, summed
    streams = []
    for _ in range(4):
        pieces: list[np.ndarray] = []
        total = 0
        while total < n:
            wav = speak(
                sentence(rng),
                str(rng.choice(BABBLE_VOICES)),
                int(rng.integers(140, 200)),
                int(rng.integers(20, 80)),
            )
            wav = wav / _rms(wav)
            pieces.append(wav)
            total += wav.size
        streams.append(np.concatenate(pieces)[:n])
    pools["babble"] = np.sum(streams, axis=0).astype(np.float32)
    return {k: (v[:n] / _rms(v[:n])).astype(np.float32) for k, v in pools.items()}


@dataclass
class Utterance:
    mixture: np.ndarray
    speech: np.ndarray
    noise: np.ndarray
    snr: float
    kind: str
    voice: str


def make_corpus(
    n: int,
    voices: Sequence[str],
    snrs: Sequence[float] | None,
    split: int,
    pools: dict[str, np.ndarray],
    seed: int,
) -> list[Utterance]:
    """``n`` mixtures; ``snrs=None`` draws SNRs uniformly in [-6, 6] dB, else cycles through."""
    rng = np.random.default_rng([seed, split])
    specs = []
    for i in range(n):
        specs.append(
            (
                sentence(rng),
                voices[i % len(voices)],
                int(rng.integers(130, 190)),
                int(rng.integers(25, 75)),
                float(rng.uniform(-6, 6)) if snrs is None else float(snrs[i % len(snrs)]),
                NOISE_KINDS[(i // len(voices)) % len(NOISE_KINDS)],
                float(rng.random()),
                float(rng.uniform(-3, 3)),  # level jitter of the mixture, dB
            )
        )
    with ThreadPoolExecutor(max_workers=4) as pool:
        speech = list(pool.map(lambda s: speak(s[0], s[1], s[2], s[3]), specs))
    out = []
    for (_, voice, _, _, snr, kind, offset, jitter), s in zip(specs, speech, strict=True):
        src = pools[kind]
        half = src.size // 2
        lo = 0 if split == 0 else half
        start = lo + int(offset * (half - s.size - 1))
        noise = src[start : start + s.size].copy()
        noise *= _rms(s) / _rms(noise) * 10.0 ** (-snr / 20.0)
        mix = s + noise
        gain = MIXTURE_RMS * 10 ** (jitter / 20) / _rms(mix)
        out.append(Utterance(mix * gain, s * gain, noise * gain, snr, kind, voice))
    return out


# ----------------------------------------------------------------------------- features


WINDOW = torch.hann_window(N_FFT)


def stft(x: np.ndarray | Tensor) -> Tensor:
    """Complex STFT ``(257, T)`` of a waveform."""
    return torch.stft(
        torch.as_tensor(x), N_FFT, HOP, window=WINDOW, center=True, return_complex=True
    )


def istft(X: Tensor, length: int) -> Tensor:
    return torch.istft(X, N_FFT, HOP, window=WINDOW, center=True, length=length)


# ----------------------------------------------------------------------------- DNN baseline


class MaskDNN(nn.Module):
    """Sigmoid DNN mask estimator: log-magnitudes of +-context frames -> 3 sigmoid hidden
    layers -> sigmoid mask per frequency (the conventional baseline of the paper)."""

    mean: Tensor
    std: Tensor

    def __init__(self, hidden: int, context: int, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.context = context
        d_in = N_FREQ * (2 * context + 1)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = nn.Sequential(
            nn.Linear(d_in, hidden),
            nn.Sigmoid(),
            nn.Linear(hidden, hidden),
            nn.Sigmoid(),
            nn.Linear(hidden, hidden),
            nn.Sigmoid(),
            nn.Linear(hidden, N_FREQ),
            nn.Sigmoid(),
        )

    @staticmethod
    def features(M: Tensor, context: int) -> Tensor:
        """``(B, F, T)`` magnitudes -> ``(B, T, F * (2 context + 1))`` stacked log-magnitudes."""
        logm = torch.log(M + 1e-5)
        padded = nn.functional.pad(logm, (context, context), mode="replicate")
        frames = padded.unfold(-1, 2 * context + 1, 1)  # (B, F, T, 2c+1)
        return frames.permute(0, 2, 3, 1).reshape(M.shape[0], M.shape[-1], -1)

    def forward(self, M: Tensor) -> Tensor:
        x = (self.features(M, self.context) - self.mean) / self.std
        return self.net(x).transpose(1, 2)  # (B, F, T)

    @staticmethod
    def hidden_for(parameters: int, context: int) -> int:
        """Hidden width whose parameter count is closest to ``parameters``."""
        d_in = N_FREQ * (2 * context + 1)

        def count(h: int) -> int:
            return d_in * h + h + 2 * (h * h + h) + h * N_FREQ + N_FREQ

        return min(range(8, 4096), key=lambda h: abs(count(h) - parameters))


# ----------------------------------------------------------------------------- training


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@dataclass
class TrainLog:
    steps: int
    cpu_seconds: float
    wall_seconds: float
    loss: float = math.nan  # smoothed training loss at the end


def train_for(
    mask_fn: Callable[[Tensor], Tensor],
    params: Sequence[nn.Parameter],
    train: list[tuple[Tensor, Tensor]],
    cfg: Config,
    lr: float,
    seed: int,
) -> TrainLog:
    """Adam on the signal-approximation loss for ``cfg.train_seconds`` of process CPU time.

    CPU time rather than wall-clock time, so that other load on a shared machine does not
    favour whichever model happened to train while the machine was quiet."""
    opt = torch.optim.Adam(params, lr=lr)
    gen = np.random.default_rng(seed)
    start, wall = time.process_time(), time.perf_counter()
    steps, smooth = 0, math.nan
    while time.process_time() - start < cfg.train_seconds:
        idx = gen.integers(0, len(train), cfg.batch)
        mix, tgt = [], []
        for i in idx:
            M, S = train[i]
            t0 = int(gen.integers(0, M.shape[-1] - cfg.segment + 1))
            mix.append(M[:, t0 : t0 + cfg.segment])
            tgt.append(S[:, t0 : t0 + cfg.segment])
        Mb, Sb = torch.stack(mix), torch.stack(tgt)
        opt.zero_grad()
        loss = nmf.signal_approximation_loss(mask_fn(Mb), Mb, Sb) / MIXTURE_RMS**2
        loss.backward()
        opt.step()
        value = float(loss.detach())
        smooth = value if steps == 0 else 0.95 * smooth + 0.05 * value
        steps += 1
    return TrainLog(steps, time.process_time() - start, time.perf_counter() - wall, smooth)


@torch.no_grad()
def evaluate(mask_fn: Callable[[Tensor], Tensor], test: list[Utterance]) -> dict[float, float]:
    """Mean SI-SDR improvement (dB) per input SNR, and over everything under key ``nan``."""
    per_snr: dict[float, list[float]] = {}
    for u in test:
        X = stft(u.mixture)
        mask = mask_fn(X.abs().unsqueeze(0))[0]
        estimate = istft(mask * X, length=u.mixture.size)
        speech = torch.as_tensor(u.speech)
        gain = nmf.si_sdr(estimate, speech) - nmf.si_sdr(torch.as_tensor(u.mixture), speech)
        per_snr.setdefault(u.snr, []).append(float(gain))
    out = {snr: float(np.mean(v)) for snr, v in sorted(per_snr.items())}
    out[math.nan] = float(np.mean([g for v in per_snr.values() for g in v]))
    return out


# ----------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="ci")
    parser.add_argument("--out", type=Path, default=Path("tutorials/out/03"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-seconds", type=float, help="override the training budget")
    parser.add_argument("--n-train", type=int, help="override the number of training mixtures")
    parser.add_argument("--n-test", type=int, help="override the number of test mixtures")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    cfg = SIZES[args.size]
    if args.train_seconds is not None:
        cfg = replace(cfg, train_seconds=args.train_seconds)
    if args.n_train is not None:
        cfg = replace(cfg, n_train=args.n_train)
    if args.n_test is not None:
        cfg = replace(cfg, n_test=args.n_test)
    if args.threads:
        torch.set_num_threads(args.threads)
    require_tools()
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1. corpus -------------------------------------------------------------------------
    rng = np.random.default_rng(args.seed)
    pools = noise_pools(cfg.noise_pool_seconds, rng)
    train_utts = make_corpus(cfg.n_train, TRAIN_VOICES, None, 0, pools, args.seed)
    test_utts = make_corpus(cfg.n_test, TEST_VOICES, TEST_SNRS, 1, pools, args.seed)
    train = [(stft(u.mixture).abs(), stft(u.speech).abs()) for u in train_utts]
    train = [(M, S) for M, S in train if M.shape[-1] >= cfg.segment]
    seconds = sum(u.mixture.size for u in train_utts) / SAMPLE_RATE
    print(
        f"corpus: {len(train_utts)} training mixtures ({seconds:.0f} s, voices "
        f"{', '.join(TRAIN_VOICES)}), {len(test_utts)} test mixtures (held-out voices "
        f"{', '.join(TEST_VOICES)}), noises {', '.join(NOISE_KINDS)}; "
        f"built in {time.perf_counter() - t_start:.1f} s"
    )

    # 2. NMF bases for speech and for noise (on mean-normalised magnitudes) -----------------
    gen = np.random.default_rng(args.seed + 1)

    def frames(spectra: list[Tensor]) -> Tensor:
        V = torch.cat(spectra, dim=1)
        keep = gen.choice(V.shape[1], size=min(cfg.nmf_frames, V.shape[1]), replace=False)
        V = V[:, np.sort(keep)]
        return V / V.mean()

    speech_frames = frames([S for _, S in train])
    noise_frames = frames([stft(u.noise).abs() for u in train_utts])
    cpu0, wall0 = time.process_time(), time.perf_counter()
    W_speech = nmf.fit_nmf(speech_frames, cfg.speech_rank, 1.0, cfg.nmf_iterations, cfg.mu).W
    W_noise = nmf.fit_nmf(noise_frames, cfg.noise_rank, 1.0, cfg.nmf_iterations, cfg.mu, 1).W
    fit = TrainLog(2 * cfg.nmf_iterations, time.process_time() - cpu0, time.perf_counter() - wall0)
    shared = nmf.UnfoldedNMF([W_speech, W_noise], layers=cfg.layers, beta=1.0, mu=cfg.mu)
    print(f"NMF bases fitted in {fit.cpu_seconds:.0f} CPU s: {shared}")

    results: dict[str, dict[str, object]] = {}

    def record(name: str, model: nn.Module, mask_fn: Callable[[Tensor], Tensor], log: TrainLog):
        model.eval()
        scores = evaluate(mask_fn, test_utts)
        results[name] = {
            "parameters": count_parameters(model),
            "trained_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            **asdict(log),
            "loss": None if math.isnan(log.loss) else log.loss,  # strict JSON has no NaN
            "si_sdri": {("avg" if math.isnan(k) else f"{k:+.0f}"): v for k, v in scores.items()},
        }
        loss = "n/a" if math.isnan(log.loss) else f"{log.loss:.3f}"
        print(
            f"{name}: {log.steps} steps, {log.cpu_seconds:.0f} CPU s ({log.wall_seconds:.0f} s "
            f"wall), final loss {loss}; avg SI-SDRi {scores[math.nan]:+.2f} dB"
        )

    record(f"NMF (K={cfg.layers})", shared, lambda M: shared(M)[:, 0], fit)

    # 3a. deep NMF: untie the last C layers and the reconstruction; the first K - C layers keep
    # the NMF bases (frozen, so back-propagation stops at layer K - C) ---------------------------
    deep = shared.untie(last=cfg.untied)
    deep.weight.requires_grad_(False)
    deep.train()
    trainable = [p for p in deep.parameters() if p.requires_grad]
    log = train_for(lambda M: deep(M)[:, 0], trainable, train, cfg, cfg.lr_dnmf, args.seed)
    record(f"deep NMF (K={cfg.layers}, C={cfg.untied})", deep, lambda M: deep(M)[:, 0], log)

    # 3b. sigmoid DNNs with about 8x and about 1x the deep NMF's parameters -------------------
    some = train[:: max(1, len(train) // 200)]  # input statistics from up to ~200 utterances
    feats = torch.cat([MaskDNN.features(M.unsqueeze(0), cfg.context)[0] for M, _ in some])
    mean, std = feats.mean(0), feats.std(0).clamp_min(1e-3)
    del feats
    n_deep = count_parameters(deep)
    for factor in (8, 1):
        hidden = MaskDNN.hidden_for(factor * n_deep, cfg.context)
        torch.manual_seed(args.seed + factor)
        dnn = MaskDNN(hidden, cfg.context, mean, std)
        log = train_for(dnn, list(dnn.parameters()), train, cfg, cfg.lr_dnn, args.seed + factor)
        record(f"DNN 3x{hidden}", dnn, dnn, log)

    # 4. report ---------------------------------------------------------------------------
    table = format_table(results)
    print()
    print(table)
    total = time.perf_counter() - t_start
    print(f"\ntotal wall time {total:.0f} s (size {args.size}, {torch.get_num_threads()} threads)")
    summary = {"config": asdict(cfg), "size": args.size, "results": results, "seconds": total}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2))
    (args.out / "results.md").write_text(table + "\n")
    plot(results, args.out / "results.png")
    print(f"wrote {args.out / 'results.md'}, results.json and results.png")
    return summary


def format_table(results: dict[str, dict[str, object]]) -> str:
    snrs = [f"{s:+.0f}" for s in TEST_SNRS]
    head = ["method", "parameters", "train CPU s", "steps", *[f"{s} dB" for s in snrs], "avg"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        scores = r["si_sdri"]
        assert isinstance(scores, dict)
        cells = [
            name,
            f"{r['parameters']:,}",
            f"{r['cpu_seconds']:.0f}",
            f"{r['steps']}",
            *[f"{scores[s]:+.2f}" if s in scores else "-" for s in snrs],
            f"{scores['avg']:+.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: dict[str, dict[str, object]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    snrs = [f"{s:+.0f}" for s in TEST_SNRS]
    for name, r in results.items():
        scores = r["si_sdri"]
        assert isinstance(scores, dict)
        xs = [s for s, k in zip(TEST_SNRS, snrs, strict=True) if k in scores]
        ax1.plot(xs, [scores[f"{s:+.0f}"] for s in xs], marker="o", label=name)
    ax1.set_xlabel("input SNR (dB)")
    ax1.set_ylabel("SI-SDR improvement (dB)")
    ax1.set_title("held-out voices")
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=8)
    names = list(results)
    counts = [int(str(results[n]["parameters"])) for n in names]
    colors = [line.get_color() for line in ax1.get_lines()]
    ax2.barh(range(len(names)), counts, color=colors)
    for i, c in enumerate(counts):
        ax2.text(c, i, f" {c / 1e3:.0f} k", va="center", fontsize=8)
    ax2.set_yticks(range(len(names)), names, fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlim(right=max(counts) * 6)
    ax2.set_xlabel("parameters")
    ax2.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
