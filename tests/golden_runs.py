"""Golden runs: trees the runner built before its scale rewrite, kept as digests.

Each case runs the SimulatedBackend (reasoning-trace profile: `</think>` written mid-trace,
split over tokens; a stop string at some ends) through `run()` and digests everything that
defines the result: every tree's cap, theta and hit_cap, every sequence (parent, fork
position, seed, tokens, text, finish reason), every branch event (position, entropy,
threshold, tokens) and the rounds. tests/fixtures/golden_trees.json holds the digests the
runner of commit 6967945 produced (the sequential schedule, text-decoded marker and stop
checks); the rewritten runner must reproduce them bit for bit.

    python tests/golden_runs.py --write     # only when a change of the trees is intended
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Callable

from eager_eval.engines.simulated import SimulatedBackend, TraceProfile
from eager_eval.core.config import EagerConfig
from eager_eval.core.runner import PromptInput, run

FIXTURE = Path(__file__).parent / "fixtures" / "golden_trees.json"
MODES = ("full_parallel", "eager_init", "eager_adapt", "eager")


class WordTokenizer:
    """A byte-level-like tokenizer of plain words and a few pieces: decode = concatenation.

    Enough for SimulatedBackend without the embedded model: the marker `</think>` is three
    tokens and the stop string two, as real BPE vocabularies split them.
    """

    eos_token_id = 0
    PIECES = ["<|end|>", "</", "think", ">", "ĠQuestion", ":", "<", "Ġ<"]

    def __init__(self, words: int = 300) -> None:
        self.tokens = self.PIECES + [f"Ġw{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}x"
                                     for i in range(words)]
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    def get_vocab(self) -> dict[str, int]:
        return dict(self.ids)

    def convert_ids_to_tokens(self, ids: Any) -> Any:
        return [self.tokens[i] for i in ids] if isinstance(ids, list) else self.tokens[ids]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        table = {"</think>": ["</", "think", ">"], " Question:": ["ĠQuestion", ":"]}
        return [self.ids[t] for t in table[text]]

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return "".join("" if (i == 0 and skip_special_tokens) else self.tokens[i]
                       for i in ids).replace("Ġ", " ")

    @property
    def all_special_ids(self) -> list[int]:
        return [0]


def simulated_run(tokenizer: Any, mode: str, policy: str, percentile: float | None, *,
                  n: int = 5, m: int = 6, length: int = 160, seed: int = 5,
                  think_end: str | None = "</think>", **run_kwargs: Any):
    profile = TraceProfile(length=length, high_entropy_rate=(0.08, 0.03, 0.005),
                           high_entropy_rate_after=0.01)
    config = EagerConfig(mode=mode, theta=2.0, max_seqs=m, percentile=percentile,
                         branch_policy=policy, max_new_tokens=length, seed=seed,
                         think_end=think_end)
    backend = SimulatedBackend(tokenizer, profile, logprobs=config.is_branching, shapes=64)
    prompts = [PromptInput((7, 8, 9, 100 + i), stop=(profile.stop,), opens_thinking=i % 2 == 0)
               for i in range(n)]
    verifier = (lambda p, text: p % 2 == 1 and len(text) % 4 == 0) if mode == "eager" else None
    return run(prompts, backend, config, verifier=verifier, **run_kwargs)


def digest(result: Any) -> str:
    trees = [[{
        "round": t.round, "cap": t.cap, "theta": repr(t.theta), "hit_cap": t.hit_cap,
        "seqs": [(s.index, s.round, s.parent, s.fork_position, s.seed, list(s.tokens), s.text,
                  s.finish_reason.value) for s in t.sequences],
        "events": [(e.position, e.parent, e.child, repr(e.entropy), repr(e.threshold),
                    e.parent_token, e.child_token) for e in t.branch_events],
    } for t in p.trees] for p in result.prompts]
    rounds = [(r.round, r.budget, sorted(r.allotments.items()), r.sequences_spent,
               r.tokens_generated) for r in result.rounds]
    blob = json.dumps([trees, rounds], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def cases() -> dict[str, Callable[[], Any]]:
    """name -> a zero-argument function returning the RunResult (fake tokenizer only)."""
    tok = WordTokenizer()
    out = {}
    for mode in MODES:
        for policy in ("top2", "sample"):
            for percentile in (99.0, None):
                name = f"words/{mode}/{policy}/p{percentile}"
                out[name] = (lambda mode=mode, policy=policy, percentile=percentile:
                             simulated_run(tok, mode, policy, percentile))
        # more prompts than sequences each: several reallocation rounds
        out[f"words/{mode}/many"] = lambda mode=mode: simulated_run(
            tok, mode, "top2", 90.0, n=9, m=4, length=120, seed=8)
        out[f"words/{mode}/no-think-marker"] = lambda mode=mode: simulated_run(
            tok, mode, "top2", 99.0, think_end=None, seed=2)
    return out


def smollm2_cases(tokenizer: Any) -> dict[str, Callable[[], Any]]:
    """The same with the embedded model's real (byte-level BPE) tokenizer."""
    return {f"smollm2/{mode}": (lambda mode=mode: simulated_run(
        tokenizer, mode, "top2", 99.0, n=6, m=8, length=300, seed=3)) for mode in MODES}


def load_smollm2_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from eager_eval.engines.models import converted_model_dir, resolve_model

    return AutoTokenizer.from_pretrained(converted_model_dir(resolve_model("smollm2-135m")))


def main() -> int:
    if "--write" not in sys.argv:
        print(__doc__)
        return 2
    all_cases = {**cases(), **smollm2_cases(load_smollm2_tokenizer())}
    digests = {name: digest(make()) for name, make in all_cases.items()}
    FIXTURE.write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(digests)} digests to {FIXTURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
