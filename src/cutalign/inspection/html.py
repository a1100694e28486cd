"""A self-contained HTML page of inspected examples: no network assets, inline CSS and JS.

The data travels as JSON inside the page and a small script renders the tokens, so the page is one
file that opens anywhere (and a browser test can check that the script ran: it sets
``data-rendered`` on ``<body>``). Tokens are coloured by log(p(t|x,j-) / p(t|misaligned)) (red: the
judgment makes the token more likely, i.e. the judgment points at it; blue: less likely), tokens in
U are outlined, and hovering shows every number.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

from cutalign.inspection.core import TokenReport

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;max-width:70em;color:#222}
h1{font-size:1.4em}.example{border:1px solid #ddd;border-radius:6px;padding:1em;margin:1.2em 0}
.meta{font-size:.9em;color:#444;margin:.3em 0}.label{font-weight:600}
.neg{color:#b00020}.pos{color:#1b7f3b}pre{white-space:pre-wrap;margin:.2em 0;font-family:inherit}
.tokens{font-family:ui-monospace,Menlo,Consolas,monospace;line-height:2.1;white-space:pre-wrap;margin-top:.6em}
.tok{padding:1px 0;border-radius:3px;cursor:default}
.tok.u{outline:2px solid #d00;outline-offset:0;font-weight:700}
.tok.gold{text-decoration:underline wavy #6a1b9a}
.legend{font-size:.85em;color:#555}.legend .tok{padding:0 .3em}
#tip{position:fixed;display:none;background:#222;color:#fff;font:12px ui-monospace,monospace;padding:.5em .7em;
border-radius:4px;white-space:pre;pointer-events:none;z-index:10}
"""

_JS = r"""
(function(){
  const data = JSON.parse(document.getElementById('cutalign-data').textContent);
  const root = document.getElementById('examples');
  const tip = document.getElementById('tip');
  const fmt = v => v === null || v === undefined ? 'n/a' : (Math.abs(v) >= 1e-3 ? v.toFixed(4) : v.toExponential(2));
  function colour(ratio){
    if (ratio === null) return 'transparent';
    const x = Math.max(-1, Math.min(1, Math.log(ratio) / Math.log(4)));
    return x >= 0 ? `rgba(220,40,40,${0.08 + 0.6 * x})` : `rgba(40,90,220,${0.08 + 0.6 * -x})`;
  }
  function el(tag, cls, text){ const e = document.createElement(tag); if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text; return e; }
  function gold(report, t){
    return (report.gold_spans || []).some(([a, b]) => t.end > t.start && t.start < b && a < t.end);
  }
  data.reports.forEach((r, i) => {
    const box = el('section', 'example'); box.id = 'example-' + i; box.dataset.id = r.id;
    box.appendChild(el('h2', '', (r.id ? r.id + ' ' : '') + (r.is_negative ? '(negative)' : '(positive)')));
    const ins = el('div', 'meta'); ins.appendChild(el('span', 'label', 'Instruction: '));
    ins.appendChild(el('pre', '', r.instruction)); box.appendChild(ins);
    const j = el('div', 'meta ' + (r.is_negative ? 'neg' : 'pos')); j.appendChild(el('span', 'label', 'Judgment: '));
    j.appendChild(el('pre', '', r.judgment === null ? '(none: positive)' : r.judgment)); box.appendChild(j);
    const nU = r.tokens.filter(t => t.unlikely).length;
    box.appendChild(el('div', 'meta', `lambda = ${r.threshold}, misaligned context: ${r.misalign_mode}, ` +
      `|U| = ${nU} of ${r.tokens.length} tokens` + (r.notice ? `, notice: ${r.notice}` : '')));
    const line = el('div', 'tokens');
    r.tokens.forEach(t => {
      const s = el('span', 'tok' + (t.unlikely ? ' u' : '') + (gold(r, t) ? ' gold' : ''), t.text || '\u00b7');
      s.dataset.index = t.index; s.dataset.u = t.unlikely ? '1' : '0';
      s.style.background = colour(t.ratio);
      s.title = `token ${t.index} ${JSON.stringify(t.text)} (id ${t.token_id})\n` +
        `p(t|x)          ${fmt(t.p_plain)}\np(t|x,j-)       ${fmt(t.p_judged)}\n` +
        `p(t|misaligned) ${fmt(t.p_misaligned)}\nratio           ${fmt(t.ratio)}\n` +
        `in U            ${t.unlikely ? 'yes' : 'no'}\nUL weight       ${fmt(t.weight)}`;
      s.addEventListener('mousemove', ev => { tip.textContent = s.title; tip.style.display = 'block';
        tip.style.left = (ev.clientX + 14) + 'px'; tip.style.top = (ev.clientY + 14) + 'px'; });
      s.addEventListener('mouseleave', () => { tip.style.display = 'none'; });
      line.appendChild(s);
    });
    box.appendChild(line); root.appendChild(box);
  });
  document.body.dataset.rendered = String(data.reports.length);
})();
"""


def render_html(reports: Sequence[TokenReport], *, title: str = "cutalign inspect") -> str:
    """The page for ``reports`` (one section per example), as a string."""
    payload = json.dumps({"reports": [r.to_dict() for r in reports]}, ensure_ascii=False)
    payload = payload.replace("</", "<\\/")  # no "</script>" can end the data block early
    legend = ('<p class="legend">Colour: log p(t|x,j&#8722;) / p(t|misaligned) &mdash; '
              '<span class="tok" style="background:rgba(220,40,40,.6)">judgment raises it</span> '
              '<span class="tok" style="background:rgba(40,90,220,.6)">judgment lowers it</span>; '
              '<span class="tok u">outlined</span>: in U (unlikelihood); '
              '<span class="tok gold">wavy</span>: gold error span. Hover a token for its numbers.</p>')
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"<h1>{html.escape(title)}</h1>{legend}<noscript>This page renders its tokens with JavaScript.</noscript>"
        f"<div id=\"examples\"></div><div id=\"tip\"></div>\n"
        f"<script type=\"application/json\" id=\"cutalign-data\">{payload}</script>\n"
        f"<script>{_JS}</script></body></html>\n"
    )
