"""A deterministic synthetic split with frame and token features in which only aligning words
with frames tells the right clip from its confusers: the test bed of the co-attention head.
Reads nothing; writes one cache (`embedding_space="joint"`, with /audio/frames, /text/tokens).

- bags and bindings: a bag is m sound events and m attributes ("dog", "cat"; "loud", "soft");
  each of the m! ways of binding the attributes to the events is one clip ("a loud dog and a
  soft cat" vs "a soft dog and a loud cat"), so every bag brings m! clips with the same bag of
  events and the same bag of attributes;
- frames: each event sounds for a few frames, in a random temporal order, with silence between;
  a frame of event e with attribute a is F_ev[e] + F_at[a] + noise, so the mean over frames is
  the same for every binding of a bag (up to the random segment lengths, which no caption
  describes);
- tokens, like a contextual encoder's: "[CLS]", then per event an attribute word carrying its
  event (W_at[a] + context * C_ev[e]) and an event word carrying its attribute
  (W_ev[e] + context * C_at[a]), "and" between phrases, "[SEP]"; the phrases come in a random
  order per caption, so the mean over tokens too is the same for every binding;
- joint embeddings (for the cosine top-k): the bag's event and attribute vectors summed, plus a
  little noise, so cosine ranks a clip's bag on top but cannot order the bindings within it
  (its R@1 is about 1/m! of its R@m!), while a token that finds the frames of its own
  (event, attribute) pair can.
The vocabulary vectors come from `map_seed` only, so splits made with one `map_seed` (each with
its own `seed`) share them and a head trained on one applies to the others. Same config, same
bytes.
"""

import itertools
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from .writer import CacheWriter

_EVENTS = (
    "dog",
    "cat",
    "car",
    "bird",
    "bell",
    "drum",
    "horn",
    "baby",
    "train",
    "siren",
    "clock",
    "phone",
    "door",
    "engine",
    "crowd",
    "piano",
)
_ATTRIBUTES = ("loud", "soft", "distant", "nearby", "high", "low", "fast", "slow")
_CHUNK_BAGS = 256  # bags written at once


@dataclass(frozen=True)
class SequenceSyntheticConfig:
    n_bags: int = 60  # bags of events; each brings m! clips (every binding of its attributes)
    events_per_clip: int = 2  # m: events, and attributes, per clip
    n_events: int = 12  # event vocabulary (at most 16 names)
    n_attributes: int = 6  # attribute vocabulary (at most 8 names)
    captions_per_clip: int = 2  # captions of each clip (phrase order and noise differ)
    frame_dim: int = 16  # Df, width of /audio/frames
    token_dim: int = 16  # Dl, width of /text/tokens
    joint_dim: int = 16  # D, width of both embeddings (the cosine baseline's space)
    frames_per_event: tuple[int, int] = (2, 4)  # frames an event sounds for, uniform in [lo, hi]
    silence_frames: tuple[int, int] = (0, 2)  # frames of silence before each event
    context: float = 0.7  # share of its bound partner a word's token carries
    frame_noise: float = 0.3  # norm of a frame's noise (vocabulary vectors have norm 1)
    token_noise: float = 0.3  # norm of a token's noise
    joint_noise: float = 0.1  # norm of an embedding's noise (the bag vector has norm ~1)
    seed: int = 0  # the split's bags, orders, lengths and noise
    map_seed: int = 0  # vocabulary vectors: keep it equal across one dataset's splits

    def check(self) -> None:
        m = self.events_per_clip
        if not 1 <= m <= min(self.n_events, self.n_attributes):
            raise ValueError("need 1 <= events_per_clip <= n_events, n_attributes")
        if self.n_events > len(_EVENTS) or self.n_attributes > len(_ATTRIBUTES):
            raise ValueError(f"at most {len(_EVENTS)} events and {len(_ATTRIBUTES)} attributes")
        bags = math.comb(self.n_events, m) * math.comb(self.n_attributes, m)
        if not 1 <= self.n_bags <= bags:
            raise ValueError(f"n_bags must lie in [1, {bags}] for this vocabulary")
        if self.captions_per_clip < 1:
            raise ValueError("need at least one caption per clip")
        (lo, hi), (s_lo, s_hi) = self.frames_per_event, self.silence_frames
        if not (1 <= lo <= hi and 0 <= s_lo <= s_hi):
            raise ValueError("frame counts need 1 <= low <= high (events), 0 <= low <= high")


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _noise(rng: np.random.Generator, n: int, dim: int, norm: float) -> np.ndarray:
    return norm * rng.standard_normal((n, dim)) / np.sqrt(dim)


def _vocabulary(cfg: SequenceSyntheticConfig) -> dict[str, np.ndarray]:
    """What `map_seed` fixes: every word's and every sound's vectors, in each space."""
    rng = np.random.default_rng([cfg.map_seed, 0x5E9])  # never the split's stream
    E, A = cfg.n_events, cfg.n_attributes
    return {
        "F_ev": _unit(rng, E, cfg.frame_dim),  # frames of an event
        "F_at": _unit(rng, A, cfg.frame_dim),  # what an attribute adds to a frame
        "W_ev": _unit(rng, E, cfg.token_dim),  # the event word
        "W_at": _unit(rng, A, cfg.token_dim),  # the attribute word
        "C_ev": _unit(rng, E, cfg.token_dim),  # an event as context of its attribute word
        "C_at": _unit(rng, A, cfg.token_dim),  # an attribute as context of its event word
        "J_ev": _unit(rng, E, cfg.joint_dim),  # joint space: events
        "J_at": _unit(rng, A, cfg.joint_dim),  # joint space: attributes
        "filler": _unit(rng, 3, cfg.token_dim),  # [CLS], and, [SEP]
    }


def _bags(rng: np.random.Generator, cfg: SequenceSyntheticConfig) -> list[tuple]:
    """n_bags distinct (events, attributes) pairs of sorted m-tuples."""
    m, seen = cfg.events_per_clip, {}
    while len(seen) < cfg.n_bags:
        events = tuple(sorted(rng.choice(cfg.n_events, m, replace=False).tolist()))
        attributes = tuple(sorted(rng.choice(cfg.n_attributes, m, replace=False).tolist()))
        seen.setdefault((events, attributes), None)
    return list(seen)


def make_synthetic_sequences(
    path: str | os.PathLike,
    cfg: SequenceSyntheticConfig = SequenceSyntheticConfig(),
    *,
    dataset: str = "synthetic-sequences",
    split: str = "test",
    overwrite: bool = False,
) -> None:
    """Write the split described by `cfg` to `path` (cache format v1, joint space, sequences)."""
    cfg.check()
    v = _vocabulary(cfg)
    rng = np.random.default_rng(cfg.seed)
    settings = {
        **asdict(cfg),
        "frames_per_event": list(cfg.frames_per_event),
        "silence_frames": list(cfg.silence_frames),
    }
    with CacheWriter(path, dataset=dataset, split=split, space="joint", overwrite=overwrite) as w:
        w.set_attrs(
            "audio",
            encoder="synthetic",
            feature_kind="synthetic-bindings",
            settings=settings,
            sample_rate=0,
        )
        w.set_attrs(
            "text", encoder="synthetic", feature_kind="synthetic-bindings", settings=settings
        )
        bags, first_row = _bags(rng, cfg), 0
        for start in range(0, len(bags), _CHUNK_BAGS):
            first_row += _write_bags(w, rng, cfg, v, bags[start : start + _CHUNK_BAGS], first_row)


def _write_bags(w: CacheWriter, rng, cfg, v: dict, bags: list, first_row: int) -> int:
    """Append the clips of `bags` (every binding of each) and their captions; return the
    number of clips written."""
    ids, audio, frames, captions, clip_rows, text, tokens = [], [], [], [], [], [], []
    for events, attributes in bags:
        bag = v["J_ev"][list(events)].sum(0) + v["J_at"][list(attributes)].sum(0)  # (D,)
        bag /= np.linalg.norm(bag)
        for binding in itertools.permutations(attributes):
            pairs = list(zip(events, binding, strict=True))  # (event, attribute) per event
            row = first_row + len(ids)
            ids.append(f"synthetic_{row:06d}.wav")
            audio.append(bag + _noise(rng, 1, cfg.joint_dim, cfg.joint_noise)[0])
            frames.append(_frames(rng, cfg, v, pairs))
            for _ in range(cfg.captions_per_clip):
                phrases = [pairs[i] for i in rng.permutation(len(pairs))]
                captions.append(
                    " and ".join(f"a {_ATTRIBUTES[a]} {_EVENTS[e]}" for e, a in phrases)
                )
                clip_rows.append(row)
                text.append(bag + _noise(rng, 1, cfg.joint_dim, cfg.joint_noise)[0])
                tokens.append(_tokens(rng, cfg, v, phrases))
    w.add_audio(ids, np.stack(audio).astype(np.float32), frames)
    w.add_text(captions, clip_rows, np.stack(text).astype(np.float32), tokens)
    return len(ids)


def _frames(rng, cfg: SequenceSyntheticConfig, v: dict, pairs: list) -> np.ndarray:
    """(T, Df): the events in a random temporal order, silence (zero frames) before each."""
    rows = []
    for i in rng.permutation(len(pairs)):
        e, a = pairs[i]
        silence = int(rng.integers(cfg.silence_frames[0], cfg.silence_frames[1] + 1))
        sound = int(rng.integers(cfg.frames_per_event[0], cfg.frames_per_event[1] + 1))
        rows += [np.zeros(cfg.frame_dim)] * silence + [v["F_ev"][e] + v["F_at"][a]] * sound
    out = np.stack(rows)
    return (out + _noise(rng, len(out), cfg.frame_dim, cfg.frame_noise)).astype(np.float32)


def _tokens(rng, cfg: SequenceSyntheticConfig, v: dict, phrases: list) -> np.ndarray:
    """(L, Dl): [CLS], per phrase the attribute word then the event word, "and"s, [SEP]."""
    cls, conj, sep = v["filler"]
    rows = [cls]
    for i, (e, a) in enumerate(phrases):
        if i:
            rows.append(conj)
        rows.append(v["W_at"][a] + cfg.context * v["C_ev"][e])
        rows.append(v["W_ev"][e] + cfg.context * v["C_at"][a])
    rows.append(sep)
    out = np.stack(rows)
    return (out + _noise(rng, len(out), cfg.token_dim, cfg.token_noise)).astype(np.float32)
