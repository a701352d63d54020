"""The README's generated answers block: found, guarded against fewer runs, rewritten."""
from __future__ import annotations

import re
from pathlib import Path


class Refused(ValueError):
    """Reporting input that would lose or falsify what is already written: said in one line,
    before anything is written."""


def readme_block(text: str, study: str):
    """The README's generated answers block of `study`: (match, runs it was written from or
    None); match None when the README has no such block."""
    m = re.search(rf"<!-- answers:{re.escape(study)}(?: from (\d+) runs)? -->(.*?)<!-- /answers:{re.escape(study)} -->",
                  text, flags=re.S)
    return m, (int(m.group(1)) if m and m.group(1) else None)


def update_readme(readme: Path, study: str, brief: str, figure: str, details: str, runs: int) -> None:
    """Replace the block between `<!-- answers:<study> from N runs -->` and `<!-- /answers:<study> -->`
    in the README with the headline figure, the answers' lead sentences and a link to the
    comparisons behind them; N, the finished runs they come from, guards against rewriting
    them from fewer (`check_inputs`)."""
    text = readme.read_text()
    m, _ = readme_block(text, study)
    if m is None:
        raise Refused(f"{readme}: no '<!-- answers:{study} -->' ... '<!-- /answers:{study} -->' block to fill")
    block = (f"<!-- answers:{study} from {runs} runs -->\n![{study}: change vs reference]({figure})\n\n{brief}\n\n"
             f"Every comparison behind these answers: [{Path(details).name}]({details}).\n<!-- /answers:{study} -->")
    readme.write_text(text[:m.start()] + block + text[m.end():])
