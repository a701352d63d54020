"""Per-document metrics of the held-out log-likelihood tasks (lm-eval `process_results`).

lm-eval's own loglikelihood metrics are per document (perplexity of the whole answer);
per byte makes long and short answers comparable and does not depend on the tokenizer.
"""
import math


def process_results(doc: dict, results: list) -> dict:
    loglikelihood, _is_greedy = results[0]
    n_bytes = max(1, len(doc["answer"].encode("utf-8")))
    return {"bits_per_byte": -loglikelihood / n_bytes / math.log(2),
            "nll": -loglikelihood}
