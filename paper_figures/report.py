"""``DIR/REPORT.md`` and ``DIR/tables/*``: every figure embedded, every table, the commands and
configs, the machine, the wall time and load, and, per paper claim, what was measured and the
verdict.

One function per section (:data:`SECTIONS`), each ``(Context) -> list of lines``.  Every number
*and every verdict* is written through a :class:`paper_figures.ledger.Ledger` marker (files,
keys, the :data:`paper_figures.derive.OPS` operation), so ``REPORT.sources.json`` traces it and
:func:`paper_figures.ledger.verify` recomputes it.  The static text of this module therefore
contains no standalone digits; what a section *shows* (which rows exist) may depend on the
files, what it *says* about them is always a marker.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridopt.io import write_text
from hybridopt.methods import FO_REFERENCES, REGISTRY

from . import derive, style
from .fig_bound import hybrid_runs
from .ledger import Ledger, verify
from .results import SIM, Cell, baseline, cells, common_seeds, hybrids, load_json, load_runs, load_simulation, reference

CLAIMS = {
    "accuracy": "Hybrid fine-tuning reaches at least the accuracy of {ref}",
    "steps": "Hybrid needs fewer steps than {ref} to reach the target (paper: up to {frac} fewer)",
    "seconds": "Hybrid needs less training time than {ref} to reach the target",
    "theory": "Epoch complexity O(ε⁻⁴) (simulator, synthetic objectives with known constants)",
    "bound": "Hybrid LLM runs: measured stationarity proxies stay below the fixed-step bound B(T)",
    "memory": "Hybrid uses less memory than full FT",
}
REC = "reproduce.json"


@dataclass
class Context:
    """What every section reads: the folder, its ledger, preset, driver record, runs and figures."""

    out: Path
    L: Ledger
    scale: dict[str, Any]
    rec: dict[str, Any]
    groups: dict[str, dict[str, Cell]]
    sim: tuple[Path, dict] | None
    files: list[Path]
    tables: dict[str, str] = field(default_factory=dict)

    @property
    def model(self) -> str | None:
        for vs in self.groups.values():
            for c in vs.values():
                return c.first.result.model
        return None

    @property
    def max_seeds(self) -> int:
        return max((len(c.runs) for vs in self.groups.values() for c in vs.values()), default=0)

    @property
    def isolated(self) -> bool:
        return self.scale.get("isolate_runs", True)

    def png(self, prefix: str) -> list[Path]:
        return [f for f in self.files if f.suffix == ".png" and f.name.startswith(prefix)]

    def img(self, f: Path, caption: str) -> str:
        return f"![{caption}]({f.relative_to(self.out).as_posix()})\n"

    # -- markers ----------------------------------------------------------------------------------
    def frac(self) -> str:
        return self.L.num("scale.json", "claims.target_fraction", ".0%")

    def level(self) -> str:
        return self.L.num("scale.json", "claims.interval_level", ".0%")

    def pm(self, args: list, op: str, fmt: str, n: int, **kw) -> str:
        """``mean ± half-width`` of an interval operation (``mean`` alone for one seed)."""
        m = self.L.calc(args, fmt, op=op, kwargs={**kw, "part": "mean"})
        return m if n < 2 else m + " ± " + self.L.calc(args, fmt.lstrip("+"), op=op, kwargs={**kw, "part": "half"})

    def seeds_pm(self, files: list[str], key: str, fmt: str, scale: float = 1.0) -> str:
        kw = {"scale": scale} if scale != 1.0 else {}
        return self.pm([[(f, key) for f in files]], "seed_stat", fmt, len(files), **kw)

    def paired_pm(self, a: list[str], b: list[str], key: str, fmt: str, scale: float = 1.0) -> str:
        kw = {"scale": scale} if scale != 1.0 else {}
        return self.pm([[(f, key) for f in a], [(f, key) for f in b]], "paired_stat", fmt, len(a), **kw)

    def nseeds(self, files: list[str]) -> str:
        return self.L.calc([[(f, "seeds.seed") for f in files]], "d", op="count")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _whole(files: list[str]) -> list[tuple[str, str]]:
    return [(f, "") for f in files]


# ---- sections ---------------------------------------------------------------------------------------

def section_title(c: Context) -> list[str]:
    d = [f"# Reproduction report: scale `{c.scale['name']}`", ""]
    if c.model == "tiny-llama":
        d += ["> **Pipeline check only.** The fine-tuning runs of this scale use `tiny-llama`, a *randomly "
              "initialised* two-layer model (no pretrained weights): its accuracies are at chance level and say "
              "nothing about the paper's claims. This scale checks that every stage runs and every figure and "
              "table is drawn. Use `--scale study` (SmolLM2-135M, several seeds) for evidence.", ""]
    if c.scale.get("illustration_only") or c.max_seeds < derive.MIN_SEEDS:
        d += ["> **Illustration only.** Too few seeds per cell for an interval that means anything: the "
              "tables show the numbers and the claims table gives no verdict it cannot support. The study "
              "(`hybridopt reproduce --scale study`) is the evidence.", ""]
    if c.scale.get("description"):
        d += ["> " + c.L.num("scale.json", "description", "str"), ""]
    return d


def section_how(c: Context) -> list[str]:
    L = c.L
    d = ["## How this was made", "", "Command (rerun it to reuse every result present and redraw everything; "
         "an interrupted run continues from its checkpoint):", "", "```bash",
         f"hybridopt reproduce --scale {c.scale['name']} --out DIR", "```", "",
         "Every figure and table below is drawn from result files only: `runs/<task>/<method or variant>/"
         "seed<k>/result.json` (one fine-tuning run each, written by `benchmarks/runner.py` in the schema of "
         "`benchmarks/schema.py`; its merged configuration is in the file)"
         + (" and `simulation/simulation.json` (the simulator)" if c.sim else "") + ". Each run is "
         "`hybridopt finetune --config runs/<task>/<variant>/seed<k>/config.json --out runs/<task>/<variant>/seed<k>` "
         + ("(each in its own process). " if c.isolated else
            "(at this scale run through the same Python API inside the driver's process). ")
         + "Every number and every verdict in this report is traced to its files and keys in "
           "`REPORT.sources.json`.", ""]
    rec = c.rec
    if rec:
        m = rec.get("machine", {})
        d.append("**Machine.** " + L.num(REC, "machine.platform", "str") + ", "
                 + L.num(REC, "machine.cpu_count", "d") + " CPU cores, torch threads "
                 + L.num(REC, "machine.torch_threads", "d")
                 + (", memory " + L.num(REC, "machine.memory_bytes", ".1f", op="gib") + " GiB" if m.get("memory_bytes") else "")
                 + (", GPU " + L.num(REC, "machine.cuda", "str") if m.get("cuda") else ", no GPU")
                 + "; torch " + L.num(REC, "machine.torch", "str") + ", Python " + L.num(REC, "machine.python", "str")
                 + "; git commit " + L.num(REC, "git_commit", "str") + ".")
        d.append("")
        last = f"sessions.{len(rec['sessions']) - 1}"
        d.append("**Wall time.** Producing the results took " + L.num(REC, "totals.jobs_wall_s", ".1f", op="minutes")
                 + " min in all (sum over the jobs below, each timed when it ran; results that already existed "
                   "were reused, not rerun). The last invocation took " + L.num(REC, f"{last}.wall_s", ".0f")
                 + " s up to the report, of which drawing " + L.num(REC, f"{last}.draw_s", ".1f") + " s.")
        if "loadavg_start" in rec["sessions"][-1]:
            d[-1] += (" Load average (over one, five and fifteen minutes) when it started: " + L.num(REC, f"{last}.loadavg_start", "str")
                      + ", when it ended: " + L.num(REC, f"{last}.loadavg_end", "str")
                      + "; each job's is in the table (other processes share the cores when it exceeds their "
                        "number, and the wall times grow).")
        d.append("")
        rows = []
        for name, job in rec.get("jobs", {}).items():
            rows.append([f"`{name}`", L.num(REC, f"jobs.{name}.status", "str"), L.num(REC, f"jobs.{name}.wall_s", ".1f"),
                         L.num(REC, f"jobs.{name}.estimate_s", ".0f") if "estimate_s" in job else "–",
                         L.num(REC, f"jobs.{name}.loadavg_start", "str") if "loadavg_start" in job else "–",
                         "`" + L.num(REC, f"jobs.{name}.command", "str") + "`"])
        if rows:
            d += ["<details><summary>Jobs (status, wall time, estimate, load average at the start, command)</summary>",
                  "", *_table(["job", "status", "wall (s)", "preset's estimate (s)", "load average", "command"], rows),
                  "", "</details>", ""]
    d += ["<details><summary>Scale preset used (<code>scale.json</code>)</summary>", "", "```json",
          L.num("scale.json", "", "json"), "```", "</details>", ""]
    return d


def _ref_cells(variants: dict[str, Cell]) -> list[Cell]:
    return [variants[m] for m in FO_REFERENCES if m in variants]


def _claim_accuracy(c: Context, group: str, variants: dict[str, Cell]) -> list[list[str]]:
    rows = []
    for h in hybrids(variants):
        for ref in _ref_cells(variants):
            seeds = common_seeds(h, ref)
            if not seeds:
                continue
            a, b = h.files_for(seeds), ref.files_for(seeds)
            measured = (f"test accuracy: {h.short} " + c.seeds_pm(a, "test_accuracy", ".1%") + " vs " + ref.short + " "
                        + c.seeds_pm(b, "test_accuracy", ".1%") + "; paired Δ "
                        + c.paired_pm(a, b, "test_accuracy", "+.1f", scale=100.0) + " points over "
                        + c.nseeds(a) + " seed(s)")
            verdict = c.L.calc([[(f, "test_accuracy") for f in a], [(f, "test_accuracy") for f in b]], "str",
                               op="verdict_paired", kwargs={"claim": "not_worse", "scale": 100.0, "fmt": ".2f"})
            rows.append([CLAIMS["accuracy"].format(ref=ref.short), f"{style.task_label(group)}, {h.short}",
                         measured, verdict])
    return rows


def _claim_target(c: Context, group: str, variants: dict[str, Cell]) -> list[list[str]]:
    rows = []
    target_ref = reference(variants)
    if target_ref is None:
        return rows
    frac = ("scale.json", "claims.target_fraction")
    for h in hybrids(variants):
        for other in _ref_cells(variants):
            seeds = common_seeds(h, other, target_ref)
            if not seeds:
                continue
            a, b, r = h.files_for(seeds), other.files_for(seeds), target_ref.files_for(seeds)
            for unit, fmt, what in (("steps", ".1f", "steps"), ("seconds", ".0f", "training seconds")):
                args = [_whole(a), _whole(r), frac]
                measured = (f"{what} to target: {h.short} " + c.pm(args, "target_stat", fmt, len(a), unit=unit)
                            + " vs " + other.short + " "
                            + c.pm([_whole(b), _whole(r), frac], "target_stat", fmt, len(a), unit=unit)
                            + "; paired Δ " + c.pm([_whole(a), _whole(b), _whole(r), frac], "paired_target_stat",
                                                   "+" + fmt, len(a), unit=unit)
                            + " (reached: " + c.L.calc(args, "d", op="target_stat", kwargs={"part": "reached"})
                            + " of " + c.nseeds(a) + " seeds)")
                verdict = c.L.calc([_whole(a), _whole(b), _whole(r), frac], "str", op="verdict_to_target",
                                   kwargs={"unit": unit, "fmt": ".3g"})
                claim = (CLAIMS["steps"].format(ref=other.short, frac=c.L.num("scale.json", "claims.fewer_steps_fraction",
                                                                              ".0%"))
                         if unit == "steps" else CLAIMS["seconds"].format(ref=other.short))
                rows.append([claim, f"{style.task_label(group)}, {h.short}", measured, verdict])
    return rows


def _claim_theory(c: Context) -> list[list[str]]:
    if not c.sim:
        return []
    _, data = c.sim
    sf = SIM.as_posix()
    rows = []
    for i, s in enumerate(data.get("slopes", [])):
        rows.append([CLAIMS["theory"], f"family {s['family']}, {s['mode']} mode",
                     "fitted slope of log(epochs) on log(ε): " + c.L.num(sf, f"slopes.{i}.epochs.slope", ".2f")
                     + ", bootstrap interval [" + c.L.num(sf, f"slopes.{i}.epochs.ci.0", ".2f") + ", "
                     + c.L.num(sf, f"slopes.{i}.epochs.ci.1", ".2f") + "] over "
                     + c.L.num(sf, f"slopes.{i}.n_points", "d") + " values of ε",
                     c.L.num(sf, f"slopes.{i}", "str", op="verdict_slope")])
    if data.get("bound_holds_fraction") is not None:
        rows.append([CLAIMS["theory"], "certified runs", "fraction of certified runs within T_req(ε): "
                     + c.L.num(sf, "bound_holds_fraction", ".0%"),
                     c.L.num(sf, "bound_holds_fraction", "str", op="verdict_certified")])
    return rows


def _claim_bound(c: Context) -> list[list[str]]:
    rows = []
    for r in hybrid_runs(c.out):
        f = r.file
        rows.append([CLAIMS["bound"], f"{style.task_label(r.group)}, {r.variant}, seed {c.L.num(f, 'seeds.seed', 'd')}",
                     "epochs with running average below the estimated bound: x-block "
                     + c.L.num(f, "", ".0%", op="bound_holds_fraction", kwargs={"block": "x"})
                     + ", y-block " + c.L.num(f, "", ".0%", op="bound_holds_fraction", kwargs={"block": "y"}),
                     c.L.num(f, "", "str", op="verdict_bound")])
    return rows


def _claim_memory(c: Context, group: str, variants: dict[str, Cell]) -> list[list[str]]:
    rows = []
    ft = variants.get("fo-full")
    for h in hybrids(variants) if ft else []:
        seeds = common_seeds(h, ft)
        a, b = h.files_for(seeds), ft.files_for(seeds)
        rows.append([CLAIMS["memory"], f"{style.task_label(group)}, {h.short}",
                     "peak memory: hybrid " + c.seeds_pm(a, "peak_memory_bytes", ".2f", scale=2.0**-30) + " GiB vs FT "
                     + c.seeds_pm(b, "peak_memory_bytes", ".2f", scale=2.0**-30) + " GiB",
                     c.L.calc([[(f, "peak_memory_bytes") for f in a], [(f, "peak_memory_bytes") for f in b]], "str",
                              op="verdict_less_memory", kwargs={"isolated": c.isolated})])
    return rows


def section_claims(c: Context) -> list[str]:
    rows: list[list[str]] = []
    for group, variants in c.groups.items():
        rows += _claim_accuracy(c, group, variants)
    for group, variants in c.groups.items():
        rows += _claim_target(c, group, variants)
    rows += _claim_theory(c)
    rows += _claim_bound(c)
    for group, variants in c.groups.items():
        rows += _claim_memory(c, group, variants)
    if c.model == "tiny-llama":   # a random model: the fine-tuning verdicts are pipeline output, not evidence
        rows = [r if r[0] == CLAIMS["theory"] else r[:3] + [r[3] + " (random model: not evidence)"] for r in rows]
    d = ["## The paper's claims: what we measured", ""]
    d += (["How to read it: every entry is the mean over seeds ± the half-width of the " + c.level()
           + " Student-t interval (t quantile with n − one degrees of freedom, times the standard deviation "
             "over the n seeds, over √n); Δ is the paired difference hybrid − alternative of the same seed "
             "(common random numbers: the same batches, adapter initialisation and probe directions). A claim "
             "is *supported* when the interval excludes the alternative, *contradicted* when it excludes the "
             "claim, and *not distinguishable at this scale* otherwise; the verdict column gives the interval "
             "that decided it.", ""] if c.groups else [])
    d += _table(["claim", "where", "measured", "verdict"], rows) if rows else ["No results yet."]
    d += ["", "Steps-to-target is defined below; the step budget and evaluation interval bound its resolution.", ""]
    return d


def section_theory(c: Context) -> list[str]:
    if c.scale.get("simulator") is None and not c.sim:
        return []
    d = ["## Theory: epochs-to-ε and fixed-step runs (simulator)", ""]
    if not c.sim:
        return d + ["_No simulation results (the simulator did not run or failed)._", ""]
    _, data = c.sim
    sf = SIM.as_posix()
    d.append("Drawn from `simulation/simulation.json` by `theory/sim_plots.py` (the same code as "
             "`hybridopt simulate`). P1: epochs to reach ε against ε (log–log) with the theorem's "
             "T_req(ε); the fitted slope is compared with the theorem's exponent (ε⁻⁴) where the step-size schedule "
             "is in its ε² regime. P2 (when the sweep has fixed-step runs): running averages of the squared gradient "
             "norms at fixed step sizes against B(T) of L6(A). Simulator wall time " + c.L.num(sf, "timing.wall_s", ".1f")
             + " s on " + c.L.num(sf, "timing.workers", "d") + " worker process(es)"
             + ("; quick sweep (fewer ε, smaller instances)." if data.get("quick") else "."))
    d.append("")
    for f in c.png("P1_"):
        d.append(c.img(f, f"P1 {f.stem}"))
    for f in c.png("P2_"):
        d.append(c.img(f, "P2 fixed steps against B(T)"))
    if data.get("looseness") is not None:
        d += ["Median looseness of the certified bound (T_req over measured epochs): "
              + c.L.num(sf, "looseness", ".3g") + ".", ""]
    return d


def section_curves(c: Context) -> list[str]:
    if not c.groups:
        return []
    d = ["## Fine-tuning curves", "",
         "Training loss (the classification cross-entropy over the answer candidates, moving average) and dev "
         "accuracy against training steps, every method and variant run for the task: the mean over seeds with a "
         + c.level() + " pointwise Student-t band.", ""]
    return d + [c.img(f, f"curves {f.stem}") for f in c.png("curves_")]


def _distinct(c: Context, variants: dict[str, Cell], key: str, fmt: str, op: str = "get", whole: bool = False) -> str:
    """One marker per distinct value of ``key`` among the cells (``whole``: over each cell's seeds),
    with the cells that have it when there are several."""
    by: dict[Any, list[Cell]] = {}
    for cell in variants.values():
        args = [[(f, key) for f in cell.files]] if whole else [(cell.first.file, key)]
        by.setdefault(c.L.value(args, op=op), []).append(cell)
    def mark(cell):
        return c.L.calc([[(f, key) for f in cell.files]] if whole else [(cell.first.file, key)], fmt, op=op)
    if len(by) == 1:
        return mark(next(iter(by.values()))[0])
    return "; ".join(mark(cs[0]) + " (" + ", ".join(x.short for x in cs) + ")" for cs in by.values())


def section_accuracy(c: Context) -> list[str]:
    if not c.groups:
        return []
    L = c.L
    names = list(dict.fromkeys(v for vs in c.groups.values() for v in vs))
    head = ["method"] + [style.task_label(g) for g in c.groups]
    first = {g: next(iter(vs.values())).first.file for g, vs in c.groups.items()}
    rows = [["zero-shot (dev)"] + [L.num(first[g], "zero_shot_dev_accuracy", ".1%") for g in c.groups]]
    for v in names:
        label = next(vs[v].label for vs in c.groups.values() if v in vs)
        rows.append([label] + [c.seeds_pm(vs[v].files, "test_accuracy", ".1%") if v in vs else "–"
                               for vs in c.groups.values()])
    rows.append(["seeds per cell"] + [_distinct(c, vs, "seeds.seed", "d", op="count", whole=True)
                                      for vs in c.groups.values()])
    rows.append(["step budget"] + [_distinct(c, vs, "steps", "d") for vs in c.groups.values()])
    rows.append(["batch size"] + [L.num(first[g], "config.batch_size", "d") for g in c.groups])
    rows.append(["train / dev / test examples"] + [
        L.num(first[g], "sizes.train", "d") + " / " + L.num(first[g], "sizes.dev", "d") + " / "
        + L.num(first[g], "sizes.test", "d") for g in c.groups])
    rows.append(["model"] + [L.num(first[g], "model", "str") for g in c.groups])
    c.tables["accuracy"] = "\n".join(_table(head, rows)) + "\n"
    d = ["## Accuracy (test set, checkpoint selected on dev)", "", c.tables["accuracy"],
         "Each cell: mean over seeds ± the half-width of the " + c.level() + " Student-t interval (one seed: the value "
         "alone). Test accuracy is computed once per run, on the checkpoint with the best dev accuracy.", "",
         "Learning rates and other optimizer options of each method / variant (from its first seed's result file):", ""]
    orow = []
    for g, vs in c.groups.items():
        for v, cell in vs.items():
            f, m = cell.first.file, REGISTRY[cell.method]
            cells_ = [L.num(f, f"config.optimizer.{k}", ".0e") if has else "–"
                      for k, has in (("lr_x", m.has_zo), ("lr_y", m.has_fo), ("mu", m.has_zo))]
            orow.append([style.task_label(g), cell.short] + cells_ + [
                L.num(f, "config.optimizer.q", "d") if m.has_zo else "–",
                L.num(f, "config.optimizer.fo_optimizer", "str") if m.has_fo else "–",
                L.num(f, "config.eval_every", "d")])
    return d + _table(["task", "method", "η_x (ZO)", "η_y (FO)", "μ", "q", "FO optimizer", "dev every"], orow) + [""]


def section_paired(c: Context) -> list[str]:
    rows = []
    for g, vs in c.groups.items():
        base = baseline(vs)
        for h in hybrids(vs) if base else []:
            seeds = common_seeds(h, base)
            a, b = h.files_for(seeds), base.files_for(seeds)
            rows.append([style.task_label(g), h.label, c.nseeds(a),
                         c.paired_pm(a, b, "test_accuracy", "+.1f", scale=100.0),
                         c.paired_pm(a, b, "dev_metric.best", "+.1f", scale=100.0),
                         c.pm([_whole(a), _whole(b)], "paired_final_loss_stat", "+.4f", len(a)),
                         c.L.calc([_whole(a), _whole(b)], ".0%", op="identical_fraction"),
                         c.L.calc([_whole(a), _whole(b)], ".0%", op="identical_fraction", kwargs={"key": "test_accuracy"}),
                         c.L.calc([_whole(a)], "d", op="diverged_count")])
    if not rows:
        return []
    c.tables["paired"] = "\n".join(_table(
        ["task", "hybrid variant", "seeds", "Δ test acc. (points)", "Δ best dev acc. (points)",
         "Δ final train loss (last ten steps)", "seeds with identical dev curves", "seeds with identical test acc.",
         "hybrid seeds diverged"],
        rows)) + "\n"
    d = ["## The ZO block's effect: hybrid − PEFT of the same seed", "",
         "The hybrid and first-order PEFT runs of one seed share the batches, the adapter initialisation and "
         "the probe directions, so their difference is the effect of the ZO updates of the base weights (direct, "
         "and through the adapter's trajectory). Mean over seeds ± half-width of the " + c.level()
         + " Student-t interval of the per-seed differences. A seed *diverged* when some step's training loss "
           "exceeds ten times its first step's or is not finite (the rule of `hybridopt lr-scan`):", "",
         c.tables["paired"]]
    return d + [c.img(f, f"paired {f.stem}") for f in c.png("paired_")]


def section_contributions(c: Context) -> list[str]:
    rows = []
    for g, vs in c.groups.items():
        for h in hybrids(vs):
            if not all(r.result.changes.zo_first and r.result.changes.fo_first for r in h.runs):
                continue
            a, n = _whole(h.files), len(h.files)
            rows.append([style.task_label(g), h.label, c.nseeds(h.files),
                         c.pm([a], "contribution_stat", ".3g", n, block="fo"),
                         c.pm([a], "contribution_stat", ".3g", n, block="zo"),
                         c.pm([a], "contribution_stat", ".3g", n, block="zo", order="second"),
                         c.pm([a], "zo_share_stat", ".2%", n),
                         c.pm([a], "zo_share_stat", ".2%", n, order="second")])
    if not rows:
        return []
    c.tables["contributions"] = "\n".join(_table(
        ["task", "hybrid variant", "seeds", "D_fo (nats)", "D_zo, first order", "D_zo, quadratic", "ZO share, first order",
         "ZO share, quadratic"], rows)) + "\n"
    d = ["## Contribution of each block, per step", "",
         "For every step, the change of that step's mini-batch loss predicted for each block's update (both "
         "blocks read the same point): FO ⟨∇ᵧf_B, Δy⟩, Δy the step's adapter update (exact first order, Adam included); ZO first "
         "order −η_x·mean_r g_r² and the quadratic model along the probe direction, which adds ½η_x² g_r² "
         "u_rᵀ∇²ₓf u_r from the step's own second difference (`benchmarks/schema.py`, `Changes`). D = the "
         "accumulated predicted decrease over the run; the ZO share is D_zo / (D_zo + D_fo). These are predictions "
         "on the batch the step was computed on (an optimistic measure of what the update does elsewhere); the "
         "paired differences above measure the outcome.", "", c.tables["contributions"]]
    return d + [c.img(f, f"contributions {f.stem}") for f in c.png("contributions_")]


def section_steps(c: Context) -> list[str]:
    rows = []
    frac = ("scale.json", "claims.target_fraction")
    for g, vs in c.groups.items():
        ref = reference(vs)
        if ref is None:
            continue
        for cell in vs.values():
            seeds = common_seeds(cell, ref)
            a, r = _whole(cell.files_for(seeds)), _whole(ref.files_for(seeds))
            rows.append([style.task_label(g), cell.short, ref.short, c.nseeds(cell.files_for(seeds)),
                         c.pm([a, r, frac], "target_stat", ".1f", len(a), unit="steps"),
                         c.pm([a, r, frac], "target_stat", ".0f", len(a), unit="seconds"),
                         c.L.calc([a, r, frac], "d", op="target_stat", kwargs={"part": "reached"}),
                         c.L.num(cell.first.file, "config.eval_every", "d"), c.L.num(cell.first.file, "steps", "d")])
    if not rows:
        return []
    c.tables["steps_to_target"] = "\n".join(_table(
        ["task", "method", "reference", "seeds", "steps to target", "training seconds to target", "seeds that reached it",
         "eval every", "budget"], rows)) + "\n"
    d = ["## Steps and seconds to target", "",
         "Target, per seed: " + c.frac() + " of the best dev accuracy of the reference run of the same seed (full FT, "
         "or first-order PEFT where full FT was not run for the task). Steps to target: the first evaluated step that "
         "reaches it; a run that never reaches it counts as its budget plus one evaluation interval (a lower bound). "
         "Seconds: the training time up to that step (evaluations excluded; a run that never reaches it counts "
         "with its whole training time). Mean ± half-width of the " + c.level() + " Student-t interval.", ""]
    d += [c.img(f, "steps to target") for f in c.png("steps_to_target")]
    return d + [c.tables["steps_to_target"]]


def section_bound(c: Context) -> list[str]:
    runs = hybrid_runs(c.out)
    d = ["## Hybrid LLM runs against the bound", ""]
    if not runs:
        return d + ["_No hybrid run with stationarity records._", ""]
    d += ["For one hybrid run per task: the per-epoch mean of the measured stationarity proxies — ‖∇ᵧf_B‖² exactly "
          "(autograd, PEFT block) and the unbiased ZO estimate mean_r g_r² of ‖∇ₓf_B‖² (base block, Gaussian "
          "probes, up to O(μ²)) — as running averages over epochs T, next to the per-block bounds B_x(T), B_y(T) "
          "of L6(A) evaluated at constants **estimated along the run, not certified**:", "",
          "* n = steps per epoch, d_x = size of the ZO block, q, μ, η_x, η_y = the run's settings (with Adam on "
          "the FO block, η_y is its nominal learning rate);",
          "* Δ = mean training loss over the first epoch (the cross-entropy is non-negative, so inf f is taken as zero);",
          "* G = square root of (largest observed ‖∇ᵧf_B‖² + largest per-epoch mean of the ZO estimate of ‖∇ₓf_B‖²);",
          "* L_x = largest |curvature probe| / d_x, the probe being mean_r [f(x+μu)+f(x−μu)−2f(x)]/μ² ≈ uᵀ∇²ₓf u "
          "with ‖u‖² ≈ d_x (a random-direction curvature: it under-estimates the largest eigenvalue);",
          "* L_y = median over consecutive steps t of |‖h_next‖ − ‖h_t‖| / (η_y‖h_t‖), h_t = ∇ᵧf_{B_t}(z_t) and h_next "
          "the next step's (includes batch-to-batch noise: it over-estimates);",
          "* L_xy = √(L_x L_y) (not probed); the gradient-dependent parts L_x1, L_y1, L_xy1 are set to zero.", "",
          "The proxies are mini-batch gradients, so they include the sampling variance; the bound is a statement "
          "about expectations. Right panels show the shapes (each curve divided by its value at the first epoch).", ""]
    d += [c.img(f, f"bound {f.stem}") for f in c.png("bound_")]
    rows = []
    for r in runs:
        f = r.file
        k = lambda name: c.L.num(f, "", ".3g", op="bound_const", kwargs={"name": name})  # noqa: E731
        rows.append([style.task_label(r.group), r.variant, c.L.num(f, "", "d", op="epochs_run"), k("n"), k("d_x"),
                     k("Delta"), k("G"), k("L_x0"), k("L_y0"), k("L_xy0"),
                     c.L.num(f, "", ".3g", op="stationarity_final", kwargs={"block": "x"}),
                     c.L.num(f, "", ".3g", op="bound_final", kwargs={"block": "x"}),
                     c.L.num(f, "", ".3g", op="stationarity_final", kwargs={"block": "y"}),
                     c.L.num(f, "", ".3g", op="bound_final", kwargs={"block": "y"}),
                     c.L.num(f, "", "str", op="bound_step_condition")])
    c.tables["bound_constants"] = "\n".join(_table(
        ["task", "run", "epochs", "n", "d_x", "Δ (est.)", "G (est.)", "L_x (est.)", "L_y (est.)", "L_xy (assumed)",
         "x: measured (last epoch)", "x: bound B_x", "y: measured", "y: bound B_y", "step condition (S)"], rows)) + "\n"
    return d + [c.tables["bound_constants"]]


def section_memory(c: Context) -> list[str]:
    if not c.groups:
        return []
    d = ["## Memory and speed", ""] + [c.img(f, "memory and speed") for f in c.png("memory_speed")]
    if not c.isolated:
        d += ["_At this scale the runs share one process, so the peak memory of a run includes the runs before it; "
              "compare memory only at a scale whose preset isolates runs._", ""]
    rows = []
    for g, vs in c.groups.items():
        for cell in vs.values():
            fs, f = cell.files, cell.first.file
            rows.append([style.task_label(g), cell.short, c.seeds_pm(fs, "peak_memory_bytes", ".2f", scale=2.0**-30),
                         c.seeds_pm(fs, "seconds_per_step", ".3g"), c.seeds_pm(fs, "tokens_per_second", ".4g"),
                         c.L.num(f, "sizes.zo_params", ",d"), c.L.num(f, "sizes.fo_params", ",d"),
                         c.L.num(f, "oracle_calls.zo_weight_passes_per_step", ".2f"),
                         c.seeds_pm(fs, "timing.wall_seconds", ".1f")])
    c.tables["memory_speed"] = "\n".join(_table(
        ["task", "method", "peak memory (GiB)", "s / step (median)", "train tokens / s", "ZO params", "FO params",
         "ZO weight passes / step", "run wall (s)"], rows)) + "\n"
    return d + ["Mean over seeds ± half-width of the " + c.level() + " Student-t interval.", "", c.tables["memory_speed"]]


def section_runs(c: Context) -> list[str]:
    runs = [r for vs in c.groups.values() for cell in vs.values() for r in cell.runs]
    d = ["## Runs", ""]
    stopped = [n for n, j in c.rec.get("jobs", {}).items() if n.startswith("run:") and j.get("status") != "done"]
    if stopped:
        d += ["Runs that did not finish (no result file; a non-finite loss stops a run with exit code three):", ""]
        d += _table(["job", "status"], [[f"`{n}`", c.L.num(REC, f"jobs.{n}.status", "str")] for n in stopped]) + [""]
    if not runs:
        return d
    rows = [[style.task_label(r.group), r.variant, c.L.num(r.file, "seeds.seed", "d"), f"`{r.file}`",
             c.L.num(r.file, "dev_metric.best", ".1%"), c.L.num(r.file, "dev_metric.step", "d")] for r in runs]
    d += _table(["task", "method / variant", "seed", "result file", "best dev acc.", "at step"], rows) + [""]
    d += ["The merged configuration of each method / variant (defaults, method defaults, the preset; first seed; "
          "the seeds differ only in `seed`), as recorded in its result file:", ""]
    for g, vs in c.groups.items():
        for cell in vs.values():
            d += [f"<details><summary>{style.task_label(g)} / {cell.variant}</summary>", "", "```json",
                  c.L.num(cell.first.file, "config", "json"), "```", "</details>", ""]
    return d


#: the report's sections, in order
SECTIONS = (section_title, section_how, section_claims, section_theory, section_curves, section_accuracy,
            section_paired, section_contributions, section_steps, section_bound, section_memory, section_runs)


def build(out: Path, files: list[Path]) -> tuple[Ledger, str, dict[str, str]]:
    """The report skeleton, its ledger and the table skeletons (name → Markdown)."""
    out = Path(out)
    scale = load_json(out / "scale.json") or {"name": "?", "claims": {}}
    level = scale.get("claims", {}).get("interval_level")
    if level is not None and level != derive.LEVEL:
        raise ValueError(f"scale.json: claims.interval_level = {level}, but the intervals are computed at "
                         f"{derive.LEVEL}")
    c = Context(out, Ledger(out), scale, load_json(out / REC) or {}, cells(out, load_runs(out)), load_simulation(out),
                files)
    lines: list[str] = []
    for section in SECTIONS:
        lines += section(c)
    return c.L, "\n".join(lines) + "\n", c.tables


def write(out: str | Path, files: list[Path]) -> tuple[Path, list[str]]:
    """Write the tables and REPORT.md (+ sources); return its path and the provenance problems."""
    out = Path(out)
    L, skeleton, tables = build(out, files)
    for name, sk in tables.items():
        write_text(out / "tables" / f"{name}.md", L.substitute(sk))
    rep = L.render(skeleton, out / "REPORT.md")
    return rep, verify(rep)


def summary(out: str | Path) -> str:
    """A short text summary for the terminal: the claims table of the report."""
    out = Path(out)
    text = (out / "REPORT.md").read_text(encoding="utf-8") if (out / "REPORT.md").is_file() else ""
    sec = text.split("## The paper's claims: what we measured", 1)
    claims = sec[1].split("\n## ", 1)[0].strip() if len(sec) > 1 else "(no report)"
    return "\n== Paper claims (see REPORT.md) ==\n" + claims + "\n"


def main(argv: list[str] | None = None) -> int:  # pragma: no cover - thin wrapper
    import sys

    out = Path((argv or sys.argv[1:])[0])
    files = sorted((out / "figures").glob("*.png"))
    rep, problems = write(out, files)
    print(rep, *problems, sep="\n")
    return 1 if problems else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
