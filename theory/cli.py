"""``hybridopt theory``: print the theorem, the LaTeX of every lemma, or an instance's evaluated bound.

Usage::

    hybridopt theory [--law rademacher]       # theorem L6 (R6) in readable text (assumptions, step sizes, T_req, C)
    hybridopt theory --latex                  # LaTeX of every lemma and of the theorem
    hybridopt theory --family A --seed 0 [--dx 20] [--eps 0.1] [--q 1] [--omega 1] [--case ii] [--law rademacher]
    hybridopt theory --markdown               # the generated sections of theory/README.md
    hybridopt theory --update-readme          # rewrite those sections in theory/README.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

BEGIN, END = "<!-- BEGIN GENERATED (python -m hybridopt.theory.cli --update-readme) -->", "<!-- END GENERATED -->"
README = Path(__file__).with_name("README.md")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hybridopt theory", description=__doc__.split("\n")[0].replace("``", ""))
    p.add_argument("--latex", action="store_true", help="LaTeX of every lemma and the theorem")
    p.add_argument("--case", choices=("i", "ii"), default="ii", help="A3 case (default ii: G_plus = G)")
    p.add_argument("--family", choices=("A", "B", "C", "D"), help="synthetic family of theory.families")
    p.add_argument("--law", choices=("gaussian", "rademacher"), default="gaussian",
                   help="direction law of the ZO estimator: Theorem L6 (gaussian, default) or R6 (rademacher)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dx", type=int, default=None, help="d_x of the instance")
    p.add_argument("--eps", type=float, default=None, help="target accuracy (default G/10)")
    p.add_argument("--q", type=int, default=1, help="ZO queries per step")
    p.add_argument("--omega", type=float, default=1.0, help="step ratio eta_y/eta_x")
    p.add_argument("--markdown", action="store_true", help="print the generated README sections")
    p.add_argument("--update-readme", action="store_true", help="rewrite the generated sections of README.md")
    return p


def render_latex(case: str = "ii") -> str:
    from hybridopt.theory import lemmas
    from hybridopt.theory.bound import Theorem

    objs = lemmas.lemma_set(case)
    out = [f"% Lemmas of spec §3 (A3 case {case}); this package's own formalization"]
    for name in lemmas.NAMES:
        o = objs[name]
        out.append(f"% {name} ({o.spec}){' — if ' + o.condition if o.condition else ''}")
        out.append(o.latex())
    out.append(Theorem(case).latex())
    out.append(Theorem(case, "rademacher").latex())
    return "\n".join(out)


def render_markdown() -> str:
    """Markdown sections of ``theory/README.md`` generated from the lemma and theorem objects."""
    from hybridopt.theory import lemmas
    from hybridopt.theory.bound import THEOREM, THEOREM_R

    h = lemmas.helpers()
    from hybridopt.theory.symbols import latex as L

    lines = ["## Lemmas (rendered from `theory/lemmas.py`)", "",
             "L1 helpers (spec §3): " + ", ".join(
                 f"${n_}={L(h[k])}$" for n_, k in ((r"\Lambda_0", "Lam0"), (r"\Lambda_1", "Lam1"),
                                                   ("q_0", "q0"), ("q_1", "q1"))) + ".", ""]
    for name in lemmas.NAMES:
        o = getattr(lemmas, name)
        lines.append(f"### `{name}` — {o.description}")
        lines.append("")
        lines.append(f"$$ {o.latex()} $$")
        lines.append("")
        if o.condition:
            lines.append(f"- Hypotheses: {o.condition}.")
        lines.append("- Tested by: " + (", ".join(f"`{t}`" for t in o.tested_by) or "—"))
        lines.append("")
    lines += ["## Theorem L6 (rendered from `theory/bound.py`)", "", "```latex", THEOREM.latex(), "```", "",
              "## Theorem R6, Rademacher directions (rendered from `theory/bound.py`; derivation: `theory/RADEMACHER.md`)",
              "", "```latex", THEOREM_R.latex(), "```", ""]
    return "\n".join(lines)


def update_readme(path: Path = README) -> bool:
    """Replace the text between the markers with :func:`render_markdown`; returns True if it changed."""
    text = path.read_text()
    i, j = text.index(BEGIN) + len(BEGIN), text.index(END)
    new = text[:i] + "\n" + render_markdown() + "\n" + text[j:]
    if new != text:
        path.write_text(new)
    return new != text


def _family_report(args) -> str:
    from hybridopt.theory import families  # lazy: written by another module owner; API make_family(name, seed, **dims)
    from hybridopt.theory.bound import evaluate_theorem

    dims = {} if args.dx is None else {"d_x": args.dx}
    fam = families.make_family(args.family, args.seed, **dims)
    consts = dict(fam.constants())
    x0, y0 = fam.default_start(args.seed)
    consts["Delta"] = float(fam.delta(x0, y0))
    consts["q"], consts["omega"] = args.q, args.omega
    eps = args.eps if args.eps is not None else consts["G"] / 10
    r = evaluate_theorem(consts, eps, args.case, args.law)
    keys = ("L_x0", "L_x1", "L_y0", "L_y1", "L_xy0", "L_xy1", "G", "n", "d_x", "d_y", "Delta", "q", "omega")
    out = [f"Family {args.family} (seed {args.seed}), A3 case ({args.case}), {args.law} directions; certified constants:"]
    out += [f"  {k:6s} = {consts[k]:.6g}" for k in keys if k in consts]
    name = "L6(B)" if args.law == "gaussian" else "R6(B)"
    out += [f"Theorem {name} at eps = {eps:.6g}" + ("  (eps > G: any T >= 1 works)" if r["trivial"] else ""),
            f"  mu(eps)   = {r['mu']:.6g}",
            f"  eta_x     = {r['eta_x']:.6g}   eta_y = {r['eta_y']:.6g}   (regime eps^{r['regime']})",
            f"  kappa0,1,2 = {r['kappa0']:.6g}, {r['kappa1']:.6g}, {r['kappa2']:.6g}",
            f"  T_req     = {r['T_req']:.6g}",
            f"  C         = {r['C']:.6g}   ceil(C Delta / eps^4) = {r['C_bound']:.6g}",
            f"  eps4      = {r['eps4']:.6g}"]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from hybridopt.theory.bound import Theorem

    if args.update_readme:
        changed = update_readme()
        print(f"{README}: {'updated' if changed else 'up to date'}")
    elif args.markdown:
        print(render_markdown())
    elif args.latex:
        print(render_latex(args.case))
    elif args.family:
        try:
            print(_family_report(args))
        except ImportError as e:
            print(f"theory.families is not available: {e}", file=sys.stderr)
            return 2
    else:
        print(Theorem(args.case, args.law).text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
