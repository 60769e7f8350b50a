"""Loglikelihood requests of `--model eager-vllm`, scored by the vLLM engine it already loaded.

lm-eval's own `vllm` model builds its engine from a model name, and a second engine beside
EAGer's would not fit on the GPU. This scorer is lm-eval's public `TemplateLM` (which splits
context and continuation into tokens the way every lm-eval model does) around the loaded
`vllm.LLM`: one `generate` over all of a call's requests with `prompt_logprobs=1`, for which vLLM
returns each prompt token's logprob and the most likely token at that position. The scoring rule
is lm-eval's vllm_causallms one: a continuation's loglikelihood is the sum of its tokens'
logprobs; it is greedy when each of its tokens is the most likely one.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

log = logging.getLogger("eager_eval")


class VLLMScorer(TemplateLM):
    def __init__(self, llm: Any, tokenizer: Any, max_length: int) -> None:
        super().__init__()
        self.llm = llm
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None,
                   **kwargs: Any) -> list[int]:
        if not string:
            return []
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            add_special_tokens = False  # a rendered chat template carries its own BOS
        special = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return list(self.tokenizer(string, **special, **kwargs).input_ids)

    def _loglikelihood_tokens(self, requests: Sequence[tuple[Any, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        from vllm import SamplingParams, TokensPrompt

        room = self.max_length - 1  # vLLM generates at least one token after the prompt
        prompts, starts = [], []
        for _, context, continuation in requests:
            tokens = (context + continuation)[-room:]
            if len(context) + len(continuation) > room:
                log.warning("eager-eval: a loglikelihood request of %d tokens is cut to the "
                            "model's %d (its context loses its start)",
                            len(context) + len(continuation), room)
            prompts.append(tokens)
            starts.append(len(tokens) - len(continuation))
        params = SamplingParams(temperature=0, prompt_logprobs=1, max_tokens=1, detokenize=False)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params,
                                    use_tqdm=not disable_tqdm)
        results = []
        for (key, _, _), tokens, start, output in zip(requests, prompts, starts, outputs):
            answer = continuation_score(tokens, output.prompt_logprobs, start)
            if key is not None:  # rolling windows are cached per document, not per window
                self.cache_hook.add_partial("loglikelihood", key, answer)
            results.append(answer)
        return results

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for index, (text,) in enumerate(req.args for req in requests):
            for context, predicted in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length - 2, context_len=1)):
                windows.append((None, context, predicted))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm)):
            totals[owner] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        raise NotImplementedError("eager-vllm generates with EAGer; this scorer only scores")


def continuation_score(tokens: Sequence[int], prompt_logprobs: Sequence[Any],
                       start: int) -> tuple[float, bool]:
    """(sum of the logprobs of tokens[start:], whether each was the most likely token).

    `prompt_logprobs[i]` maps token ids to vLLM Logprob objects (or floats) at position i: the
    prompt's own token and the top-1 one; position 0 has none.
    """
    total, greedy = 0.0, True
    for position in range(max(start, 1), len(tokens)):
        ranked = {token: getattr(lp, "logprob", lp)
                  for token, lp in prompt_logprobs[position].items()}
        total += ranked[tokens[position]]
        greedy = greedy and max(ranked, key=ranked.__getitem__) == tokens[position]
    return total, greedy
