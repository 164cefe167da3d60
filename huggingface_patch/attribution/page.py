"""The interactive ΔLP view: one self-contained HTML page per document (no network access, no external
scripts, fonts or styles; it works from ``file://``).

The text is shown as tokens. Hovering a token previews it as the *target* (the token being predicted) and
clicking pins it: every earlier token in its window is shaded by its ΔLP for that target (red: the
prediction leans on it; blue: it works against the prediction; the legend gives the scale), and the side
panel lists the values (ΔLP, LP without the source, distance), the target's LP and probability. With the
decomposition lens (``lens``), a switch and a layer slider show each source's contribution to the
target's logit at every layer, and the token it promotes most. Word-level tables (``--words``) shade whole
words; a contrastive table (``--foil``) says so in the header.

:func:`page_data` builds the page's data from a :class:`~huggingface_patch.attribution.study.DeltaLPStudy`'s
rows; :func:`deltalp_page` returns the page.
"""

from __future__ import annotations

import html
import json
import math

from ..tokens import show


def _number(value: float, digits: int = 4):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else round(float(value), digits)


def page_data(rows: list[dict], document, settings: dict, lens: dict | None = None) -> dict:
    """The page's data for ``document``: its tokens in article order (a start token first, index -1), and per
    target its LP and sources ``[first index, last index, ΔLP, LP without, distance]``; ``lens``: per target
    index, ``{"layers", "sources", "values" (layer x source), "top" (layer x source)}``."""
    rows = [r for r in rows if str(r["document"]) == str(document)]
    if not rows:
        raise ValueError(f"no rows of document {document!r}")
    texts: dict[int, str] = {}
    raws: dict[int, str] = {}
    targets: dict[int, dict] = {}
    word_level = "source_end" in rows[0]
    for row in rows:
        t, s = int(row["target_index"]), int(row["source_index"])
        end = int(row.get("source_end", s))
        texts[t] = row["target_token"]
        raws[t] = row.get("target_token_raw", row["target_token"])
        if not word_level:
            texts.setdefault(s, row["source_token"])
            raws.setdefault(s, row.get("source_token_raw", row["source_token"]))
        entry = targets.setdefault(t, {"lp": _number(row["lp"]), "sources": []})
        entry["sources"].append([s, end, _number(row["delta_lp"]), _number(row["lp_without"]), int(row["distance"])])
    if word_level:  # word rows name whole words: the tokens come from the targets (and the start token)
        if any(int(r["source_index"]) == -1 for r in rows):
            texts.setdefault(-1, next(r["source_token"] for r in rows if int(r["source_index"]) == -1))
    first = min(texts) if -1 in texts else 0
    order = list(range(first, max(texts) + 1))
    return {
        "document": str(document),
        "tokens": [texts.get(i, "") for i in order],
        "raw": [raws.get(i, texts.get(i, "")) for i in order],
        "first": first,
        "targets": {str(t): v for t, v in sorted(targets.items())},
        "lens": {str(t): v for t, v in (lens or {}).items()},
        "settings": settings,
    }


def lens_data(table, offset: int, start: int) -> dict:
    """A :class:`~huggingface_patch.attribution.decomposition_lens.DecompositionLensTable`'s values for the
    page: per layer and source the contribution to the next token's logit and the source's most promoted token.
    ``start`` and ``offset`` map piece positions to article indices (as
    :class:`~huggingface_patch.attribution.tables.PieceAnalysis`)."""
    def article(p: int) -> int:
        return -1 if offset and p == 0 else start + p - offset

    result = table.result
    tops = {}
    for entry in table.entries:
        tops[(entry["layer"], entry["source_index"])] = entry["top_tokens"][0]
    layers = list(range(result.logits.shape[0]))
    return {
        "layers": ["emb"] + [str(layer) for layer in layers[1:]],
        "sources": [article(s) for s in result.sources],
        "values": [[_number(float(table.column[layer, j]), 3) for j in range(len(result.sources))] for layer in layers],
        "top": [[tops.get((layer, s), "") for s in result.sources] for layer in layers],
    }


_STYLE = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; }
header { padding: 10px 16px; background: #f4f4f6; border-bottom: 1px solid #ddd; }
header h1 { font-size: 16px; margin: 0 0 4px 0; }
header .meta { font-size: 12px; color: #555; }
#controls { display: flex; gap: 18px; align-items: center; padding: 8px 16px; border-bottom: 1px solid #eee;
  font-size: 13px; flex-wrap: wrap; }
#legend { display: flex; align-items: center; gap: 6px; }
#legend .bar { width: 160px; height: 12px; border: 1px solid #ccc;
  background: linear-gradient(to right, rgb(33,102,172), #fff, rgb(178,24,43)); }
main { display: flex; }
#text { flex: 1; padding: 14px 16px; white-space: pre-wrap; word-break: break-word; max-height: calc(100vh - 110px);
  overflow-y: auto; }
.tok { cursor: pointer; border-radius: 2px; outline-offset: -1px; }
.tok.start { color: #888; font-size: 12px; }
.tok.target { outline: 2px solid #222; }
.tok.pinned { outline: 2px solid #d08000; }
.tok.notarget { cursor: default; }
aside { width: 360px; border-left: 1px solid #ddd; padding: 12px 14px; font-size: 13px; max-height: calc(100vh - 110px);
  overflow-y: auto; }
aside table { border-collapse: collapse; width: 100%; }
aside td, aside th { padding: 2px 4px; text-align: right; white-space: nowrap; }
aside td:first-child, aside th:first-child { text-align: left; white-space: pre; max-width: 150px;
  overflow: hidden; text-overflow: ellipsis; }
aside tr.best { font-weight: bold; }
.hint { color: #777; }
"""

_SCRIPT = r"""
(function () {
  const data = JSON.parse(document.getElementById('page-data').textContent);
  const s = data.settings;
  const textBox = document.getElementById('text');
  const panel = document.getElementById('panel');
  const modeBox = document.getElementById('mode');
  const slider = document.getElementById('layer');
  const layerLabel = document.getElementById('layer-label');
  const legendLow = document.getElementById('legend-low');
  const legendHigh = document.getElementById('legend-high');
  const spans = [];
  let pinned = null, current = null, mode = 'delta';
  const quote = t => "'" + t.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/\t/g, '\\t') + "'";
  data.tokens.forEach(function (text, k) {
    const index = data.first + k;
    const span = document.createElement('span');
    span.className = 'tok';
    span.dataset.index = String(index);
    span.title = quote(text) + ' (' + quote(data.raw[k]) + ', index ' + index + ')';
    if (index === -1) { span.classList.add('start'); span.textContent = text + ' '; }
    else { span.textContent = text.replace(/\n/g, '\u23ce\n'); }
    if (!(String(index) in data.targets)) span.classList.add('notarget');
    textBox.appendChild(span);
    spans.push(span);
  });
  const spanOf = index => spans[index - data.first];
  function colour(value, bound) {
    if (value === null || !isFinite(value) || bound <= 0) return '';
    const x = Math.max(-1, Math.min(1, value / bound));
    const c = x > 0 ? [178, 24, 43] : [33, 102, 172];
    const a = Math.abs(x);
    return 'rgb(' + c.map(v => Math.round(255 + (v - 255) * a)).join(',') + ')';
  }
  function values(target) {
    const entry = data.targets[target];
    if (mode === 'lens' && data.lens[target]) {
      const lens = data.lens[target], layer = Number(slider.value);
      return lens.sources.map((src, j) => ({first: src, last: src, value: lens.values[layer][j],
                                            top: lens.top[layer][j]}));
    }
    return entry.sources.map(r => ({first: r[0], last: r[1], value: r[2], without: r[3], distance: r[4]}));
  }
  function clear() { spans.forEach(sp => { sp.style.background = ''; sp.classList.remove('target'); }); }
  function select(target) {
    clear();
    current = target;
    const entry = data.targets[target];
    if (!entry) return;
    spanOf(Number(target)).classList.add('target');
    const rows = values(target);
    const bound = Math.max(1e-9, ...rows.map(r => Math.abs(r.value || 0)));
    rows.forEach(function (r) {
      for (let i = r.first; i <= r.last; i++) {
        const sp = spanOf(i);
        if (sp) sp.style.background = colour(r.value, bound);
      }
    });
    legendLow.textContent = (-bound).toPrecision(3);
    legendHigh.textContent = '+' + bound.toPrecision(3);
    const tokenText = data.tokens[Number(target) - data.first];
    const unit = s.units || 'bits';
    let head = '<p><b>target</b> ' + escapeHtml(quote(tokenText)) + ' (index ' + target + ')<br>';
    if (s.level === 'contrast') head += 'contrast log p(target) - log p(' + escapeHtml(quote(s.foil)) + ') = ' +
      fmt(entry.lp) + ' ' + unit + '</p>';
    else head += 'LP = ' + fmt(entry.lp) + ' ' + unit + ', p = ' +
      (Math.pow(unit === 'nats' ? Math.E : 2, entry.lp)).toPrecision(3) + '</p>';
    let best = null;
    rows.forEach(r => { if (r.first >= 0 && r.value !== null && (best === null || r.value > best.value)) best = r; });
    const lensMode = mode === 'lens' && data.lens[target];
    let table = '<table><tr><th>source</th><th>' + (lensMode ? 'logit contribution' : 'ΔLP') + '</th><th>' +
      (lensMode ? 'promotes' : 'LP without') + '</th>' + (lensMode ? '' : '<th>distance</th>') + '</tr>';
    rows.slice().sort((a, b) => a.first - b.first).forEach(function (r) {
      const name = data.tokens.slice(r.first - data.first, r.last - data.first + 1).join('');
      table += '<tr class="' + (r === best ? 'best' : '') + '"><td>' + escapeHtml(quote(name)) + '</td><td>' +
        fmt(r.value) + '</td><td>' + (lensMode ? escapeHtml(quote(r.top || '')) : fmt(r.without)) + '</td>' +
        (lensMode ? '' : '<td>' + r.distance + '</td>') + '</tr>';
    });
    panel.innerHTML = head + table + '</table>' + (lensMode ? '<p class="hint">layer ' +
      data.lens[target].layers[Number(slider.value)] + '</p>' : '');
    panel.dataset.target = String(target);
  }
  function fmt(v) { return v === null || v === undefined ? '' : Number(v).toFixed(3); }
  const entities = {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'};
  function escapeHtml(t) { return t.replace(/[&<>"]/g, c => entities[c]); }
  textBox.addEventListener('mouseover', function (event) {
    const index = event.target.dataset && event.target.dataset.index;
    if (pinned === null && index !== undefined && index in data.targets) select(index);
  });
  textBox.addEventListener('click', function (event) {
    const index = event.target.dataset && event.target.dataset.index;
    if (index === undefined || !(index in data.targets)) return;
    spans.forEach(sp => sp.classList.remove('pinned'));
    if (pinned === index) { pinned = null; } else { pinned = index; spanOf(Number(index)).classList.add('pinned'); }
    select(index);
  });
  const hasLens = Object.keys(data.lens).length > 0;
  modeBox.querySelectorAll('input').forEach(function (input) {
    input.disabled = input.value === 'lens' && !hasLens;
    input.addEventListener('change', function () {
      mode = input.value;
      slider.disabled = mode !== 'lens';
      if (current !== null) select(current);
    });
  });
  if (hasLens) {
    const anyLens = Object.values(data.lens)[0];
    slider.max = String(anyLens.layers.length - 1);
    slider.value = slider.max;
    layerLabel.textContent = anyLens.layers[anyLens.layers.length - 1];
  }
  slider.disabled = true;
  slider.addEventListener('input', function () {
    const anyLens = Object.values(data.lens)[0];
    layerLabel.textContent = anyLens ? anyLens.layers[Number(slider.value)] : '';
    if (current !== null) select(current);
  });
  window.deltalpPage = {select: select, data: data};
})();
"""


def deltalp_page(data: dict, title: str) -> str:
    """The self-contained HTML page of one document's :func:`page_data`."""
    s = data["settings"]
    what = {"word": "word-level ΔLP", "contrast": f"contrastive ΔLP against {show(str(s.get('foil')))}"}.get(
        s.get("level"), "ΔLP")
    meta = (f"{what}; window {s.get('window')}; units {s.get('units', 'bits')}; document {data['document']}; "
            f"{len(data['targets'])} targets. Hover a token to see what its prediction rests on; click to pin.")
    lens_note = "" if data["lens"] else " (not computed: analysis.deltalp --html --lens)"
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_STYLE}</style></head>
<body>
<header><h1>{html.escape(title)}</h1><div class="meta">{html.escape(meta)}</div></header>
<div id="controls">
  <span id="mode"><label><input type="radio" name="mode" value="delta" checked> ΔLP</label>
  <label><input type="radio" name="mode" value="lens"> decomposition lens{html.escape(lens_note)}</label></span>
  <label>layer <input id="layer" type="range" min="0" max="0" value="0"> <span id="layer-label"></span></label>
  <span id="legend"><span id="legend-low">-</span><span class="bar"></span><span id="legend-high">+</span>
  <span class="hint">blue: works against the prediction, red: supports it</span></span>
</div>
<main><div id="text"></div><aside id="panel"><p class="hint">Hover or click a token.</p></aside></main>
<script type="application/json" id="page-data">{payload}</script>
<script>{_SCRIPT}</script>
</body></html>
"""
