"""lm-eval's HF model, subclassed so that evaluation computes nothing twice: per-token
log-likelihoods of our held-out tasks from the one forward lm-eval would run, and each context
shared by several requests (a multiple-choice item's endings) run once, its continuations
scored from its KV cache.

lm-eval's HF model returns a continuation's summed log-likelihood. To tell a GSM8K solution's
working from its calculator annotations and `#### N` line (`ftstudy.compute.nll`), the sum is needed
per token, with the text each token covers. `TokenScoringHFLM` scores the requests of the
tasks it is given as the stock class does (lm-eval's own pair encoding, its left truncation,
the first continuation token's log-probability from the last context position, `is_greedy`,
virtual tokens of prompt tuning skipped, batches ordered as lm-eval orders them) and returns
`(loglikelihood, is_greedy, pieces)`, pieces being `[text, log-probability]` per continuation
token; every other request, and every request when the tokenizer gives no character offsets
(a slow tokenizer), goes to the stock path.

Shared contexts (`share_contexts`): lm-eval's HF backend runs each multi-token ending of a
multiple-choice item with its whole context again (lm-eval issue #1351). Here the requests lm-eval
has encoded (its pair encoding: trailing spaces moved onto the continuation, the continuation
the tail of the whole encoding) are grouped by their context tokens; a context shared by
several requests runs once (contexts batched, left-padded), and its continuations run as one
batch from its rows of the KV cache at the positions that follow it, the
first continuation token's log-probability taken from the context's last position, `is_greedy`
from the same logits. A request lm-eval would truncate on the left, a context of one request,
and every request of a model with virtual tokens (prompt tuning) go to the stock path, in
batches of like length (the stock class pads each batch of `batch_size` to its longest request);
`scored` counts which path each request took (shared context, per token, stock).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM


class TokenScoringHFLM(HFLM):
    """lm-eval's HF model; `token_tasks` (task names) get per-token pieces as a third element,
    and with `share_contexts` a context shared by several requests is run once."""

    def __init__(self, *args, token_tasks=(), share_contexts: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.token_tasks = set(token_tasks)
        self.share_contexts = share_contexts
        self.scored = {"shared_context": 0, "per_token": 0, "stock": 0}

    def _can_share(self) -> bool:
        """A causal model without virtual tokens whose forward takes explicit positions and
        `logits_to_keep` (every model transformers ships; not remote code without them)."""
        import inspect

        config = getattr(self.model, "active_peft_config", None)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        takes = inspect.signature(base.forward).parameters
        return (self.share_contexts and self.backend == "causal" and {"position_ids", "logits_to_keep"} <= set(takes)
                and not (config is not None and getattr(config, "is_prompt_learning", False)))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
        """lm-eval's scoring of encoded requests, with each shared context run once (see the
        module's docstring); the rest, in one call, through the stock method."""
        groups: dict = {}
        if self._can_share():
            for k, (_, context_enc, continuation_enc) in enumerate(requests):
                if len(context_enc) + len(continuation_enc) <= self.max_length + 1:  # lm-eval truncates none
                    groups.setdefault(tuple(context_enc), []).append(k)
        # longest contexts first, as lm-eval orders its batches: little padding in a batch
        shared = sorted(((list(c), ks) for c, ks in groups.items() if len(ks) > 1), key=lambda g: -len(g[0]))
        out: list = [None] * len(requests)
        size = self.batch_size if isinstance(self.batch_size, int) else 8
        for start in range(0, len(shared), size):
            chunk = shared[start:start + size]
            scores = self._score_shared([(c, [requests[k][2] for k in ks]) for c, ks in chunk])
            for k, res in zip([k for _, ks in chunk for k in ks], scores):
                out[k] = res
        rest = [k for k in range(len(requests)) if out[k] is None]
        # with shared contexts on, lm-eval's stock scoring runs in batches of like length (the
        # stock class pads each batch of `batch_size` requests to its longest)
        batches = (self._length_batches([len(requests[k][1]) + len(requests[k][2]) for k in rest])
                   if self.share_contexts else [list(range(len(rest)))] if rest else [])
        for batch in batches:
            stock = super()._loglikelihood_tokens([requests[rest[j]] for j in batch], disable_tqdm=disable_tqdm,
                                                  override_bs=override_bs)
            for j, res in zip(batch, stock):
                out[rest[j]] = res
        self.scored["shared_context"] += len(requests) - len(rest)
        self.scored["stock"] += len(rest)
        return out

    def _length_batches(self, lengths: list[int], slack: float = 0.25) -> list[list[int]]:
        """Indices of `lengths` in batches of at most the batch size, longest first; a batch is
        closed where padding it to its longest would add more than `slack` of its tokens. On a
        CPU a smaller batch costs little, padding costs every padded token (lm-eval pads each
        batch of `batch_size` to its longest: for held-out answers of very different lengths,
        most of a batch's tokens; BENCHMARKS.md section 14 times both)."""
        size = self.batch_size if isinstance(self.batch_size, int) else 8
        batches: list[list[int]] = []
        for k in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
            batch = batches[-1] if batches else []
            if batch and len(batch) < size and \
                    lengths[batch[0]] * (len(batch) + 1) <= (1 + slack) * (sum(lengths[j] for j in batch) + lengths[k]):
                batch.append(k)
            else:
                batches.append([k])
        return batches

    def _forward(self, ids, **kwargs):
        """The model's forward with its KV cache, in the precision `_model_call` uses."""
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=self.mixed_precision_dtype,
                                             enabled=self.mixed_precision_dtype is not None):
            return self.model(ids, use_cache=True, **kwargs)

    def _score_shared(self, groups: list[tuple[list[int], list[list[int]]]]) -> list[tuple[float, bool]]:
        """(log-likelihood, is_greedy) of each continuation of each (context, continuations)
        group, in order: the contexts run once, as one left-padded batch; then the
        continuations (all but their last token), longest first in batches of the batch size,
        run from their contexts' rows of the KV cache at the positions that follow them."""
        longest = max(len(c) for c, _ in groups)
        ctx_mask = torch.tensor([[0] * (longest - len(c)) + [1] * len(c) for c, _ in groups], device=self.device)
        ids = torch.tensor([[0] * (longest - len(c)) + c for c, _ in groups], device=self.device)
        first = self._forward(ids, attention_mask=ctx_mask, position_ids=(ctx_mask.cumsum(-1) - 1).clamp(min=0),
                              logits_to_keep=1)  # a context's last position only: its first continuation token
        last = F.log_softmax(first.logits[:, -1], dim=-1, dtype=self.softmax_dtype)
        rows = [(g, cont) for g, (_, conts) in enumerate(groups) for cont in conts]
        later: dict[int, torch.Tensor] = {}  # row -> log-probabilities after its first token
        # continuations longest first, in batches of the evaluation's batch size: little padding
        order = sorted((r for r, (_, cont) in enumerate(rows) if len(cont) > 1), key=lambda r: -len(rows[r][1]))
        size = self.batch_size if isinstance(self.batch_size, int) else len(order) or 1
        for start in range(0, len(order), size):
            batch = order[start:start + size]
            width = len(rows[batch[0]][1]) - 1
            owners = [rows[r][0] for r in batch]
            cache = copy.deepcopy(first.cache) if start + size < len(order) else first.cache
            cache.batch_select_indices(torch.tensor(owners, device=self.device))
            ids = torch.tensor([rows[r][1][:-1] + [0] * (width - len(rows[r][1]) + 1) for r in batch],
                               device=self.device)
            mask = torch.cat([ctx_mask[owners], torch.tensor(
                [[1] * (len(rows[r][1]) - 1) + [0] * (width - len(rows[r][1]) + 1) for r in batch],
                device=self.device)], dim=1)
            positions = torch.tensor([[len(groups[g][0]) + j for j in range(width)] for g in owners], device=self.device)
            logprobs = F.log_softmax(self._forward(ids, attention_mask=mask, position_ids=positions, cache=cache).logits,
                                     dim=-1, dtype=self.softmax_dtype)
            later.update(zip(batch, logprobs))
        results = []
        for r, (g, cont) in enumerate(rows):
            logprobs = last[g][None] if len(cont) == 1 else torch.cat([last[g][None], later[r][:len(cont) - 1]])
            target = torch.tensor(cont, dtype=torch.long, device=logprobs.device)
            results.append((float(logprobs.gather(1, target[:, None]).sum()),
                            bool((logprobs.argmax(-1) == target).all())))
        return results

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
        self.scored["per_token"] += len(mine)
        pairs = {k: requests[k].args for k in mine}
        encoded = {k: self._encode_pair(*pairs[k]) for k in mine}
        # longest first and then by tokens, as lm-eval orders requests: the same batches, the same
        # sums; with shared contexts on, batches of like length as on the stock path
        order = sorted(mine, key=lambda k: (-(len(encoded[k][0]) + len(encoded[k][1])),
                                            tuple(encoded[k][0] + encoded[k][1])))
        size = self.batch_size if isinstance(self.batch_size, int) else 1
        batches = ([[order[j] for j in b] for b in self._length_batches(
                    [len(encoded[k][0]) + len(encoded[k][1]) for k in order])] if self.share_contexts
                   else [order[start:start + size] for start in range(0, len(order), size)])
        for batch in batches:
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
