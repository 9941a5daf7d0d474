#!/usr/bin/env python3
"""Renders a Grafana dashboard JSON (dashboards/qgate-variant-comparison.json) to a PNG from the
data in a real Prometheus.

Grafana itself cannot run here (it is not packaged in Debian and this machine has no network), so
this is not Grafana's renderer: it is a faithful render of the *same queries*. Every panel's
targets are sent to Prometheus exactly as the dashboard writes them, after the substitutions
Grafana would make ($route, $variant, $__rate_interval, $__interval, $__range), and drawn with
matplotlib in the dashboard's gridPos layout: time series panels as lines named by legendFormat,
stat / bar gauge / table panels from an instant query at the end of the window. Annotation queries
are drawn as dashed vertical lines on the time series.

  render_dashboard.py dashboards/qgate-variant-comparison.json --prometheus http://127.0.0.1:9090 \
      --minutes 30 --var route=smollm2 -o dashboard.png

Variables not given with --var take their first value (or "All" for multi-value variables with
an all value), as Grafana does on first load.
"""
import argparse
import datetime as dt
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(.*)\s*,\s*)?(\w+)\s*\)\s*$", re.S)


# --- dashboard model -----------------------------------------------------------------------------

def flatten_panels(dashboard):
    """Rows and panels in layout order, with the panels of collapsed rows after their row."""
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []) if p.get("type") == "row" else [])
    return out


def substitute(text, values):
    """Replaces $name, ${name}, ${name:fmt} and [[name]]; unknown names are left as they are."""
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, m.group(0))
    return _VAR.sub(repl, text)


def duration(seconds):
    """A Prometheus duration string for a whole number of seconds (at least 1s)."""
    return "%ds" % max(1, int(math.ceil(seconds)))


def parse_duration(text):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text)
    if not m:
        raise ValueError("not a duration: %r" % text)
    return float(m.group(1)) * {"ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def builtin_values(start, end, scrape_interval_s, step_s):
    """Grafana's built-in interval variables for a window, computed as Grafana does:
    $__interval is the step, $__rate_interval = max($__interval + scrape interval, 4 x scrape)."""
    rate = max(step_s + scrape_interval_s, 4 * scrape_interval_s)
    return {"__interval": duration(step_s), "__interval_ms": str(int(step_s * 1000)),
            "__rate_interval": duration(rate), "__range": duration(end - start),
            "__range_s": str(int(end - start))}


# --- Prometheus ----------------------------------------------------------------------------------

class PrometheusClient:
    def __init__(self, url):
        self.url = url.rstrip("/")

    def _get(self, path, params):
        url = self.url + path + "?" + urllib.parse.urlencode(params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=60) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError("%s: %s" % (params, json.loads(e.read() or b"{}").get("error", e))) from None
        if body.get("status") != "success":
            raise RuntimeError("%s: %s" % (params, body))
        return body["data"]

    def query(self, expr, at):
        return self._get("/api/v1/query", {"query": expr, "time": "%.3f" % at})

    def query_range(self, expr, start, end, step_s):
        return self._get("/api/v1/query_range", {"query": expr, "start": "%.3f" % start,
                                                  "end": "%.3f" % end, "step": "%.3f" % step_s})

    def label_values(self, selector, label, start, end):
        if selector:
            data = self._get("/api/v1/series", {"match[]": selector, "start": "%.3f" % start,
                                                "end": "%.3f" % end})
            return sorted({s[label] for s in data if label in s})
        return sorted(self._get("/api/v1/label/%s/values" % label, {"start": "%.3f" % start,
                                                                      "end": "%.3f" % end}))


def variable_values(dashboard, prom, overrides, start, end):
    """Values for the dashboard's template variables, resolved in order (later queries may use
    earlier variables)."""
    values = dict(overrides)
    for var in dashboard.get("templating", {}).get("list", []):
        name = var["name"]
        if name in values or var.get("type") != "query":
            continue
        q = var.get("query")
        q = q.get("query", "") if isinstance(q, dict) else (q or var.get("definition", ""))
        m = _LABEL_VALUES.match(substitute(q, values))
        if not m:
            raise ValueError("variable %s: only label_values(...) queries are supported" % name)
        found = prom.label_values(m.group(1), m.group(2), start, end)
        if var.get("multi") and var.get("includeAll"):
            values[name] = var.get("allValue") or "(" + "|".join(re.escape(v) for v in found) + ")"
        elif found:
            values[name] = found[0]
        else:
            values[name] = ""
    return values


def legend(fmt, labels):
    if not fmt or fmt == "__auto":
        inner = ", ".join('%s="%s"' % kv for kv in sorted(labels.items()) if kv[0] != "__name__")
        return labels.get("__name__", "") + ("{%s}" % inner if inner else "")
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt)


# --- drawing -------------------------------------------------------------------------------------

BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#705da0", "#37872d", "#fade2a", "#1f60c4", "#c4162a", "#fa6400", "#8f3bb8"]


def format_value(v, unit, decimals=None):
    if v is None or math.isnan(v):
        return "No data" if v is None else "NaN"
    if unit == "percentunit":
        return "%.*f%%" % (1 if decimals is None else decimals, 100 * v)
    if unit == "s":
        if abs(v) < 1:
            return "%.*f ms" % (1 if decimals is None else decimals, 1000 * v)
        return "%.*f s" % (2 if decimals is None else decimals, v)
    if unit == "bytes":
        for suffix, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
            if abs(v) >= scale:
                return "%.*f %s" % (1 if decimals is None else decimals, v / scale, suffix)
        return "%d B" % v
    suffix = " req/s" if unit == "reqps" else ""
    if decimals is not None:
        return "%.*f%s" % (decimals, v, suffix)
    if abs(v) >= 1e6:
        return "%.2fM%s" % (v / 1e6, suffix)
    if abs(v) >= 1e4:
        return "%.1fk%s" % (v / 1e3, suffix)
    return "%.3g%s" % (v, suffix)


def style_axes(ax):
    ax.set_facecolor(PANEL)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.tick_params(colors=TEXT, labelsize=7)
    ax.grid(color=GRID, linewidth=0.5)


def draw_timeseries(ax, panel, results, annotations, window, axes_height_in):
    import matplotlib.dates as mdates
    import matplotlib.ticker as mticker
    unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
    custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
    n = 0
    for target, data in results:
        for series in data.get("result", []):
            xs = [dt.datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
            ys = [float(v) for _, v in series["values"]]
            kw = {"color": PALETTE[n % len(PALETTE)], "linewidth": 1.2,
                  "label": legend(target.get("legendFormat"), series["metric"])}
            if custom.get("lineInterpolation") == "stepAfter" or custom.get("drawStyle") == "bars":
                kw["drawstyle"] = "steps-post"
            ax.plot(xs, ys, **kw)
            n += 1
    for t in annotations:
        ax.axvline(dt.datetime.fromtimestamp(t), color="#ff9830", linestyle="--", linewidth=0.8)
    ax.set_xlim(dt.datetime.fromtimestamp(window[0]), dt.datetime.fromtimestamp(window[1]))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))
    ax.xaxis.set_major_locator(mticker.MaxNLocator(5))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: format_value(v, unit)))
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    lo, hi = defaults.get("min"), defaults.get("max")
    if lo is not None or hi is not None:
        cur = ax.get_ylim()
        lo, hi = cur[0] if lo is None else lo, cur[1] if hi is None else hi
        # A little room so series lying on the min or max stay visible.
        ax.set_ylim(lo - 0.03 * (hi - lo), hi + 0.05 * (hi - lo))
    if n == 0:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
    elif n <= 12:
        ax.legend(fontsize=6, loc="upper left", ncol=3 if n > 4 else 1, frameon=False,
                  labelcolor=TEXT, bbox_to_anchor=(0, -0.3 / axes_height_in))
    return n


def instant_rows(panel, results):
    """[(name, labels, value)] from instant results, named by each target's legendFormat."""
    rows = []
    for target, data in results:
        result = data.get("result", [])
        if data.get("resultType") == "scalar":
            result = [{"metric": {}, "value": result}]
        for series in result:
            rows.append((legend(target.get("legendFormat"), series["metric"]), series["metric"],
                         float(series["value"][1])))
    return rows


def draw_instant(ax, panel, results):
    defaults = panel.get("fieldConfig", {}).get("defaults", {})
    unit, decimals = defaults.get("unit", "short"), defaults.get("decimals")
    rows = instant_rows(panel, results)
    ax.set_xticks([])
    ax.set_yticks([])
    if not rows:
        ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        return 0
    kind = panel["type"]
    if kind == "bargauge":
        rows.sort(key=lambda r: r[0])
        names = [r[0] for r in rows]
        vals = [0 if math.isnan(r[2]) else r[2] for r in rows]
        ax.barh(range(len(rows)), vals, color=[PALETTE[i % len(PALETTE)] for i in range(len(rows))])
        ax.set_yticks(range(len(rows)), names, fontsize=7, color=TEXT)
        ax.invert_yaxis()
        lo, hi = defaults.get("min", min(0, min(vals))), defaults.get("max", max(vals) * 1.25 or 1)
        ax.set_xlim(lo, hi)
        for i, r in enumerate(rows):
            ax.text(vals[i], i, " " + format_value(r[2], unit, decimals), va="center", fontsize=7,
                    color=TEXT)
    elif kind == "table":
        hidden = {"__name__", "job", "instance"}
        cols = sorted({k for _, labels, _ in rows for k in labels if k not in hidden})
        cells = [[labels.get(c, "") for c in cols] for _, labels, _ in rows]
        widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
        table = ax.table(cellText=cells, colLabels=cols, loc="upper center", cellLoc="left",
                         colWidths=[w / sum(widths) for w in widths])
        table.auto_set_font_size(False)
        table.set_fontsize(7)
        for cell in table.get_celld().values():
            cell.set_facecolor(PANEL)
            cell.set_edgecolor(GRID)
            cell.get_text().set_color(TEXT)
    else:  # stat
        mode = panel.get("options", {}).get("textMode", "value_and_name")
        n = len(rows)
        for i, (name, _, value) in enumerate(rows):
            cx = (i + 0.5) / n
            shown = format_value(value, unit, decimals)
            if mode == "name":
                ax.text(cx, 0.5, name, color=TEXT, ha="center", va="center", fontsize=10 if n < 4 else 7,
                        transform=ax.transAxes, wrap=True)
            elif mode == "value":
                ax.text(cx, 0.5, shown, color="#73bf69", ha="center", va="center", fontsize=18,
                        transform=ax.transAxes)
            else:
                ax.text(cx, 0.68, name, color=TEXT, ha="center", va="center", fontsize=7,
                        transform=ax.transAxes)
                ax.text(cx, 0.35, shown, color="#73bf69", ha="center", va="center",
                        fontsize=14 if n < 4 else 10, transform=ax.transAxes)
    return len(rows)


def render(dashboard, prom, start, end, out_path, overrides=None, scrape_interval_s=15.0,
           width_in=18.0, log=sys.stderr):
    """Queries every panel over [start, end] and writes the PNG. Returns {panel title: number of
    series drawn}."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.patches  # noqa: F401 (used as matplotlib.patches)
    import matplotlib.pyplot as plt

    step = max(scrape_interval_s, (end - start) / 300.0)
    values = builtin_values(start, end, scrape_interval_s, step)
    values.update(variable_values(dashboard, prom, overrides or {}, start, end))
    panels = flatten_panels(dashboard)
    rows_total = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    # Grafana's grid: 24 columns; a row unit is 30 px plus an 8 px gap, a column ~75 px at 1800 px.
    unit_h, col_w, title_h = width_in * 38 / 1800, width_in / 24, 0.5
    fig_h = rows_total * unit_h + title_h
    fig = plt.figure(figsize=(width_in, fig_h), facecolor=BG)

    def box(left_in, top_in, w_in, h_in):  # inches from the top-left corner -> figure fractions
        return [left_in / width_in, 1 - (top_in + h_in) / fig_h, w_in / width_in, h_in / fig_h]

    var_text = "  ".join("%s=%s" % (k, v) for k, v in values.items() if not k.startswith("__"))
    fig.text(0.01, 1 - 0.25 / fig_h, "%s   (%s … %s, %s)" % (
        dashboard.get("title", ""), time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)),
        time.strftime("%H:%M:%S", time.localtime(end)), var_text),
        color=TEXT, fontsize=12, va="center")

    annotations = []
    for ann in dashboard.get("annotations", {}).get("list", []):
        if ann.get("expr") and ann.get("enable", True):
            data = prom.query_range(substitute(ann["expr"], values), start, end, step)
            for series in data.get("result", []):
                # Like Grafana, points at consecutive steps are one event: mark where each run starts.
                times = [float(t) for t, _ in series["values"]]
                annotations += [t for i, t in enumerate(times) if i == 0 or t - times[i - 1] > step * 1.5]

    drawn = {}
    for p in panels:
        g = p["gridPos"]
        left, top = g["x"] * col_w, title_h + g["y"] * unit_h
        w, h = g["w"] * col_w, g["h"] * unit_h
        if p["type"] == "row":
            fig.text((left + 0.05) / width_in, 1 - (top + unit_h / 2) / fig_h, p.get("title", ""),
                     color=TEXT, fontsize=11, fontweight="bold", va="center")
            continue
        fig.patches.append(matplotlib.patches.Rectangle(
            box(left + 0.04, top + 0.04, w - 0.08, h - 0.08)[:2], (w - 0.08) / width_in,
            (h - 0.08) / fig_h, transform=fig.transFigure, facecolor=PANEL, edgecolor=GRID,
            linewidth=0.5, zorder=-1))
        fig.text((left + 0.12) / width_in, 1 - (top + 0.2) / fig_h, p.get("title", ""), color=TEXT,
                 fontsize=9, va="center")
        # Inside the cell: the title on top; on time series, tick labels left and the legend below.
        is_ts = p["type"] == "timeseries"
        if is_ts:
            ax = fig.add_axes(box(left + 0.75, top + 0.4, w - 0.9, h - 0.4 - 1.0))
        elif p["type"] == "bargauge":
            ax = fig.add_axes(box(left + 1.7, top + 0.4, w - 1.9, h - 0.55))
        else:
            ax = fig.add_axes(box(left + 0.12, top + 0.4, w - 0.24, h - 0.52))
        style_axes(ax)
        if not is_ts:
            ax.grid(False)
        results = []
        for t in p.get("targets", []):
            if not t.get("expr") or t.get("hide"):
                continue
            expr = substitute(t["expr"], values)
            try:
                if is_ts:
                    results.append((t, prom.query_range(expr, start, end, step)))
                else:
                    results.append((t, prom.query(expr, end)))
            except RuntimeError as e:
                print("panel %r: %s" % (p.get("title"), e), file=log)
        drawn[p.get("title", "")] = (draw_timeseries(ax, p, results, annotations, (start, end), h - 1.4)
                                     if is_ts else draw_instant(ax, p, results))
    fig.savefig(out_path, dpi=100, facecolor=BG)
    plt.close(fig)
    return drawn


def parse_time(text):
    try:
        return float(text)
    except ValueError:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dashboard", help="Grafana dashboard JSON")
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL")
    ap.add_argument("--minutes", type=float, default=30, help="window ending now (default 30)")
    ap.add_argument("--start", help="window start (unix seconds or ISO 8601); overrides --minutes")
    ap.add_argument("--end", help="window end (unix seconds or ISO 8601; default now)")
    ap.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                    help="template variable value (repeatable), e.g. route=smollm2")
    ap.add_argument("--scrape-interval", default="15s",
                    help="the data source's scrape interval, for $__rate_interval (default 15s)")
    ap.add_argument("-o", "--output", required=True, help="PNG to write")
    args = ap.parse_args(argv)

    end = parse_time(args.end) if args.end else time.time()
    start = parse_time(args.start) if args.start else end - 60 * args.minutes
    if start >= end:
        ap.error("the window is empty: start >= end")
    overrides = dict(v.split("=", 1) for v in args.var)
    with open(args.dashboard) as f:
        dashboard = json.load(f)
    drawn = render(dashboard, PrometheusClient(args.prometheus), start, end, args.output, overrides,
                   parse_duration(args.scrape_interval))
    empty = [t for t, n in drawn.items() if n == 0]
    print("wrote %s: %d panels, %d without data%s" % (args.output, len(drawn), len(empty),
                                                        (": " + ", ".join(empty)) if empty else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
