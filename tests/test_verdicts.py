"""One rule decides every verdict, and the book built from the committed results states each
verdict as its row of the verdicts table says, nowhere contradicting itself."""
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from ftstudy.narrative import answers
from ftstudy.config import params
from ftstudy.book import report
from ftstudy.analysis import tables, verdicts

STUDY = ROOT / "results" / "cpu-study"


def _row(**kw):
    base = dict(mean_diff=-0.1, ci_low=-0.15, ci_high=-0.05, p_adjusted=0.001, significant=True, seeds=3)
    return pd.Series({**base, **kw})


def test_one_rule_gives_each_verdict():
    assert verdicts.decide(_row())[0] == verdicts.SEPARATED
    assert verdicts.decide(_row(seeds=1))[0] == verdicts.SINGLE_SEED  # training randomness unmeasured
    assert verdicts.decide(_row(seeds=np.nan))[0] == verdicts.SINGLE_SEED  # matched forgetting: one seed's curve
    assert verdicts.decide(_row(p_adjusted=0.2, significant=False))[0] == verdicts.NOT_AFTER_HOLM
    assert verdicts.decide(_row(p_adjusted=0.2, significant=False, ci_high=0.01))[0] == verdicts.INSIDE
    # a significant test whose interval crosses zero is not separated (the rule needs both)
    assert verdicts.decide(_row(ci_high=0.01))[0] == verdicts.INSIDE
    assert verdicts.decide(_row(p_adjusted=np.nan, significant=False))[0] == verdicts.NOT_TESTED
    assert verdicts.decide(_row(), learned=False)[0] == verdicts.CANNOT_TELL
    assert verdicts.decide(_row(seeds=1, p_adjusted=0.2, significant=False))[0] == verdicts.NOT_AFTER_HOLM


def test_a_factor_with_an_untrained_side_cannot_be_told():
    """A factor's change compares two conditions of a method: where the method did not learn
    its own target in one of them, the verdict is "cannot be told", whatever the test says."""
    def target(method, model, diff, sig):
        return dict(comparison="vs base", model=model, method=method, reference="base", train_data="gsm8k",
                    train_size=16, target_nll="gsm8k_nll", task="gsm8k_nll", metric="bits_per_byte",
                    headline=True, seeds=3, n=32, mean_diff=diff, ci_low=diff - 0.02, ci_high=diff + 0.02,
                    p_adjusted=0.001 if sig else 0.5, significant=sig)
    agg = pd.DataFrame([target("full", "a", -0.2, True), target("full", "b", 0.01, False),
                        target("lora", "a", -0.1, True), target("lora", "b", -0.3, True)])
    contrasts = pd.DataFrame([dict(factor="model", method=m, model=np.nan, train_data="gsm8k", train_size=16,
                                   **{"from": "a", "to": "b"}, task="gsm8k_nll", metric="bits_per_byte", seeds=3,
                                   n=32, mean_diff=0.2, ci_low=0.1, ci_high=0.3, p_adjusted=0.001, significant=True)
                              for m in ("full", "lora")])
    t = verdicts.annotate({"aggregated": agg, "contrasts": contrasts})
    assert list(t["contrasts"]["verdict"]) == [verdicts.CANNOT_TELL, verdicts.SEPARATED]
    assert "full with model b" in t["contrasts"]["why"].iloc[0]
    table = verdicts.table({"aggregated": agg, "contrasts": contrasts})
    assert len(table) == 6 and table["id"].is_unique and set(table["source"]) == {"aggregated", "contrasts"}


class _Statements(HTMLParser):
    """The verdicts a page states: each verdict link (its row id and words), and any verdict
    wording outside one (skipped: emphasised terms being defined, code, tables, scripts)."""
    SKIP = {"em", "code", "table", "script", "style", "pre"}

    def __init__(self):
        super().__init__()
        self.links, self.unlinked, self.skip, self.link = [], [], 0, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and "verdict" in (a.get("class") or "").split():
            self.link = [a["href"].split("#", 1)[1], ""]
        elif tag in self.SKIP:
            self.skip += 1

    def handle_endtag(self, tag):
        if tag == "a" and self.link is not None:
            self.links.append(tuple(self.link))
            self.link = None
        elif tag in self.SKIP:
            self.skip -= 1

    def handle_data(self, text):
        if self.link is not None:
            self.link[1] += text
        elif not self.skip:
            for m in re.finditer(verdicts.VOCABULARY, text, flags=re.I):
                self.unlinked.append(text[max(0, m.start() - 80):m.end() + 40].strip())


def contradictions(html_dir: Path, table: pd.DataFrame) -> list[str]:
    """Every statement of a verdict in the built book that disagrees with its row of the
    verdicts table, names no row, or names a row that does not exist; two statements about
    one comparison disagree only if one of them disagrees with its row."""
    by_id = table.set_index("id")["verdict"].to_dict()
    out = []
    for page in sorted(html_dir.rglob("*.html")):
        if page.name in ("verdicts.html", "search.html", "genindex.html"):
            continue
        parser = _Statements()
        parser.feed(page.read_text())
        for snippet in parser.unlinked:
            out.append(f"{page.name}: a verdict stated without its row: ...{snippet}...")
        for vid, words in parser.links:
            if vid not in by_id:
                out.append(f"{page.name}: '{words}' links to {vid}, not a row of the verdicts table")
            elif words.strip().lower().replace("\u2019", "'") not in verdicts.PHRASES[by_id[vid]]:  # smart quotes
                out.append(f"{page.name}: '{words}' for {vid}, whose verdict is '{by_id[vid]}'")
    return out


def _html_has_links(html_dir: Path) -> int:
    return sum(len(re.findall(r'class="verdict"', p.read_text())) for p in html_dir.rglob("*.html"))


@pytest.mark.slow
def test_the_committed_studys_book_states_each_verdict_as_its_row(tmp_path, data_dir):
    """Built from the committed results (tables, sentences, figures, Jupyter Book HTML): every
    verdict any page states links to its row of the verdicts table and says what that row
    says; no page states one without its row; and the committed verdicts table is what the
    rule gives today."""
    p = params.load(ROOT / "params" / "cpu-study.yaml", for_compute=False)
    results = tmp_path / "results"
    shutil.copytree(STUDY, results)
    book = tmp_path / "book"
    shutil.copytree(ROOT / "book", book, ignore=shutil.ignore_patterns("_build", "generated"))
    report.build(p, book=True, book_dir=book, results_dir=results)
    table = pd.read_csv(results / "verdicts.csv")
    pd.testing.assert_frame_equal(table, pd.read_csv(STUDY / "verdicts.csv"))
    html = book / "_build" / "html"
    assert _html_has_links(html) > 20
    assert contradictions(html, table) == []
    # the README block and answers.md state the same verdicts as the front page, in the same words
    ans, cit = answers.build(tables.Tables.read(results).as_dict())
    assert (results / "answers.md").read_text().strip() == answers.markdown(ans, cit).strip()
    # a sentence that contradicts its row is caught, and so is one that states a verdict without its row
    front = html / "generated" / "front.html"
    text = front.read_text()
    first = re.search(r'<a class="verdict" href="verdicts.html#(\w+)">([^<]*)</a>', text)
    wrong = "inside the noise" if first.group(2) != "inside the noise" else "separated"
    front.write_text(text.replace(first.group(0), first.group(0).replace(f">{first.group(2)}<", f">{wrong}<"), 1)
                     + "<p>full learned most, separated from ia3</p>")
    found = contradictions(html, table)
    assert any(first.group(1) in f for f in found) and any("without its row" in f for f in found)
