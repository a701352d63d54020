"""Per-token log-likelihoods for our held-out tasks, from the one forward lm-eval would run.

lm-eval's HF model returns a continuation's summed log-likelihood. To tell a GSM8K solution's
working from its calculator annotations and `#### N` line (`ftstudy.compute.nll`), the sum is needed
per token, with the text each token covers. `TokenScoringHFLM` scores the requests of the
tasks it is given as the stock class does (lm-eval's own pair encoding, its left truncation,
the first continuation token's log-probability from the last context position, `is_greedy`,
virtual tokens of prompt tuning skipped, batches ordered as lm-eval orders them) and returns
`(loglikelihood, is_greedy, pieces)`, pieces being `[text, log-probability]` per continuation
token; every other request, and every request when the tokenizer gives no character offsets
(a slow tokenizer), goes to the stock path. Nothing is scored twice.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM


class TokenScoringHFLM(HFLM):
    """lm-eval's HF model; `token_tasks` (task names) get per-token pieces as a third element."""

    def __init__(self, *args, token_tasks=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.token_tasks = set(token_tasks)

    def _splits(self, context: str) -> bool:
        return (self.backend == "causal" and bool(context)
                and getattr(self.tokenizer, "is_fast", False))

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        mine = [k for k, r in enumerate(requests)
                if r.task_name in self.token_tasks and self._splits(r.args[0])]
        if not mine:
            return super().loglikelihood(requests, disable_tqdm=disable_tqdm)
        out: list = [None] * len(requests)
        rest = [k for k in range(len(requests)) if k not in set(mine)]
        if rest:
            for k, res in zip(rest, super().loglikelihood([requests[k] for k in rest], disable_tqdm=disable_tqdm)):
                out[k] = res
        pairs = {k: requests[k].args for k in mine}
        encoded = {k: self._encode_pair(*pairs[k]) for k in mine}
        # longest first and then by tokens, as lm-eval orders requests: the same batches, the same sums
        order = sorted(mine, key=lambda k: (-(len(encoded[k][0]) + len(encoded[k][1])),
                                            tuple(encoded[k][0] + encoded[k][1])))
        size = self.batch_size if isinstance(self.batch_size, int) else 1
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            for k, res in zip(batch, self._score([pairs[k] for k in batch], [encoded[k] for k in batch])):
                out[k] = res
        return out

    def _score(self, pairs, encoded):
        inputs = []
        for context_enc, continuation_enc in encoded:
            if not continuation_enc or len(continuation_enc) > self.max_length:
                raise ValueError(f"a continuation of {len(continuation_enc)} tokens cannot be scored "
                                 f"in a window of {self.max_length}")
            inputs.append((context_enc + continuation_enc)[-(self.max_length + 1):][:-1])
        width = max(len(i) for i in inputs)
        batch = torch.tensor([i + [0] * (width - len(i)) for i in inputs], dtype=torch.long, device=self.device)
        logprobs = F.log_softmax(self._model_call(batch), dim=-1, dtype=self.softmax_dtype)
        extra = logprobs.shape[1] - width  # virtual tokens (prompt tuning) come before the input
        results = []
        for row, inp, (context, continuation), (_, continuation_enc) in zip(logprobs, inputs, pairs, encoded):
            end = extra + len(inp)
            rows = row[end - len(continuation_enc):end]
            target = torch.tensor(continuation_enc, dtype=torch.long, device=rows.device)
            token = rows.gather(1, target[:, None]).squeeze(1)
            greedy = bool((rows.argmax(-1) == target).all())
            pieces = self.pieces(context, continuation, continuation_enc)
            results.append((float(token.sum()), greedy,
                            [[p, float(v)] for p, v in zip(pieces, token.tolist())]))
        return results

    def pieces(self, context: str, continuation: str, continuation_enc: list[int]) -> list[str]:
        """The text of `continuation` each of its tokens covers, in order and without gaps, from
        the tokenizer's character offsets in context + continuation (the string lm-eval
        encodes). A token that straddles the boundary covers the continuation's start."""
        whole = context + continuation
        enc = self.tokenizer(whole, add_special_tokens=False, return_offsets_mapping=True)
        n = len(continuation_enc)
        if list(enc["input_ids"][-n:]) != list(continuation_enc):
            raise ValueError("the tokenizer's offsets do not match lm-eval's encoding of the continuation")
        bounds, previous = [], 0
        for _, stop in enc["offset_mapping"][-n:]:
            previous = min(len(continuation), max(previous, stop - len(context)))
            bounds.append(previous)
        bounds[-1] = len(continuation)
        return [continuation[a:b] for a, b in zip([0] + bounds[:-1], bounds)]
