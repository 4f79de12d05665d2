"""Tables, paired tests, claims and figures from metrics files and training
logs alone (docs/design.md §6 end, §7); no model is needed.

The report reads exactly the files it is given (see :mod:`.load`) and
writes every name in :data:`OUTPUTS` under ``out``, always (missing inputs
give notes instead of numbers), so a workflow can declare them:

- ``table1.{csv,md,tex}`` (:mod:`.tables`): datasets (and subsets) × runs,
  mean ± std over seeds, the paper's number beside ours, flags;
  ``metrics_long.csv``: the per-seed metrics;
- ``table2.{csv,md,tex}`` (:mod:`.published`): our runs next to published
  numbers (the literature file and the paper's own Table 2);
- ``significance.{csv,md}`` (:mod:`.paired`): paired per-item JSD tests;
- ``claims.{csv,md}`` (:mod:`.claims`): the paper's claims, checked;
- ``learning.{csv,md}`` (:mod:`.learning`): per run and seed, the training
  log's health and whether the model reads the items;
- ``fig_ambiguity``, ``fig_per_class``, ``fig_training`` as PNG and PDF
  (:mod:`.figures`);
- ``report.md`` (:mod:`.page`): one page with all of the above.

This module imports nothing heavy, so the Snakefile can read ``OUTPUTS``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OUTPUTS = ["table1.csv", "table1.md", "table1.tex", "metrics_long.csv",
           "table2.csv", "table2.md", "table2.tex",
           "significance.csv", "significance.md", "claims.csv", "claims.md", "learning.csv", "learning.md",
           "fig_ambiguity.png", "fig_ambiguity.pdf", "fig_per_class.png", "fig_per_class.pdf",
           "fig_training.png", "fig_training.pdf",
           "report.md"]


def run_report(metrics: list[str | Path], out: str | Path, *, runs: list[str | Path] | None = None,
               config: dict[str, Any] | None = None, split: str | None = None,
               literature: Path | list[dict[str, Any]] | None = None,
               paper: Path | dict[str, Any] | None = None) -> list[Path]:
    """Write every report output under ``out``; return their paths (in
    :data:`OUTPUTS` order).

    ``metrics``: metrics JSON files (per-item scores are read from the
    ``.items.csv`` beside each); ``runs``: training run records
    (``run.json``; ``train_log.jsonl`` beside each); ``split``: the split
    to report (default: the one the metrics files share); ``literature``,
    ``paper``: a file or the parsed content, default the packaged
    ``shala/resources/literature.yaml`` and ``shala/resources/paper_tables.yaml``.
    """
    from ..jsonio import write_text
    from . import claims as C
    from . import figures, learning, load, page, paired, published, tables

    records = load.load_records(metrics, split)
    split = records[0].split
    run_records = load.load_runs(runs)
    config = load.with_trainers(config, records, run_records)
    settings = load.settings(config)
    lit = literature if isinstance(literature, list) else load.load_literature(literature)
    pap = paper if isinstance(paper, dict) else load.load_paper(paper)
    df = load.frame(records)
    means = load.item_means(load.load_items(records))  # seeds averaged
    agg = tables.aggregate(df, means, pap, settings, config)
    out = Path(out)
    P = {name: out / name for name in OUTPUTS}
    policy = records[0].data.get("on_parse_failure", "uniform")
    uniform = load.uniform_answers(records)

    # Table 1
    write_text(P["table1.csv"], agg.to_csv(index=False, float_format="%.6f"))
    write_text(P["metrics_long.csv"], df.to_csv(index=False, float_format="%.6f"))
    t1_md = tables.markdown(tables.table1(agg, config, ("**", "**")))
    t1_notes = tables.table1_notes(agg, settings, policy, uniform)
    write_text(P["table1.md"], page.table1_head(split) + t1_md + "\n" + page.notes_md(t1_notes))
    write_text(P["table1.tex"], tables.latex(tables.table1(agg, config, (r"\textbf{", "}")))
               + "".join(f"% {n}\n" for n in t1_notes))

    # Table 2
    entries = lit + published.paper_entries(pap)
    long = published.table2_long(records, entries, config)
    write_text(P["table2.csv"], long.to_csv(index=False, float_format="%.6f"))
    t2_md, t2_tex = published.table2_texts(long, entries, split)
    write_text(P["table2.md"], f"Table 2: comparison with published numbers.\n\n{t2_md}")
    write_text(P["table2.tex"], t2_tex)

    # paired tests
    sig = paired.significance(means, config)
    sig_md = paired.significance_md(sig, paired.notes(records, config, split))
    write_text(P["significance.csv"], sig.to_csv(index=False, float_format="%.10g"))
    write_text(P["significance.md"], f"# Paired tests ({split} split)\n\n{sig_md}")

    # claims
    facts = C.Facts(agg, sig, records, run_records, pap, settings)
    findings = C.check_claims(facts)
    claims_md = C.claims_md(findings, facts)
    write_text(P["claims.csv"], C.claims_frame(findings).to_csv(index=False))
    write_text(P["claims.md"], f"# The paper's claims ({split} split)\n\n{claims_md}")

    # did training learn (per seed)
    items = load.load_items(records)
    learn = learning.learning(df, items, run_records, config, uniform)
    learn_md = learning.learning_md(learn) + learning.reward_constant_md(df)
    write_text(P["learning.csv"], learn.to_csv(index=False, float_format="%.6f"))
    write_text(P["learning.md"], f"# Did training learn? ({split} split)\n\n{learn_md}")

    # figures
    colours = figures.palette(sorted({r.run for r in records} | {r.method for r in run_records}))
    _, notes = figures.fig_ambiguity(records, means, config, out / "fig_ambiguity", split, colours)
    figures.fig_per_class(records, config, out / "fig_per_class", colours)
    notes += figures.fig_training(run_records, config, out / "fig_training", colours)[1]

    write_text(P["report.md"], page.page(
        split=split, n_files=len(records), n_datasets=len({r.dataset for r in records}),
        n_runs=len({r.run for r in records}), n_run_records=len(run_records), summary=C.summary_table(findings),
        table1_md=t1_md, table1_notes=t1_notes, table2_md=t2_md, paired_md=sig_md, claims_md=claims_md,
        notes=notes, setup=page.setup_md(run_records), learning_md=learn_md,
        training_caption=figures.training_caption(run_records)))
    log.info("report: %d metrics files, %d run records -> %s", len(records), len(run_records), out)
    return [P[name] for name in OUTPUTS]
