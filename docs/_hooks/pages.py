"""MkDocs hooks: pages built from files that live outside ``docs/``.

* ``changelog.md`` is generated from the repository's ``CHANGELOG.md``.
* ``img/*.png`` are drawn with :mod:`pgmunfold.draw` (matplotlib, headless), so the pictures
  always show what the current code draws.
* reST roles left in docstrings (``:class:`~pgmunfold.Beliefs```) are turned into code spans in
  the rendered API pages, linked to the object when its full path is documented.
* In ``tutorials.md`` the line ``<!-- tutorials -->`` is replaced by one section per script in
  ``tutorials/`` (sorted by name): its module docstring as prose, the command that runs it, and
  its full source in a collapsible block. A new tutorial appears without editing the docs.
"""

from __future__ import annotations

import ast
import io
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.pages")

MARKER = "<!-- tutorials -->"
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj):`~?([^`]+)`")
_HTML_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):<code>(~?)([^<]+)</code>")


def _root(config: Any) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def _denoising_grid() -> tuple[Any, Any, Any]:
    """A small binary denoising model: a noisy disc, Ising couplings, BP marginals."""
    import numpy as np
    import torch

    import pgmunfold as pu

    n = 24
    rng = np.random.default_rng(0)
    ii, jj = np.indices((n, n))
    clean = ((ii - n / 2 + 0.5) ** 2 + (jj - n / 2 + 0.5) ** 2 < (n / 3) ** 2).astype(float)
    noisy = clean + 0.9 * rng.standard_normal((n, n))
    fg = pu.FactorGraph()
    x = fg.add_variables("x", shape=(n, n), cardinality=2)
    pairs = np.concatenate(
        [
            np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2),
            np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2),
        ]
    )
    fg.add_factors(pairs, 0.7 * np.eye(2), name="smooth")
    unary = torch.as_tensor(np.stack([-(noisy**2), -((noisy - 1.0) ** 2)], -1) / 1.6)
    net = pu.compile(fg, algorithm="bp", iterations=30, damping=0.3, dtype=torch.float64)
    with torch.no_grad():
        out = net(unary={x: unary})
    return noisy, out, x


def _figures() -> dict[str, Callable[[], Any]]:
    import numpy as np

    import pgmunfold as pu
    from pgmunfold.draw import draw, draw_beliefs, draw_unfolded

    def factor_graph() -> Any:
        fg = pu.FactorGraph()
        x = fg.add_variables("x", shape=(4, 5), cardinality=2)
        pairs = np.concatenate(
            [
                np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2),
                np.stack([x.ids[:-1], x.ids[1:]], -1).reshape(-1, 2),
            ]
        )
        fg.add_factors(pairs, np.eye(2), name="pairwise")
        fg.add_factors(x.ids.reshape(-1, 1), np.zeros((20, 2)), name="unary")
        return draw(fg).figure

    def unfolded() -> Any:
        fg = pu.FactorGraph()
        x = fg.add_variables("x", shape=(3, 3), cardinality=2)
        pairs = np.stack([x.ids[:, :-1], x.ids[:, 1:]], -1).reshape(-1, 2)
        fg.add_factors(pairs, np.eye(2), name="pairwise")
        fg.add_factors(x.ids.reshape(-1, 1), np.zeros((9, 2)), name="unary")
        net = pu.compile(fg, algorithm="bp", iterations=8, untie=["pairwise"], untie_last=4)
        return draw_unfolded(net).figure

    def beliefs() -> Any:
        import matplotlib.pyplot as plt

        noisy, out, x = _denoising_grid()
        fig, (left, right) = plt.subplots(1, 2, figsize=(7.5, 3.4))
        left.imshow(noisy, cmap="gray", interpolation="nearest")
        left.set_title("noisy observation", fontsize=9)
        left.set_xticks([])
        left.set_yticks([])
        draw_beliefs(out, x, ax=right)
        return fig

    return {
        "img/factor_graph.png": factor_graph,
        "img/unfolded.png": unfolded,
        "img/beliefs.png": beliefs,
    }


def _render_figures(files: Files, config: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for uri, make in _figures().items():
        fig = make()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        files.append(File.generated(config, uri, content=buf.getvalue()))


def on_files(files: Files, config: Any) -> Files:
    changelog = _root(config) / "CHANGELOG.md"
    if changelog.is_file():
        files.append(
            File.generated(config, "changelog.md", content=changelog.read_text(encoding="utf-8"))
        )
    else:
        log.warning("CHANGELOG.md not found at the repository root")
    _render_figures(files, config)
    return files


def _prose(doc: str) -> str:
    """A docstring as Markdown: reST roles become code spans (the last dotted part)."""
    return _ROLE.sub(lambda m: f"`{m.group(1).split('.')[-1]}`", doc).strip()


def _tutorial(path: Path, root: Path) -> str:
    source = path.read_text(encoding="utf-8")
    rel = path.relative_to(root).as_posix()
    doc = ast.get_docstring(ast.parse(source)) or ""
    first, _, rest = doc.partition("\n")
    title = first.strip().rstrip(".") or path.stem
    fence = "```"
    parts = [
        f"## {title}",
        "",
        f"`{rel}`",
        "",
        _prose(rest),
        "",
        "Run it from the repository root:",
        "",
        f"{fence}bash\npython {rel}\n{fence}",
        "",
        f'??? example "Source: {rel}"',
        "",
        "    " + f"{fence}python",
    ]
    parts += [("    " + line).rstrip() for line in source.rstrip("\n").splitlines()]
    parts += ["    " + fence, ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if page.file.src_uri != "tutorials.md" or MARKER not in markdown:
        return markdown
    root = _root(config)
    scripts = sorted((root / "tutorials").glob("[0-9]*.py"))
    if not scripts:
        log.warning("no tutorial scripts found in tutorials/")
        return markdown.replace(MARKER, "*No tutorial scripts were found.*")
    body = "\n".join(_tutorial(p, root) for p in scripts)
    return markdown.replace(MARKER, body)


def _role_link(match: re.Match[str]) -> str:
    tilde, target = match.group(1), match.group(2).strip()
    target = target.lstrip(".")
    shown = target.split(".")[-1] if tilde else target
    if "." not in target:
        return f"<code>{shown}</code>"
    # optional: an identifier that no page documents stays plain text instead of failing
    return f'<autoref optional identifier="{target}"><code>{shown}</code></autoref>'


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    return _HTML_ROLE.sub(_role_link, html)
