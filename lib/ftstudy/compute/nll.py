"""Per-document metrics of the held-out log-likelihood tasks (lm-eval `process_results`).

lm-eval's own loglikelihood metrics are per document (perplexity of the whole answer);
per byte makes long and short answers comparable and does not depend on the tokenizer.

A GSM8K reference solution is not all math: its calculator annotations (`<<20*20/100=4>>`)
and final `#### N` line are the dataset's annotation format, about a fifth of its bytes, and a
model fine-tuned on GSM8K learns that format fastest. `process_solution_results` splits the
solution's log-likelihood by character offsets (`ftstudy.compute.scoring` gives it per token) into
those bytes and the rest: `math_bits_per_byte` (the working, the measure the math verdict
rests on), `format_bits_per_byte`, and `format_nll`, the nats in the format bytes, from
which a change's format share is read (its change over the change in `nll`).
"""
import math
import re

# GSM8K's annotation format: calculator annotations and the final-answer line.
FORMAT = re.compile(r"<<[^<>]*>>|^#### .*$", re.MULTILINE)


def process_results(doc: dict, results: list) -> dict:
    loglikelihood = results[0][0]
    n_bytes = max(1, len(doc["answer"].encode("utf-8")))
    return {"bits_per_byte": -loglikelihood / n_bytes / math.log(2),
            "nll": -loglikelihood}


def format_mask(answer: str) -> list[bool]:
    """Per character of a solution: True where it belongs to the annotation format."""
    mask = [False] * len(answer)
    for m in FORMAT.finditer(answer):
        mask[m.start():m.end()] = [True] * (m.end() - m.start())
    return mask


def split(answer: str, pieces: list) -> tuple[float, float, int, int]:
    """(nats in the format bytes, nats in the rest, format bytes, other bytes) of a solution
    from its continuation's per-token pieces `[text, log-probability]`. A token's
    log-probability is shared between the two parts by its bytes in each; text before the
    solution (a delimiter) counts as the rest, as it counts in `nll`."""
    text = "".join(p for p, _ in pieces)
    if not text.endswith(answer):
        raise ValueError("the scored continuation does not end with the solution")
    offset = len(text) - len(answer)
    in_answer = format_mask(answer)
    mask = [False] * offset + in_answer
    weight = [len(c.encode("utf-8")) for c in text]
    fmt = other = 0.0
    start = 0
    for piece, logprob in pieces:
        span = range(start, start + len(piece)) or [min(start, len(text) - 1)]  # an empty piece: its place
        in_format = sum(weight[i] for i in span if mask[i])
        total = sum(weight[i] for i in span)
        fmt += -logprob * in_format / total
        other += -logprob * (total - in_format) / total
        start += len(piece)
    format_bytes = sum(len(c.encode("utf-8")) for c, m in zip(answer, in_answer) if m)
    return fmt, other, format_bytes, len(answer.encode("utf-8")) - format_bytes


def process_solution_results(doc: dict, results: list) -> dict:
    """`process_results`, and the solution split into its annotation format and its working
    when the model class returned per-token pieces (`ftstudy.compute.scoring`)."""
    out = process_results(doc, results)
    if len(results[0]) < 3 or not results[0][2]:
        return out
    fmt, other, fmt_bytes, other_bytes = split(doc["answer"], results[0][2])
    out.update(math_bits_per_byte=other / max(1, other_bytes) / math.log(2),
               format_bits_per_byte=fmt / max(1, fmt_bytes) / math.log(2),
               format_nll=fmt)
    return out
